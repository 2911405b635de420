"""GradInversion's ablation (Yin et al. 2021, Table 2) on CIFAR-10 (JPEG) and ResNet-20.

The paper (ImageNet, ResNet-50, batch 8) reports PSNR 10.75 with the gradient
loss only, 12.06 with the fidelity priors (TV, L2, batch-norm statistics),
12.52 with group consistency towards the plain mean of the seeds, and 12.93
with registration. This script measures the same path on random CIFAR-10
(JPEG) test batches of distinct labels, on a fresh ResNet-20 and one trained
for a few epochs, with Inverting Gradients on the same batches:

- `gradient`: `GradInversion` with every prior weight 0 (Adam, cosine decay,
  Langevin noise, the box, G seeds; the best seed by gradient distance);
- `fidelity`: + TV 1e-4, L2 1e-6, batch-norm statistics 0.1 (first layer x10);
- `group_mean`: + group consistency 0.01 towards the plain mean of the seeds;
- `group_registered`: + registration by translation (`tfleak.GradInversion`);
- `inverting_gradients`: `tfleak.InvertingGradients` with the same iterations.

Every GradInversion row uses the same G seeds and iterations; their prior
weights are variables of one compiled graph per victim, so the rows share a
trace. Labels are restored once per batch by `--label_strategy` (the same for
every row). The client's batch norm runs in training mode (batch statistics);
the batch-norm prior matches the victim's moving statistics, which the server
knows. Both the best seed and, for GradInversion rows, the seeds' registered
consensus are scored (PSNR after Hungarian matching, `tfleak.metrics`).

    python benchmarks/gradinversion_ablation.py --batches=3 --iterations=150 --group_size=4 \
        --output=benchmarks/results/gradinversion_ablation.json

Each finished attack is written to the JSON at once (atomically); rerunning
the same command resumes after the last one, and a rerun with other settings
is refused. A PNG of the same name holds the bar chart; `_examples.png` a
batch of reconstructions.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import functools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import app, flags  # noqa: E402

ROWS = ("gradient", "fidelity", "group_mean", "group_registered", "inverting_gradients")
PUBLISHED = {"gradient": 10.75, "fidelity": 12.06, "group_mean": 12.52, "group_registered": 12.93}

FLAGS = flags.FLAGS
flags.DEFINE_integer("batches", 3, "Random test batches per victim.")
flags.DEFINE_integer("batch_size", 8, "Images per batch (distinct labels).")
flags.DEFINE_integer("iterations", 150, "Optimiser iterations of every attack.")
flags.DEFINE_integer("group_size", 4, "Seeds G optimised together (the paper: 8).")
flags.DEFINE_list("victims", ["fresh", "trained"], "fresh, trained (ResNet-20).")
flags.DEFINE_integer("trained_epochs", 2, "Epochs of CIFAR-10 training of the trained victim.")
flags.DEFINE_integer("train_limit", 5000, "Training images of the trained victim.")
flags.DEFINE_list("rows", list(ROWS), "Rows of the ablation to run.")
flags.DEFINE_float("group_weight", 0.01, "Weight of the group-consistency prior (paper: 0.01).")
flags.DEFINE_string("label_strategy", "counts", "Label restoration for every row.")
flags.DEFINE_integer("seed", 0, "Seed of the victims, the batches and the seeds' starts.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding cifar10/{train,test}.")
flags.DEFINE_string(
    "output", "benchmarks/results/gradinversion_ablation.json", "JSON path; PNGs go beside it."
)


def _settings() -> dict:
    """The settings a result file was written under, checked before any work."""
    from tfleak.attacks.labels import LABEL_STRATEGIES

    for name in ("batches", "batch_size", "iterations", "group_size"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be at least 1; got {getattr(FLAGS, name)}.")
    if not FLAGS.group_weight >= 0:
        raise app.UsageError(f"--group_weight must be >= 0; got {FLAGS.group_weight}.")
    if FLAGS.group_size < 2 and {"group_mean", "group_registered"} & set(FLAGS.rows):
        raise app.UsageError("group consistency needs --group_size of 2 or more.")
    if not set(FLAGS.victims) <= {"fresh", "trained"} or not FLAGS.victims:
        raise app.UsageError(f"--victims must be fresh and/or trained; got {FLAGS.victims}.")
    if not set(FLAGS.rows) <= set(ROWS) or not FLAGS.rows:
        raise app.UsageError(f"--rows must be among {', '.join(ROWS)}; got {FLAGS.rows}.")
    if FLAGS.label_strategy not in LABEL_STRATEGIES:
        raise app.UsageError(f"--label_strategy must be one of {', '.join(LABEL_STRATEGIES)}.")
    if not FLAGS.output.endswith(".json"):
        raise app.UsageError(f"--output must end in .json; got {FLAGS.output}.")
    if not (Path(FLAGS.data_dir) / "cifar10" / "test").is_dir():
        raise app.UsageError(f"no cifar10/test under --data_dir={FLAGS.data_dir}.")
    return {
        name: getattr(FLAGS, name)
        for name in (
            "batches", "batch_size", "iterations", "group_size", "trained_epochs",
            "train_limit", "label_strategy", "seed", "group_weight",
        )
    }  # fmt: skip


def _attack(row: str):
    import tfleak
    from tfleak.attacks import GRADINVERSION_PRIORS

    common = dict(iterations=FLAGS.iterations, seed=FLAGS.seed, label_strategy="known")
    if row == "inverting_gradients":
        return tfleak.InvertingGradients(**common)
    weights = dict(GRADINVERSION_PRIORS, group=FLAGS.group_weight)
    if row == "gradient":
        weights = dict.fromkeys(weights, 0.0)
    elif row == "fidelity":
        weights["group"] = 0.0
    return tfleak.GradInversion(
        starts=FLAGS.group_size,
        priors=weights,
        registration="none" if row == "group_mean" else "translation",
        **common,
    )


def _victim(kind: str):
    import tfleak
    from tfleak.models import VICTIMS
    from tfleak.training.victims import train_victim

    builder = functools.partial(VICTIMS["resnet20"], (32, 32, 3), 10)
    if kind == "fresh":
        return tfleak.as_victim(builder(seed=FLAGS.seed)), None
    model, accuracy = train_victim(
        builder,
        f"resnet20-n{FLAGS.train_limit}",
        epochs=FLAGS.trained_epochs,
        data_dir=FLAGS.data_dir,
        seed=FLAGS.seed,
        limit=FLAGS.train_limit,
        verbose=2,
    )
    return tfleak.as_victim(model), accuracy


def _load(path: Path, settings: dict) -> list:
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    if saved.get("settings") != settings:
        raise app.UsageError(
            f"{path} was written with other settings ({saved.get('settings')}); pass another "
            "--output or delete it."
        )
    return saved["attacks"]


def _summary(attacks: list) -> list:
    import numpy as np

    rows = []
    for victim in FLAGS.victims:
        for row in FLAGS.rows:
            done = [a for a in attacks if a["victim"] == victim and a["row"] == row]
            if not done:
                continue
            summary = {"victim": victim, "row": row, "batches": len(done)}
            for key in ("psnr", "consensus_psnr", "ssim", "label_accuracy", "seconds"):
                values = [a[key] for a in done if a.get(key) is not None]
                if values:
                    summary[f"{key}_mean"] = float(np.mean(values))
                    summary[f"{key}_std"] = float(np.std(values))
            summary["published_psnr"] = PUBLISHED.get(row)
            rows.append(summary)
    return rows


def _plot(summary: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / max(len(FLAGS.victims), 1)
    for k, victim in enumerate(FLAGS.victims):
        rows = [s for s in summary if s["victim"] == victim]
        x = np.arange(len(rows)) + k * width
        axes.bar(
            x,
            [s["psnr_mean"] for s in rows],
            width,
            yerr=[s["psnr_std"] for s in rows],
            capsize=3,
            label=f"ResNet-20, {victim} (best seed)",
        )
        consensus = [s.get("consensus_psnr_mean", np.nan) for s in rows]
        axes.plot(x, consensus, "k_", markersize=14, label="consensus" if k == 0 else None)
        axes.set_xticks(np.arange(len(rows)) + width * (len(FLAGS.victims) - 1) / 2)
        axes.set_xticklabels([s["row"].replace("_", "\n") for s in rows])
    axes.set_ylabel("PSNR (dB, matched)")
    axes.set_title(
        f"GradInversion ablation: CIFAR-10, batch {FLAGS.batch_size}, G={FLAGS.group_size}, "
        f"{FLAGS.iterations} iterations"
    )
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv):
    del argv
    settings = _settings()

    import numpy as np

    from tfleak import metrics as metrics_lib
    from tfleak import plotting
    from tfleak.attacks.labels import LABEL_STRATEGIES
    from tfleak.data import index_image_folder, load_examples, sample_batch
    from tfleak.io import atomic_write_json

    output = Path(FLAGS.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    attacks = _load(output, settings)
    done = {(a["victim"], a["batch"], a["row"]) for a in attacks}
    all_labels = np.asarray(index_image_folder(Path(FLAGS.data_dir) / "cifar10" / "test").labels)
    batches = [
        sample_batch(all_labels, FLAGS.batch_size, "unique", seed=FLAGS.seed + b)
        for b in range(FLAGS.batches)
    ]
    examples = {}
    started = time.perf_counter()
    victims = {}
    for kind in FLAGS.victims:
        victims[kind] = _victim(kind)
        print(f"{kind} ResNet-20: test accuracy {victims[kind][1]}", flush=True)
    # Batch by batch, both victims each time: a run cut short still has both.
    for b, indices in enumerate(batches):
        images, labels, _ = load_examples("cifar10", indices, "test", FLAGS.data_dir)
        for kind in FLAGS.victims:
            victim, accuracy = victims[kind]
            observed = victim.gradient(images, victim.labels_to_probabilities(labels))
            restored = np.asarray(
                LABEL_STRATEGIES[FLAGS.label_strategy](victim, observed, len(labels))
            )
            for row in FLAGS.rows:
                if (kind, b, row) in done:
                    continue
                result = _attack(row)(
                    victim,
                    observed,
                    labels=restored,
                    ground_truth=(images, labels),
                    verbose=0,
                )
                entry = {
                    "victim": kind,
                    "victim_test_accuracy": accuracy,
                    "batch": b,
                    "indices": indices.tolist(),
                    "row": row,
                    "psnr": result.metrics["psnr"],
                    "ssim": result.metrics["ssim"],
                    "consensus_psnr": result.consensus_metrics.get("psnr"),
                    "consensus_ssim": result.consensus_metrics.get("ssim"),
                    "label_accuracy": metrics_lib.label_multiset_accuracy(labels, restored),
                    "relative_distance": result.relative_distance,
                    "seconds": result.seconds,
                }
                attacks.append(entry)
                print(
                    f"{kind} batch {b} {row:20s} PSNR {entry['psnr']:.2f} dB (consensus "
                    f"{entry['consensus_psnr'] or float('nan'):.2f}), labels "
                    f"{entry['label_accuracy']:.2f}, {entry['seconds']:.0f} s",
                    flush=True,
                )
                atomic_write_json(
                    output, {"settings": settings, "attacks": attacks, "summary": None}
                )
                if b == 0 and kind == FLAGS.victims[-1]:
                    order = result.metrics["order"]
                    examples[row] = result.reconstruction[order]
                    examples["truth"] = images
    summary = _summary(attacks)
    atomic_write_json(
        output,
        {
            "settings": settings,
            "attacks": attacks,
            "summary": summary,
            "seconds_this_run": time.perf_counter() - started,
        },
    )
    _plot(summary, output.with_suffix(".png"))
    if examples:
        names = ["truth"] + [r for r in FLAGS.rows if r in examples]
        plotting.plot_image_rows(
            [list(examples[n]) for n in names],
            output.with_name(output.stem + "_examples.png"),
            row_titles=names,
            title=f"{FLAGS.victims[-1]} ResNet-20, batch 0",
        )
    print("victim   row                  PSNR (best seed)   consensus   published")
    for s in summary:
        print(
            f"{s['victim']:8s} {s['row']:20s} {s['psnr_mean']:6.2f} +- {s['psnr_std']:.2f}"
            f"     {s.get('consensus_psnr_mean', float('nan')):6.2f}      "
            f"{s['published_psnr'] if s['published_psnr'] else '-'}"
        )
    print(f"Wrote {output} and its PNGs; {time.perf_counter() - started:.0f} s this run.")


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
