"""GradInversion's ablation (Yin et al. 2021, Table 2) on CIFAR-10 (JPEG) and a trained ResNet-20.

The paper (ImageNet, ResNet-50, batch 8) reports PSNR 10.75 with the gradient
loss only, 12.06 with the fidelity priors (TV, L2, batch-norm statistics),
12.52 with group consistency towards the plain mean of the seeds, and 12.93
with registration. This script measures the same path on random CIFAR-10
(JPEG) test batches of distinct labels, on the ResNet-20 trained to 85 % test
accuracy that ships with tfleak (`tfleak.models.trained_victim`; `--victims=fresh`
adds a fresh one), with Inverting Gradients on the same batches:

- `gradient`: `GradInversion` with every prior weight 0: a_G times the
  gradient distance summed over layers as L2 norms (Adam, cosine decay,
  Langevin noise, the box, G seeds; the best seed by gradient distance);
- `fidelity`: + TV 1e-4, L2 1e-6, batch-norm statistics 0.1 (first layer x10),
  DeepInversion's norm forms ('tv_norms', 'l2_norms', 'bn');
- `group_mean`: + group consistency 0.01 (the norm `||x_g - E(x_G)||_2`)
  towards the plain mean of the seeds;
- `group_registered`: + registration by translation (`tfleak.GradInversion`);
- `inverting_gradients`: `tfleak.InvertingGradients` with the same iterations.

Every GradInversion row uses the same G seeds, iterations and consensus
schedule; their prior weights are variables of one compiled graph per
victim, so the rows share a trace. Labels are restored once per batch by
`--label_strategy` (the same for every row). The client's batch norm runs in
training mode (batch statistics); the batch-norm prior matches the victim's
moving statistics, which the server knows. Both the best seed and, for
GradInversion rows, the seeds' registered consensus are scored (PSNR after
Hungarian matching, `tfleak.metrics`). Each attack also records every term of
the paper's objective, weighted, at a uniform start and at its best seed's
reconstruction, and at the true batch: its value and its pull on the pixels
(the norm of its gradient), which says how much a part could act and where
it pulls.

    python benchmarks/gradinversion_ablation.py --batches=3 --iterations=2000 --group_size=4 \
        --output=benchmarks/results/gradinversion_ablation.json

Each finished attack is written to the JSON at once (atomically); rerunning
the same command resumes after the last one, and a rerun with other settings
is refused. A PNG of the same name holds the bar chart; `_examples.png` a
batch of reconstructions.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import app, flags  # noqa: E402

ROWS = ("gradient", "fidelity", "group_mean", "group_registered", "inverting_gradients")
PUBLISHED = {"gradient": 10.75, "fidelity": 12.06, "group_mean": 12.52, "group_registered": 12.93}

FLAGS = flags.FLAGS
flags.DEFINE_integer("batches", 3, "Random test batches per victim.")
flags.DEFINE_integer("batch_size", 8, "Images per batch (distinct labels).")
flags.DEFINE_integer("iterations", 2000, "Optimiser iterations of every attack.")
flags.DEFINE_integer("group_size", 4, "Seeds G optimised together (the paper: 8).")
flags.DEFINE_list(
    "victims", ["trained"], "trained (the shipped ResNet-20 weights, 85 % test accuracy), fresh."
)
flags.DEFINE_list("rows", list(ROWS), "Rows of the ablation to run.")
flags.DEFINE_float("group_weight", 0.01, "Weight a_group of the group prior (paper: 0.01).")
flags.DEFINE_float("gradient_weight", 0.01, "Weight a_G of the gradient term (tfleak's choice).")
flags.DEFINE_string("label_strategy", "gradinversion", "Label restoration for every row.")
flags.DEFINE_integer("seed", 0, "Seed of the victims, the batches and the seeds' starts.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding cifar10/{train,test}.")
flags.DEFINE_bool(
    "summarize_only",
    False,
    "Write the summary and bar chart of the attacks already in --output and run none "
    "(for a run cut short; the examples figure needs a run).",
)
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
    if not FLAGS.gradient_weight > 0:
        raise app.UsageError(f"--gradient_weight must be > 0; got {FLAGS.gradient_weight}.")
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
            "batches", "batch_size", "iterations", "group_size", "label_strategy", "seed",
            "group_weight", "gradient_weight",
        )
    }  # fmt: skip


def _paper_weights(row: str) -> dict:
    """The paper's prior weights a_k of a GradInversion row."""
    from tfleak.attacks import GRADINVERSION_PRIORS

    weights = dict(GRADINVERSION_PRIORS, group=FLAGS.group_weight)
    if row == "gradient":
        return dict.fromkeys(weights, 0.0)
    if row == "fidelity":
        weights["group"] = 0.0
    return weights


def _attack(row: str):
    import tfleak

    common = dict(iterations=FLAGS.iterations, seed=FLAGS.seed, label_strategy="known")
    if row == "inverting_gradients":
        return tfleak.InvertingGradients(**common)
    return tfleak.GradInversion(
        starts=FLAGS.group_size,
        priors=_paper_weights(row),
        gradient_weight=FLAGS.gradient_weight,
        registration="none" if row == "group_mean" else "translation",
        **common,
    )


def _victim(kind: str):
    """`(victim, test accuracy or None)`: the shipped trained ResNet-20 or a fresh one."""
    import tfleak
    from tfleak.models import VICTIMS, WEIGHTS_DIR

    if kind == "fresh":
        return tfleak.as_victim(VICTIMS["resnet20"]((32, 32, 3), 10, seed=FLAGS.seed)), None
    record = json.loads((WEIGHTS_DIR / "resnet20_cifar10.json").read_text())
    return tfleak.models.trained_victim("resnet20", batch_norm="train"), record["test_accuracy"]


def _terms(victim, observed, labels, data, consensus=None) -> dict:
    """Every term of the paper's objective at `data`, weighted by a_G and a_k.

    Returns `{name: [value, pull]}` for the gradient term ('gradient', a_G D)
    and each prior at the paper's weight, where `pull` is the norm of the
    term's gradient with respect to the pixels of `data` `[batch, h, w, c]`;
    'group' is measured against `consensus` (omitted without one).
    """
    import numpy as np
    import tensorflow as tf

    from tfleak.attacks import GradientMatching
    from tfleak.attacks.inputs import batch_norm_targets
    from tfleak.attacks.settings import Objective

    weights = _paper_weights("group_registered")
    names = [n for n in weights if n != "group" or consensus is not None]
    settings = Objective("l2_norms", priors=dict.fromkeys(names, 1.0), bn_first_layer_scale=10.0)
    objective = GradientMatching(victim, "l2_norms", settings.priors, 10.0)
    x = tf.Variable(np.asarray(data, np.float32)[None])
    probabilities = tf.constant(victim.labels_to_probabilities(labels))[None]
    extra = {}
    if consensus is not None:
        extra = dict(
            consensus=tf.constant(consensus, tf.float32), consensus_weight=tf.constant(1.0)
        )
    with tf.GradientTape(persistent=True) as tape:
        _, distance, values = objective(
            x, probabilities, observed, batch_norm_targets(settings, victim, None), **extra
        )
        values = dict(values, gradient=distance)
    scales = dict(weights, gradient=FLAGS.gradient_weight)
    return {
        name: [
            scales[name] * float(value[0]),
            scales[name] * float(tf.norm(tape.gradient(value, x))),
        ]
        for name, value in values.items()
    }


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
            for when in ("terms_at_start", "terms_at_truth", "terms_at_end"):
                names = sorted({n for a in done for n in a.get(when, {})})
                summary[when] = {
                    n: np.mean([a[when][n] for a in done if n in a.get(when, {})], axis=0).tolist()
                    for n in names
                }
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
    for kind in [] if FLAGS.summarize_only else FLAGS.victims:
        victims[kind] = _victim(kind)
        print(f"{kind} ResNet-20: test accuracy {victims[kind][1]}", flush=True)
    # Batch by batch, every victim each time: a run cut short still has them all.
    for b, indices in enumerate([] if FLAGS.summarize_only else batches):
        images, labels, _ = load_examples("cifar10", indices, "test", FLAGS.data_dir)
        for kind in FLAGS.victims:
            victim, accuracy = victims[kind]
            observed = victim.gradient(images, victim.labels_to_probabilities(labels))
            restored = np.asarray(
                LABEL_STRATEGIES[FLAGS.label_strategy](victim, observed, len(labels))
            )
            uniform = np.random.default_rng(FLAGS.seed + b).uniform(size=images.shape)
            start_terms = _terms(victim, observed, restored, uniform)
            truth_terms = _terms(victim, observed, labels, images)
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
                    "terms_at_start": start_terms,
                    "terms_at_truth": truth_terms,
                    "terms_at_end": _terms(
                        victim, observed, restored, result.reconstruction, result.consensus
                    ),
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
