"""tfleak against breaching 0.1.2, cell by cell: same weights, images, threat model and budget.

Each cell attacks the same function on both sides: a tfleak Keras victim and
breaching's own model of that architecture with the Keras weights copied in
(`torch_inversion.copy_weights`; the two models' logits are checked to agree on
every batch before anything runs). Both sides compute the client's update of
the same CIFAR-10 (JPEG) test images and labels, then attack it with the same
iteration budget. The cells (issue 17):

- `resnet20_fresh_eval`, `resnet20_fresh_train`: a fresh ResNet-20, one image,
  the client's batch norm in eval or training mode; IG against breaching's
  `invertinggradients`, labels known;
- `resnet20_trained_train`: the same on the shipped 85 % ResNet-20, training mode;
- `resnet20_fresh_b4_restored`: a batch of 4, labels restored by each tool's own
  method (tfleak 'counts', breaching's default 'bias-corrected');
- `resnet20_fresh_b4_fedavg`: a batch of 4 shared as breaching's `local_updates`
  user does (4 SGD steps of one image each at learning rate 1e-3, the weight
  difference), labels known, and tfleak's `FedAvg(4, 1e-3, 1)`;
- `convnet_fresh_train`: a fresh ConvNet, one image, training mode;
- `lenet_dlg`: DLG's LeNet, one image, labels optimised: tfleak's `DLG` against
  breaching's `deepleakage`;
- `resnet20_trained_b8_gradinversion`: a batch of 8 on the shipped ResNet-20,
  training mode, labels restored by each (GradInversion's rule; breaching's
  'yin'): tfleak's `GradInversion` against breaching's `seethroughgradients`.

IG is Inverting Gradients (cosine distance, TV 0.2, signed Adam at 0.1 with
step decay, box; one trial). Each side keeps its own units and defaults, as a
user of either would run it: breaching optimises normalised images (its
steps and TV act on `(x - mean) / std`), tfleak optimises [0, 1] pixels.
DLG's cell gives both sides the same cap on L-BFGS iterations: breaching
`--dlg_steps` steps of `torch.optim.LBFGS` (up to 20 iterations each, no
restarts) against tfleak's `DLG` with `20 * dlg_steps / 2` iterations a trial
and 1 restart (its default 3,000 a trial at 300 steps; with one evaluation an
iteration it needs about 1,500 to reach its tolerance). DLG's LeNet has no
normalisation layer, so breaching is given mean 0 and standard deviation 1
there and works in pixels too.

Per cell and side: PSNR and SSIM after matching (`tfleak.metrics.evaluate`,
[0, 1] image space), label accuracy (as multisets) and the seconds of the whole
attack call, tracing included, each as mean and standard deviation over
`--repeats` images or batches (batch r drawn with seed r). tfleak attacks one
victim per cell, as a user with several batches of one model would: the first
repeat run in a process traces the attack's step, later repeats reuse it. Both frameworks run
with `--threads` intra-op threads; torch's default threads slow down
twenty-fold beside another job on two cores, one thread far less. TensorFlow
keeps its default inter-op pool unless `--tf_inter_op_threads` is set (runs
before that flag used 1): on two cores it runs independent ops of the attack's
graph side by side, 28.7 against 38.8 ms a step on a batch of 4 (scratch
timing), where torch's eager autograd runs one op at a time whatever its
threads.

    python benchmarks/breaching_side_by_side.py --cells=all --repeats=3 \\
        --image_iterations=2000 --batch_iterations=1000 \\
        --output=benchmarks/results/breaching_side_by_side.json

Every finished side of every repeat is written to the JSON at once
(atomically); rerunning the same command resumes after it, and a rerun with
other budgets is refused. Needs the `bench` extra (`make install-bench`).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

# breaching first: its torchvision loads triton, whose C module crashes the
# process (segmentation fault) when it is loaded after TensorFlow.
import breaching  # noqa: E402, F401
import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import app, flags  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Cell:
    model: str
    weights: str  # 'fresh' or 'trained' (the shipped 85 % ResNet-20)
    batch_size: int
    batch_norm: str  # the client's: 'eval' or 'train'
    labels: str  # 'known', 'restored' (each tool its own way) or 'optimized'
    attack: str  # breaching's attack configuration
    local_steps: int = 0  # > 0: breaching's local_updates user, one image a step


CELLS = {
    "resnet20_fresh_eval": Cell("resnet20", "fresh", 1, "eval", "known", "invertinggradients"),
    "resnet20_fresh_train": Cell("resnet20", "fresh", 1, "train", "known", "invertinggradients"),
    "resnet20_trained_train": Cell(
        "resnet20", "trained", 1, "train", "known", "invertinggradients"
    ),
    "resnet20_fresh_b4_restored": Cell(
        "resnet20", "fresh", 4, "train", "restored", "invertinggradients"
    ),
    "resnet20_fresh_b4_fedavg": Cell(
        "resnet20", "fresh", 4, "train", "known", "invertinggradients", local_steps=4
    ),
    "convnet_fresh_train": Cell("convnet", "fresh", 1, "train", "known", "invertinggradients"),
    "lenet_dlg": Cell("lenet", "fresh", 1, "train", "optimized", "deepleakage"),
    "resnet20_trained_b8_gradinversion": Cell(
        "resnet20", "trained", 8, "train", "restored", "seethroughgradients"
    ),
}
LOCAL_LEARNING_RATE = 1e-3  # breaching's local_updates user

FLAGS = flags.FLAGS
flags.DEFINE_list("cells", ["all"], f"Cells to run: all or some of {', '.join(CELLS)}.")
flags.DEFINE_integer("repeats", 3, "Images or batches per cell (batch r drawn with seed r).")
flags.DEFINE_integer("image_iterations", 4800, "Iterations of the one-image IG cells.")
flags.DEFINE_integer("batch_iterations", 2000, "Iterations of the batch cells.")
flags.DEFINE_integer("dlg_steps", 300, "breaching's L-BFGS steps in the DLG cell (see above).")
flags.DEFINE_integer(
    "gradinversion_starts",
    1,
    "tfleak GradInversion's seeds G in its cell; 1 runs it without the group term, as "
    "breaching's seethroughgradients (one trial, no group term).",
)
flags.DEFINE_integer("threads", 1, "Intra-op threads of both frameworks.")
flags.DEFINE_integer(
    "tf_inter_op_threads",
    0,
    "TensorFlow's inter-op threads: 0 = its default (independent ops of the graph run side "
    "by side, which torch's eager autograd does not do), 1 = one op at a time (the runs "
    "before this flag).",
)
flags.DEFINE_enum(
    "units",
    "stated",
    ["stated", "breaching"],
    "tfleak's Inverting Gradients step size and TV weight: its own (0.1 and 0.2 in [0, 1] "
    "pixel units) or breaching's normalised-space values converted to pixel units (0.1 x the "
    "mean CIFAR-10 std and 0.2 / that std), so both take the same steps; for GradInversion, "
    "breaching's step so converted and its Langevin noise 0.01 (the paper's is 0.2).",
)
flags.DEFINE_list("sides", list(("tfleak", "breaching")), "Sides to run: tfleak, breaching.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding cifar10/test/<class>/*.jpg.")
flags.DEFINE_string(
    "output", "benchmarks/results/breaching_side_by_side.json", "JSON path; a PNG goes beside it."
)
flags.DEFINE_string(
    "arrays_dir", "results/breaching_side_by_side", "Folder for each side's reconstructions (.npy)."
)

SIDES = ("tfleak", "breaching")


def _settings() -> tuple:
    counts = ("repeats", "image_iterations", "batch_iterations", "dlg_steps", "threads")
    for name in (*counts, "gradinversion_starts"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be at least 1; got {getattr(FLAGS, name)}.")
    if FLAGS.tf_inter_op_threads < 0:
        raise app.UsageError(
            f"--tf_inter_op_threads must be >= 0 (0 = TensorFlow's default); "
            f"got {FLAGS.tf_inter_op_threads}."
        )
    cells = list(CELLS) if FLAGS.cells == ["all"] else FLAGS.cells
    unknown = sorted(set(cells) - set(CELLS))
    if unknown:
        raise app.UsageError(f"unknown --cells {unknown}; choose from all, {', '.join(CELLS)}.")
    units = {} if FLAGS.units == "stated" else {"units": FLAGS.units}
    return {
        **units,
        "image_iterations": FLAGS.image_iterations,
        "batch_iterations": FLAGS.batch_iterations,
        "dlg_steps": FLAGS.dlg_steps,
        "gradinversion_starts": FLAGS.gradinversion_starts,
        "threads": FLAGS.threads,
        "tf_inter_op_threads": FLAGS.tf_inter_op_threads,
    }, cells


def _iterations(cell: Cell) -> int:
    if cell.attack == "deepleakage":
        return FLAGS.dlg_steps
    return FLAGS.image_iterations if cell.batch_size == 1 else FLAGS.batch_iterations


def _batch(batch_size: int, repeat: int):
    from tfleak.data import load_dataset

    rng = np.random.default_rng(repeat)
    indices = sorted(int(i) for i in rng.choice(10_000, batch_size, replace=False))
    data = load_dataset("cifar10", "test", data_dir=FLAGS.data_dir, indices=indices)
    return data.images.astype(np.float32), data.labels.astype(np.int64), indices


def _keras_model(cell: Cell):
    import tfleak
    from tfleak.models.classic import lenet
    from tfleak.models.convnet import convnet
    from tfleak.models.resnet import resnet

    if cell.weights == "trained":  # the plain Keras model, so both batch-norm modes copy over
        model = tfleak.models.VICTIMS[cell.model]((32, 32, 3), 10)
        model.load_weights(str(tfleak.models.WEIGHTS_DIR / f"{cell.model}_cifar10.weights.h5"))
        return model
    if cell.model == "lenet":
        return lenet((32, 32, 3), 10, seed=0)
    return convnet(seed=0) if cell.model == "convnet" else resnet(20, seed=0)


def _tfleak_attack(cell: Cell, repeat: int):
    import tfleak

    iterations = _iterations(cell)
    update = None
    if cell.local_steps:
        update = tfleak.FedAvg(
            local_steps=cell.local_steps,
            local_learning_rate=LOCAL_LEARNING_RATE,
            local_batch_size=1,
        )
    if cell.attack == "deepleakage":
        return tfleak.DLG(iterations=20 * iterations // 2, restarts=1, seed=repeat), update
    from tfleak.models.resnet import CIFAR10_STD

    std = float(np.mean(CIFAR10_STD))  # breaching's normalised units -> pixels
    if cell.attack == "seethroughgradients":
        priors = None
        if FLAGS.gradinversion_starts == 1:
            # One seed has no group: the paper's other weights, as breaching's
            # `seethroughgradients`, which has no group term.
            from tfleak.attacks import GRADINVERSION_PRIORS

            priors = dict(GRADINVERSION_PRIORS, group=0.0)
        units = {}
        if FLAGS.units == "breaching":
            # breaching's step in pixel units, and its Langevin noise (0.01, not the paper's 0.2)
            units = {"learning_rate": 0.1 * std, "langevin": 0.01}
        return tfleak.GradInversion(
            iterations=iterations, starts=FLAGS.gradinversion_starts, priors=priors, seed=repeat,
            **units,
        ), update  # fmt: skip
    strategy = "counts" if cell.labels == "restored" else "known"
    units = {}
    if FLAGS.units == "breaching":
        units = {"learning_rate": 0.1 * std, "tv": 0.2 / std}
    attack = tfleak.InvertingGradients(
        iterations=iterations, label_strategy=strategy, update=update, seed=repeat, **units
    )
    return attack, update


def _run_tfleak(cell: Cell, victim, images, labels, repeat: int, first: bool) -> dict:
    import tfleak

    attack, update = _tfleak_attack(cell, repeat)
    observed = (update or tfleak.FedSGD()).share(victim, images, labels)
    start = time.perf_counter()
    result = attack(
        victim,
        observed,
        labels=labels if cell.labels == "known" else None,
        batch_size=len(labels),
        ground_truth=(images, labels),
    )
    seconds = time.perf_counter() - start
    return {
        "reconstruction": np.asarray(result.reconstruction, np.float32),
        "labels": None if result.labels is None else np.asarray(result.labels, np.int64),
        "seconds": seconds,
        "attack": repr(attack),
        "first_call_of_victim": first,
    }


def _run_breaching(cell: Cell, keras_model, images, labels, repeat: int, checks: dict) -> dict:
    import torch_inversion

    iterations = _iterations(cell)
    cfg = torch_inversion.breaching_config(
        iterations, callback=max(iterations // 10, 1), attack=cell.attack
    )
    if cell.model == "lenet":  # no normalisation layer in DLG's LeNet: pixels on both sides
        cfg.case.data.mean, cfg.case.data.std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    model, loss = torch_inversion.breaching_model(cell.model, cfg)
    torch_inversion.copy_weights(keras_model, model)
    difference = torch_inversion.logit_difference(keras_model, model, images, cfg)
    checks["max_abs_logit_difference"] = max(difference.values())
    if checks["max_abs_logit_difference"] >= 1e-4:
        raise RuntimeError(f"the torch copy disagrees with the Keras victim: {difference}")
    local = None
    if cell.local_steps:
        local = dict(steps=cell.local_steps, lr=LOCAL_LEARNING_RATE, data_per_step=1)
    out = torch_inversion.reconstruct(
        model,
        loss,
        cfg,
        images,
        labels,
        batch_norm="train" if cell.model == "lenet" else cell.batch_norm,
        seed=repeat,
        labels_known=cell.labels == "known",
        local_updates=local,
    )
    return {
        "reconstruction": out["reconstruction"],
        "labels": out["labels"],
        "seconds": out["seconds"],
        "attack": out["attacker"],
    }


def _score(images, labels, out: dict) -> dict:
    from tfleak import metrics

    found = out["labels"]
    if found is not None and len(np.asarray(found).reshape(-1)) != len(labels):
        found = None
    found = None if found is None else np.asarray(found).reshape(-1)
    scores = metrics.evaluate(images, out["reconstruction"], labels, found)
    accuracy = scores.get("label_accuracy") if found is not None else None
    return {
        "psnr": scores["psnr"],
        "ssim": scores["ssim"],
        "psnr_per_image": scores["psnr_per_image"],
        "order": [int(i) for i in scores["order"]],
        "label_accuracy": accuracy,
        "seconds": out["seconds"],
        "attack": out["attack"],
        "first_call_of_victim": out.get("first_call_of_victim"),
    }


def _load(output: Path, settings: dict) -> dict:
    if not output.is_file():
        return {"settings": settings, "records": {}}
    report = json.loads(output.read_text())
    if report.get("settings") != settings:
        raise app.UsageError(
            f"{output} was written with other settings ({report.get('settings')}); "
            "pass another --output or the same flags."
        )
    return report


def _summary(report: dict) -> list:
    rows = []
    for name in [name for name in CELLS if name in report["records"]]:
        records = report["records"][name]
        row = {"cell": name}
        for side in SIDES:
            done = [r[side] for r in records.values() if side in r]
            if not done:
                continue
            for key in ("psnr", "ssim", "seconds"):
                values = np.array([d[key] for d in done], np.float64)
                row[f"{side}_{key}"] = (float(values.mean()), float(values.std()), len(values))
            accuracies = [d["label_accuracy"] for d in done if d["label_accuracy"] is not None]
            row[f"{side}_labels"] = float(np.mean(accuracies)) if accuracies else None
        rows.append(row)
    return rows


def _print_table(rows: list) -> None:
    print(
        "\n| cell | n | tfleak PSNR | breaching PSNR | tfleak SSIM | breaching SSIM "
        "| tfleak s | breaching s | time ratio | labels (tfleak / breaching) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "tfleak_psnr" not in row or "breaching_psnr" not in row:
            continue

        def ms(key, fmt="{:.2f}", row=row):
            mean, std, _ = row[key]
            return f"{fmt.format(mean)} ± {fmt.format(std)}"

        ratio = row["tfleak_seconds"][0] / row["breaching_seconds"][0]
        labels = " / ".join(
            "-" if row[f"{s}_labels"] is None else f"{row[f'{s}_labels']:.2f}" for s in SIDES
        )
        n = min(row["tfleak_psnr"][2], row["breaching_psnr"][2])
        print(
            f"| {row['cell']} | {n} | {ms('tfleak_psnr')} | {ms('breaching_psnr')} "
            f"| {ms('tfleak_ssim', '{:.3f}')} | {ms('breaching_ssim', '{:.3f}')} "
            f"| {ms('tfleak_seconds', '{:.0f}')} | {ms('breaching_seconds', '{:.0f}')} "
            f"| {ratio:.2f} | {labels} |"
        )


def _cell_by_cell(cells: list) -> None:
    """Runs each cell in its own process, one after another, into the same --output.

    In one process, tfleak's batch-1 step ran at about 17 ms after a batch-4
    cell against 8.5 ms in a fresh process (TensorFlow's and oneDNN's state
    carried over; a larger oneDNN primitive cache recovered part of it), so
    every cell is timed from a fresh process, as a user attacking one model
    would run it.
    """
    import subprocess

    arguments, given = [], iter(sys.argv[1:])
    for argument in given:
        if argument == "--cells":
            next(given, None)  # its value
        elif not argument.startswith("--cells="):
            arguments.append(argument)
    for name in cells:
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *arguments, f"--cells={name}"],
            check=True,
        )


def main(argv):
    del argv
    settings, cells = _settings()
    if not FLAGS.sides or not set(FLAGS.sides) <= set(SIDES):
        raise app.UsageError(f"--sides must be some of {', '.join(SIDES)}; got {FLAGS.sides}.")
    output = Path(FLAGS.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report = _load(output, settings)
    if len(cells) > 1:
        _cell_by_cell(cells)
        report = _load(output, settings)
        report["summary"] = _summary(report)
        from tfleak.io import atomic_write_json

        atomic_write_json(output, report)
        _print_table(report["summary"])
        print(f"Wrote {output}.")
        return
    arrays = Path(FLAGS.arrays_dir)
    arrays.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    if FLAGS.tf_inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.tf_inter_op_threads)
    torch.set_num_threads(FLAGS.threads)
    import tfleak
    from tfleak.io import atomic_write_json

    report.setdefault("versions", {})
    report["versions"].update(
        tensorflow=tf.__version__, torch=torch.__version__, python=sys.version.split()[0]
    )
    for name in cells:
        cell = CELLS[name]
        keras_model = _keras_model(cell)
        # One tfleak victim per cell, as a user attacking several batches of
        # one model has: the first repeat this process runs pays the tracing,
        # later ones reuse the traced step (`first_call_of_victim`).
        victim = None
        records = report["records"].setdefault(name, {})
        for repeat in range(FLAGS.repeats):
            record = records.setdefault(str(repeat), {})
            if all(side in record for side in FLAGS.sides):
                continue
            images, labels, indices = _batch(cell.batch_size, repeat)
            record["indices"], record["labels"] = indices, labels.tolist()
            checks = record.setdefault("checks", {})
            for side in FLAGS.sides:
                if side in record:
                    continue
                print(f"{name} #{repeat} ({side}): images {indices}, labels {labels.tolist()}")
                if side == "tfleak":
                    first = victim is None
                    if first:
                        victim = tfleak.as_victim(keras_model, batch_norm=cell.batch_norm)
                    out = _run_tfleak(cell, victim, images, labels, repeat, first)
                else:
                    out = _run_breaching(cell, keras_model, images, labels, repeat, checks)
                record[side] = _score(images, labels, out)
                record["load_average"] = list(os.getloadavg())
                np.save(arrays / f"{name}_{repeat}_{side}.npy", out["reconstruction"])
                print(
                    f"  PSNR {record[side]['psnr']:.2f} dB, SSIM {record[side]['ssim']:.3f}, "
                    f"{out['seconds']:.1f} s"
                )
                atomic_write_json(output, report)
    report["summary"] = _summary(report)
    atomic_write_json(output, report)
    _print_table(report["summary"])
    print(f"Wrote {output}.")


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
