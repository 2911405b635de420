"""How well each label-restoration method reads a batch's labels off its gradient.

For every method of `tfleak.attacks.labels.LABEL_STRATEGIES` and every batch size, on
`--trials` random CIFAR-10 (JPEG) test batches (the same batches for every
method), the fraction of batches whose label multiset is restored exactly and
the per-label accuracy (`tfleak.metrics.label_multiset_accuracy`). A method
whose assumption fails on a batch raises `ValueError`; the row records that
(`refused_trials`, `refused`: the first message) and scores the batch as 0,
so a refusal costs what a wrong answer costs; `answered_label_accuracy` scores
the answered batches only. A setting no batch can be drawn for (unique labels
beyond the dataset's classes) records `skipped`.

Each batch size also records diagnostics that no method sees: the accuracy of
the count rule `n_c = B (p_bar_c - db_c)` given the batch's *true* mean
prediction `p_bar` (an oracle: every count method is exact with it, so the gap
to it is the error of estimating `p_bar` from the gradient), and how confident
the model is on the batch (`1 - p_y`, the share of each example's
cross-entropy gradient; an example with `1 - p_y ~ 0` adds almost nothing to
the shared gradient).

The victim is a fresh model (`--weights=fresh`, optionally trained first with
`--trained_epochs`), the weights shipped with tfleak (`--weights=trained`,
`tfleak.models.trained_victim`), or a weights file (`--weights_path`, e.g. a
training checkpoint).

    python benchmarks/label_restoration.py --model=resnet20 \
        --batch_sizes=1,2,4,8,16,32,64 --label_mode=unique --trials=20 \
        --trained_epochs=0 --seed=0 \
        --output=benchmarks/results/label_restoration_unique.json
    python benchmarks/label_restoration.py --model=resnet20 --weights=trained \
        --batch_sizes=1,2,4,8,16,32,64 --label_mode=random --trials=20 --seed=0 \
        --output=benchmarks/results/label_restoration_random_resnet20_cifar10.json

Writes the JSON `{"rows": [...], "settings": {...}}` and a PNG of the same
name beside it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import functools  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "resnet20", "Victim (a tfleak.models.VICTIMS name).")
flags.DEFINE_list("batch_sizes", ["1", "2", "4", "8", "16", "32", "64"], "Batch sizes.")
flags.DEFINE_string("label_mode", "unique", "'unique' (distinct labels) or 'random' (may repeat).")
flags.DEFINE_integer("trials", 20, "Random batches per batch size.")
flags.DEFINE_integer("trained_epochs", 0, "Epochs of CIFAR-10 training first (0: fresh model).")
flags.DEFINE_integer(
    "train_limit", None, "Train on this many CIFAR-10 images only (None: all 50,000)."
)
flags.DEFINE_enum(
    "weights",
    "fresh",
    ["fresh", "trained"],
    "'fresh': a new model (trained first if --trained_epochs > 0); 'trained': the CIFAR-10 "
    "weights shipped with tfleak (tfleak.models.trained_victim).",
)
flags.DEFINE_string(
    "weights_path",
    None,
    "A .weights.h5 file of --model on CIFAR-10 to load instead (e.g. a training checkpoint; "
    "optimizer state in it is skipped). Excludes --weights=trained and --trained_epochs.",
)
flags.DEFINE_integer("seed", 0, "Seed of the model and of the batches.")
flags.DEFINE_list("methods", [], "Methods to compare (default: every LABEL_STRATEGIES name).")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding cifar10/{train,test}.")
flags.DEFINE_string(
    "output", "benchmarks/results/label_restoration.json", "JSON path; the PNG goes beside it."
)


def _flags_checked():
    """Validated flags, or `app.UsageError`, before any work."""
    from tfleak.attacks.labels import LABEL_STRATEGIES
    from tfleak.data import LABEL_MODES
    from tfleak.models import VICTIMS, WEIGHTS_DIR

    if FLAGS.model not in VICTIMS:
        raise app.UsageError(f"--model must be one of {', '.join(sorted(VICTIMS))}.")
    if FLAGS.label_mode not in LABEL_MODES:
        raise app.UsageError(f"--label_mode must be one of {', '.join(LABEL_MODES)}.")
    try:
        batch_sizes = [int(text) for text in FLAGS.batch_sizes]
    except ValueError as error:
        raise app.UsageError(f"--batch_sizes must be integers; got {FLAGS.batch_sizes}.") from error
    if not batch_sizes or min(batch_sizes) < 1:
        raise app.UsageError(f"--batch_sizes must be integers >= 1; got {FLAGS.batch_sizes}.")
    if FLAGS.trials < 1:
        raise app.UsageError(f"--trials must be at least 1; got {FLAGS.trials}.")
    if FLAGS.trained_epochs < 0:
        raise app.UsageError(f"--trained_epochs must be >= 0; got {FLAGS.trained_epochs}.")
    if (FLAGS.weights == "trained" or FLAGS.weights_path) and FLAGS.trained_epochs:
        raise app.UsageError("--trained_epochs trains a fresh model; drop it with given weights.")
    if FLAGS.weights == "trained" and FLAGS.weights_path:
        raise app.UsageError("give --weights=trained or --weights_path, not both.")
    shipped = WEIGHTS_DIR / f"{FLAGS.model}_cifar10.weights.h5"
    if FLAGS.weights == "trained" and not shipped.is_file():
        raise app.UsageError(
            f"--weights=trained: no shipped weights at {shipped}; train them with "
            f"benchmarks/train_victim.py --model={FLAGS.model}, or give --weights_path."
        )
    if FLAGS.weights_path and not Path(FLAGS.weights_path).is_file():
        raise app.UsageError(f"--weights_path {FLAGS.weights_path} is not a file.")
    if FLAGS.train_limit is not None and FLAGS.train_limit < 1:
        raise app.UsageError(f"--train_limit must be at least 1; got {FLAGS.train_limit}.")
    methods = FLAGS.methods or list(LABEL_STRATEGIES)
    unknown = [name for name in methods if name not in LABEL_STRATEGIES]
    if unknown:
        raise app.UsageError(
            f"unknown --methods {', '.join(unknown)}; choose from {', '.join(LABEL_STRATEGIES)}."
        )
    test_dir = Path(FLAGS.data_dir) / "cifar10" / "test"
    if not test_dir.is_dir():
        raise app.UsageError(
            f"--data_dir {FLAGS.data_dir} holds no cifar10/test/<class>/*.jpg (CIFAR-10 JPEG)."
        )
    if not FLAGS.output.endswith(".json"):
        raise app.UsageError(f"--output must end in .json; got {FLAGS.output}.")
    return batch_sizes, methods, test_dir


def _victim(model_name: str):
    """`(victim, test accuracy or None, description of its weights)`."""
    import json

    import tfleak
    from tfleak.models import VICTIMS, WEIGHTS_DIR

    if FLAGS.weights == "trained":
        victim = tfleak.models.trained_victim(model_name)
        record = WEIGHTS_DIR / f"{model_name}_cifar10.json"
        accuracy = json.loads(record.read_text()).get("test_accuracy") if record.is_file() else None
        return victim, accuracy, f"shipped {model_name}_cifar10.weights.h5"
    if FLAGS.weights_path:
        model = VICTIMS[model_name]((32, 32, 3), 10)
        model.load_weights(FLAGS.weights_path)  # optimizer state, if any, is skipped
        return tfleak.as_victim(model), None, f"loaded from {FLAGS.weights_path}"
    victim, accuracy = _fresh_victim(model_name)
    described = "fresh" if FLAGS.trained_epochs == 0 else f"{FLAGS.trained_epochs} epochs"
    return victim, accuracy, described


def _fresh_victim(model_name: str):
    import tfleak
    from tfleak.models import VICTIMS
    from tfleak.training.victims import train_victim

    if FLAGS.trained_epochs == 0:
        return tfleak.models.get_victim(model_name, (32, 32, 3), 10, seed=FLAGS.seed), None
    builder = functools.partial(VICTIMS[model_name], (32, 32, 3), 10)
    cache_name = model_name if FLAGS.train_limit is None else f"{model_name}-n{FLAGS.train_limit}"
    model, accuracy = train_victim(
        builder,
        cache_name,
        epochs=FLAGS.trained_epochs,
        data_dir=FLAGS.data_dir,
        seed=FLAGS.seed,
        limit=FLAGS.train_limit,
        verbose=2,
    )
    return tfleak.as_victim(model), accuracy


def _plot(rows, methods, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfleak.io import atomic_write_bytes

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for method in methods:
        mine = [r for r in rows if r["method"] == method and r["label_accuracy"] is not None]
        sizes = [r["batch_size"] for r in mine]
        for axis, key in zip(axes, ("label_accuracy", "exact_batch_accuracy")):
            axis.plot(sizes, [r[key] for r in mine], marker="o", label=method)
    for axis, name in zip(axes, ("per-label accuracy", "exact batch (multiset) accuracy")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch size")
        axis.set_title(name)
        axis.set_ylim(-0.03, 1.03)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("fraction (refused batches score 0)")
    axes[1].legend(loc="lower left")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _oracle_accuracy(victim, probabilities, labels, observed) -> float:
    """Label accuracy of `n_c = B (p_bar_c - db_c)` with the batch's true mean prediction.

    `probabilities`: `[B, classes]` the victim's softmax on the batch (as in its gradient).
    """
    import numpy as np

    from tfleak.metrics import label_multiset_accuracy

    if victim.classifier_bias_index is None:
        return float("nan")
    batch_size = len(probabilities)
    bias = np.asarray(observed[victim.classifier_bias_index], np.float64)
    counts = np.clip(batch_size * (probabilities.mean(axis=0) - bias), 0.0, None)
    rounded = np.floor(counts).astype(np.int64)
    while rounded.sum() < batch_size:  # largest remainders, as the count rules round
        rounded[np.argmax(counts - rounded)] += 1
    while rounded.sum() > batch_size:
        rounded[np.argmin(np.where(rounded > 0, counts - rounded, np.inf))] -= 1
    return label_multiset_accuracy(labels, np.repeat(np.arange(len(counts)), rounded))


def main(argv):
    del argv
    batch_sizes, methods, test_dir = _flags_checked()
    from tfleak.io import atomic_write_json, check_writable_dir

    output = Path(FLAGS.output)
    check_writable_dir(output.parent, "output")

    import numpy as np
    import tensorflow as tf

    from tfleak.attacks.labels import LABEL_STRATEGIES
    from tfleak.data import index_image_folder, load_examples, sample_batch
    from tfleak.metrics import label_multiset_accuracy

    all_labels = np.asarray(index_image_folder(test_dir).labels)  # no decoding
    victim, test_accuracy, weights = _victim(FLAGS.model)
    print(f"{victim}; weights: {weights}, test accuracy {test_accuracy}")
    rows, diagnostics = [], []
    started = time.perf_counter()
    for batch_size in batch_sizes:
        results = {m: {"exact": [], "label": [], "refusals": []} for m in methods}
        skipped = None
        oracle, confidence = [], []
        for trial in range(FLAGS.trials):
            seed = FLAGS.seed * 1_000_003 + batch_size * 1_009 + trial
            try:
                indices = sample_batch(all_labels, batch_size, FLAGS.label_mode, seed=seed)
            except ValueError as error:
                skipped = str(error)
                break
            images, labels, _ = load_examples("cifar10", indices, "test", FLAGS.data_dir)
            observed = victim.gradient(images, labels)
            probabilities = tf.nn.softmax(victim(images)).numpy()  # same batch statistics
            oracle.append(_oracle_accuracy(victim, probabilities, labels, observed))
            confidence.extend(1.0 - probabilities[np.arange(batch_size), np.asarray(labels)])
            for method in methods:
                try:
                    restored = LABEL_STRATEGIES[method](victim, observed, batch_size)
                except ValueError as error:
                    results[method]["refusals"].append(str(error))
                    continue
                accuracy = label_multiset_accuracy(labels, restored)
                results[method]["label"].append(accuracy)
                results[method]["exact"].append(float(accuracy == 1.0))
        for method in methods:
            row = {"method": method, "batch_size": batch_size, "label_mode": FLAGS.label_mode}
            if skipped is not None:
                row.update(exact_batch_accuracy=None, label_accuracy=None, skipped=skipped)
                rows.append(row)
                continue
            result = results[method]
            answered = len(result["label"])
            refused = len(result["refusals"])
            trials = answered + refused
            row.update(
                exact_batch_accuracy=(sum(result["exact"]) / trials) if answered else None,
                label_accuracy=(sum(result["label"]) / trials) if answered else None,
                answered_label_accuracy=float(np.mean(result["label"])) if answered else None,
                trials=trials,
                refused_trials=refused,
            )
            if refused:
                row["refused"] = result["refusals"][0]
            rows.append(row)
            shown = "refused" if not answered else f"{row['label_accuracy']:.3f}"
            print(
                f"B={batch_size:3d} {method:14s} label accuracy {shown:>8s}  exact "
                f"{row['exact_batch_accuracy'] if answered else '-'}  refused {refused}/{trials}"
                f"  [{time.perf_counter() - started:.0f} s]",
                flush=True,
            )
        if skipped is not None:
            print(f"B={batch_size:3d} skipped: {skipped}", flush=True)
        elif oracle:
            share = np.asarray(confidence)
            diagnostics.append(
                {
                    "batch_size": batch_size,
                    "oracle_label_accuracy": float(np.mean(oracle)),
                    "median_one_minus_p_true": float(np.median(share)),
                    "fraction_one_minus_p_true_below_1e-2": float(np.mean(share < 1e-2)),
                    "fraction_one_minus_p_true_below_1e-3": float(np.mean(share < 1e-3)),
                }
            )
            print(f"B={batch_size:3d} diagnostics {diagnostics[-1]}", flush=True)
    settings = {
        "model": FLAGS.model,
        "dataset": "CIFAR-10 (JPEG) test",
        "batch_sizes": batch_sizes,
        "label_mode": FLAGS.label_mode,
        "trials": FLAGS.trials,
        "weights": weights,
        "trained_epochs": FLAGS.trained_epochs,
        "train_limit": FLAGS.train_limit,
        "test_accuracy": test_accuracy,
        "seed": FLAGS.seed,
        "methods": methods,
        "batch_norm": victim.batch_norm,
        "tensorflow": tf.__version__,
        "scoring": "label multisets; a refused batch scores 0 in exact_batch_accuracy and "
        "label_accuracy; answered_label_accuracy averages the answered batches only",
    }
    atomic_write_json(output, {"rows": rows, "diagnostics": diagnostics, "settings": settings})
    accuracy = "" if test_accuracy is None else f", test acc. {test_accuracy:.3f}"
    title = (
        f"{FLAGS.model} ({Path(weights).name if FLAGS.weights_path else weights}{accuracy}), "
        f"CIFAR-10 (JPEG) test, label_mode={FLAGS.label_mode}, {FLAGS.trials} batches each"
    )
    _plot(rows, methods, output.with_suffix(".png"), title)
    print(f"Wrote {output} and {output.with_suffix('.png')}")


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
