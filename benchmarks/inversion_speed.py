"""tfleak's Inverting Gradients against breaching's, side by side on one CIFAR-10 (JPEG) batch.

Both sides attack the same function: tfleak's Keras victim (`convnet` or a
CIFAR ResNet, fresh or trained by `train_victim`) and breaching's own model of
the same name with the Keras weights copied in (`torch_inversion.py`; the
logits of the two are checked to agree on the batch before anything runs).
Each side computes the client's gradient of the same images and labels, then
runs Inverting Gradients (cosine distance + total variation, signed Adam,
step size 0.1 decayed x0.1 at 3/8, 5/8, 7/8, box constraint, labels known,
one start) for the same number of iterations. Reported per side: seconds of
the whole attack call (tracing included), seconds per 1,000 iterations, and
the PSNR of the reconstruction after matching (`tfleak.metrics.evaluate`, in
[0, 1] image space); `ratio` is tfleak's seconds per 1,000 over breaching's.
`*_steady_seconds_per_1000` times iteration 100 to the end only (tfleak from
its snapshots, breaching from its log lines), leaving out tracing and warm-up.
Time it on an idle machine: with a neighbour on the two cores, torch's two
OpenMP threads slow down twenty-fold (measured on ResNet-20: 5 s for 100
iterations alone, 100 s beside another job); `--threads=1` is far less
sensitive (90 ms an iteration under load).

breaching works in normalised image space (its step size and TV act on
`(x - mean) / std`), tfleak in [0, 1]. `--units=stated` gives tfleak its own
defaults with the same numbers (lr 0.1, TV 0.2 in [0, 1] units);
`--units=breaching` converts breaching's into [0, 1] units (lr 0.1 x mean std
= 0.025, TV weight 0.2 / mean std = 0.80), so both take the same steps.

    python benchmarks/inversion_speed.py --model=resnet20 --iterations=1000
    python benchmarks/inversion_speed.py --model=convnet --batch_size=4 --index=0

Needs the `bench` extra (`make install-bench`). Time it on an otherwise idle
machine. Writes JSON to --output and a PNG (truth, tfleak, breaching rows)
beside it.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

# breaching first when installed: its torchvision loads triton, whose C module
# crashes the process (segmentation fault) when it is loaded after TensorFlow.
try:
    import breaching  # noqa: F401
    import torch  # noqa: F401
except ImportError:  # --sides=tfleak needs neither
    pass
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "model", "resnet20", ["convnet", "resnet20", "resnet32", "resnet18"], "Victim architecture."
)
flags.DEFINE_integer("batch_size", 1, "Images in the client's batch.")
flags.DEFINE_integer("iterations", 1000, "Signed-Adam iterations on both sides.")
flags.DEFINE_integer(
    "index", None, "First CIFAR-10 test image of the batch (consecutive indices); default: drawn."
)
flags.DEFINE_integer("seed", 0, "Seed of the drawn batch, the victim's weights and both attacks.")
flags.DEFINE_string(
    "data_dir", None, "Folder holding cifar10/test/<class>/*.jpg (default: ../shared/data)."
)
flags.DEFINE_enum(
    "batch_norm",
    "eval",
    ["eval", "train"],
    "Client's batch norm: 'eval' (moving statistics; breaching's honest-but-curious case, "
    "whose server sends public buffers) or 'train' (the batch's statistics).",
)
flags.DEFINE_integer("trained_epochs", 0, "Train the victim this many epochs first (cached).")
flags.DEFINE_enum(
    "units",
    "stated",
    ["stated", "breaching"],
    "tfleak's step size and TV weight: the same numbers in [0, 1] units ('stated'), or "
    "breaching's normalised-space values converted to [0, 1] units ('breaching').",
)
flags.DEFINE_enum("sides", "both", ["both", "tfleak", "torch"], "Which sides to run.")
flags.DEFINE_integer("threads", 0, "Intra-op threads for both frameworks (0 = their default).")
flags.DEFINE_string(
    "output", None, "JSON path (default benchmarks/results/inversion_speed_<model>.json)."
)

ROOT = Path(__file__).resolve().parents[1]


def _batch(data_dir: Path, batch_size: int, index, seed: int):
    from tfleak.data import load_dataset

    if index is not None:
        indices = list(range(index, index + batch_size))
    else:
        indices = sorted(np.random.default_rng(seed).choice(10_000, batch_size, replace=False))
    data = load_dataset(
        "cifar10", "test", data_dir=str(data_dir), indices=[int(i) for i in indices]
    )
    return data.images.astype(np.float32), data.labels.astype(np.int64), [int(i) for i in indices]


def _keras_victim(name: str, seed: int, trained_epochs: int, data_dir: Path):
    from tfleak.models.convnet import convnet
    from tfleak.models.resnet import resnet, resnet18
    from tfleak.training.victims import train_victim

    builders = {
        "convnet": convnet,
        "resnet20": lambda seed: resnet(20, seed=seed),
        "resnet32": lambda seed: resnet(32, seed=seed),
        "resnet18": resnet18,
    }
    return train_victim(
        builders[name],
        name,
        trained_epochs,
        data_dir,
        seed=seed,
        verbose=2 if trained_epochs else 0,
    )


def _tfleak_side(keras_model, images, labels, iterations, seed, batch_norm, overrides):
    import tfleak

    victim = tfleak.as_victim(keras_model, batch_norm=batch_norm)
    observed = victim.gradient(images, labels)
    attack = tfleak.InvertingGradients(iterations=iterations, seed=seed, **overrides)
    print(f"tfleak: {attack!r}")
    progress = []

    def on_snapshot(round_index, snapshot):
        progress.append((int(snapshot.iteration), time.perf_counter() - start))

    start = time.perf_counter()
    result = attack(
        victim,
        observed,
        labels=labels,
        ground_truth=(images, labels),
        verbose=1,
        on_snapshot=on_snapshot,
    )
    seconds = time.perf_counter() - start
    reconstruction = np.asarray(result.reconstruction, np.float32)
    norm = float(np.sqrt(sum(float(np.sum(np.square(g))) for g in observed)))
    return {
        "seconds": seconds,
        "attack_seconds": float(result.seconds),
        "iterations": int(result.iterations),
        "reported_psnr": float(result.metrics["psnr"]),
        "reconstruction": reconstruction,
        "gradient_norm": norm,
        "progress": progress,
        "attack": repr(attack),
    }


def _torch_side(keras_model, images, labels, iterations, seed, batch_norm, checks):
    import torch
    import torch_inversion

    cfg = torch_inversion.breaching_config(iterations, callback=max(iterations // 10, 1))
    model, loss = torch_inversion.breaching_model(FLAGS.model, cfg)
    checks["torch_tensors_copied"] = torch_inversion.copy_weights(keras_model, model)
    checks["max_abs_logit_difference"] = torch_inversion.logit_difference(
        keras_model, model, images, cfg
    )
    worst = max(checks["max_abs_logit_difference"].values())
    print(f"Keras vs breaching logits on the batch: max |difference| {worst:.2e}")
    if worst >= 1e-4:
        raise RuntimeError(f"the torch copy disagrees with the Keras victim ({worst:.2e} >= 1e-4)")
    out = torch_inversion.reconstruct(
        model, loss, cfg, images, labels, batch_norm=batch_norm, seed=seed, verbose=True
    )
    out["gradient_norm"] = float(torch.sqrt(sum((g**2).sum() for g in out.pop("gradient"))))
    out["iterations"] = iterations
    return out


def _steady(progress, after: int = 100):
    """Seconds per 1,000 iterations from iteration `after` on (compilation and warm-up excluded)."""
    points = [(i, t) for i, t in progress if i >= after]
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return None
    (i0, t0), (i1, t1) = points[0], points[-1]
    return (t1 - t0) / (i1 - i0) * 1000


def _save_png(path: Path, rows) -> None:
    from PIL import Image

    rows = [np.concatenate(list(row), axis=1) for row in rows]
    grid = np.concatenate(rows, axis=0)
    image = Image.fromarray(np.uint8(np.clip(grid, 0, 1) * 255 + 0.5))
    image.resize((image.width * 4, image.height * 4), Image.NEAREST).save(path)


def _versions() -> dict:
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for package in ("tfleak", "tensorflow", "keras", "torch", "torchvision", "breaching"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _machine() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
    }


def main(argv):
    del argv
    if FLAGS.batch_size < 1 or FLAGS.iterations < 1:
        raise app.UsageError("--batch_size and --iterations must be at least 1.")
    if FLAGS.index is not None and not 0 <= FLAGS.index <= 10_000 - FLAGS.batch_size:
        raise app.UsageError(f"--index must be in [0, {10_000 - FLAGS.batch_size}].")
    if FLAGS.threads < 0:
        raise app.UsageError("--threads must be >= 0.")
    data_dir = Path(FLAGS.data_dir or ROOT.parent / "shared" / "data").expanduser()
    if not (data_dir / "cifar10" / "test").is_dir():
        raise app.UsageError(f"--data_dir {data_dir} holds no cifar10/test/<class>/*.jpg.")
    output = Path(
        FLAGS.output or ROOT / "benchmarks" / "results" / f"inversion_speed_{FLAGS.model}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        import torch

        torch.set_num_threads(FLAGS.threads)
    machine = _machine()
    images, labels, indices = _batch(data_dir, FLAGS.batch_size, FLAGS.index, FLAGS.seed)
    keras_model, accuracy = _keras_victim(FLAGS.model, FLAGS.seed, FLAGS.trained_epochs, data_dir)
    print(f"CIFAR-10 (JPEG) test images {indices}, labels {labels.tolist()}; victim {FLAGS.model}")

    from tfleak.models.resnet import CIFAR10_STD

    mean_std = float(np.mean(CIFAR10_STD))
    overrides = {}
    if FLAGS.units == "breaching":
        overrides = {"learning_rate": 0.1 * mean_std, "priors": {"tv": 0.2 / mean_std}}

    checks, sides = {}, {}
    if FLAGS.sides in ("both", "torch"):
        sides["torch"] = _torch_side(
            keras_model, images, labels, FLAGS.iterations, FLAGS.seed, FLAGS.batch_norm, checks
        )
    if FLAGS.sides in ("both", "tfleak"):
        sides["tfleak"] = _tfleak_side(
            keras_model,
            images,
            labels,
            FLAGS.iterations,
            FLAGS.seed,
            FLAGS.batch_norm,
            overrides,
        )

    from tfleak import metrics

    report = {
        "model": FLAGS.model,
        "data": "CIFAR-10 (JPEG) test",
        "indices": indices,
        "labels": labels.tolist(),
        "batch_size": FLAGS.batch_size,
        "iterations": FLAGS.iterations,
        "batch_norm": FLAGS.batch_norm,
        "units": FLAGS.units,
        "seed": FLAGS.seed,
        "trained_epochs": FLAGS.trained_epochs,
        "victim_test_accuracy": accuracy,
        "checks": checks,
        "versions": _versions(),
        "machine": machine,
        "threads": FLAGS.threads or None,
    }
    for side, out in sides.items():
        scores = metrics.evaluate(images, out["reconstruction"])
        out["psnr"], out["ssim"] = scores["psnr"], scores["ssim"]
        out["psnr_per_image"] = scores["psnr_per_image"]
        out["order"] = scores["order"]
        per_1000 = out["seconds"] / out["iterations"] * 1000
        report[f"{side}_seconds_per_1000"] = per_1000
        report[f"{side}_steady_seconds_per_1000"] = _steady(out["progress"])
        report[f"{side}_psnr"] = out["psnr"]
        report[side] = {k: v for k, v in out.items() if k != "reconstruction"}
    if len(sides) == 2:
        report["ratio"] = report["tfleak_seconds_per_1000"] / report["torch_seconds_per_1000"]
        norms = sides["tfleak"]["gradient_norm"], sides["torch"]["gradient_norm"]
        checks["shared_gradient_norm_relative_difference"] = abs(norms[0] - norms[1]) / norms[1]

    names = {"tfleak": "tfleak", "torch": "breaching"}
    print(f"\nInverting Gradients, {FLAGS.model}, batch {FLAGS.batch_size}, {FLAGS.iterations} it.")
    print(f"{'':28}" + "".join(f"{names[s]:>14}" for s in sides))
    for side, out in sides.items():
        out["steady"] = report[f"{side}_steady_seconds_per_1000"] or float("nan")
    for label, key, fmt in (
        ("seconds (whole attack)", "seconds", "{:14.1f}"),
        ("seconds per 1000 iterations", None, "{:14.1f}"),
        ("  from iteration 100 on", "steady", "{:14.1f}"),
        ("PSNR, matched (dB)", "psnr", "{:14.2f}"),
        ("SSIM, matched", "ssim", "{:14.3f}"),
    ):
        values = [
            (out["seconds"] / out["iterations"] * 1000) if key is None else out[key]
            for out in sides.values()
        ]
        print(f"{label:28}" + "".join(fmt.format(v) for v in values))
    if "ratio" in report:
        print(f"ratio tfleak / breaching seconds per 1000: {report['ratio']:.2f}")

    from tfleak.io import atomic_write_json

    atomic_write_json(output, report)
    rows = [images] + [sides[s]["reconstruction"][sides[s]["order"]] for s in sides]
    _save_png(output.with_suffix(".png"), rows)
    print(f"Wrote {output} and {output.with_suffix('.png')} (rows: truth, {', '.join(sides)}).")


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
