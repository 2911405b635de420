"""Deep Leakage from Gradients: recover a private image and its label from a gradient.

A victim Keras model computes its training gradient on one private image (the
gradient a client shares in federated learning); DLG or iDLG reconstructs the
image and label from that gradient alone, and this script compares them with
the truth.

    python examples/dlg.py --output_dir=results/demo
    python examples/dlg.py --dataset=mnist --data_dir=../shared/data --index=3 --alg=idlg
    python examples/dlg.py --image=photo.jpg --label=4 --model=mlp

Writes into --output_dir: metrics.json, reconstruction.png (the truth beside
the reconstruction over time, as the DLG paper's figure), progress.gif.
"""

from __future__ import annotations

import os

# Before TensorFlow is imported (by tfleak): progress, not pages of TF's C++ INFO/WARNING lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "dataset",
    "sample",
    ["sample", "digits", "mnist", "cifar10", "cifar100", "folder"],
    "Where the private image comes from ('sample' needs no network; 'folder' reads --data_dir, "
    "one sub-folder of images per class).",
)
flags.DEFINE_integer("index", 0, "Index of the private image in --dataset.")
flags.DEFINE_enum("split", "test", ["train", "test"], "Dataset split to take the image from.")
flags.DEFINE_string("image", None, "An image file (any format PIL reads) to attack instead.")
flags.DEFINE_integer("label", None, "Label of --image (default 0), or to override the dataset's.")
flags.DEFINE_integer(
    "image_size", 32, "Side in pixels that --image, 'sample' and 'folder' are resized to."
)
flags.DEFINE_integer("num_classes", None, "Classes of the victim (default: the dataset's).")
flags.DEFINE_enum("model", "lenet", ["dense", "mlp", "lenet"], "Victim architecture.")
flags.DEFINE_enum("alg", "dlg", ["dlg", "idlg"], "DLG optimises the label; iDLG restores it.")
flags.DEFINE_enum("optimizer", "lbfgs", ["lbfgs", "adam"], "Optimiser of the dummy data.")
flags.DEFINE_integer("iterations", 3000, "Most optimiser iterations per round.")
flags.DEFINE_integer("restarts", 4, "Further rounds from new random starts if a round fails.")
flags.DEFINE_integer("starts", 1, "Random starts optimised together (L-BFGS).")
flags.DEFINE_float("learning_rate", 0.1, "Adam's step size (> 0).")
flags.DEFINE_float(
    "tolerance", 1e-8, "Success: gradient distance below this times a zero guess's (>= 0)."
)
flags.DEFINE_integer("seed", 0, "Seed of the dummy data.")
flags.DEFINE_integer("model_seed", 0, "Seed of the victim's weights.")
flags.DEFINE_string(
    "data_dir",
    None,
    "Directory with the original dataset files or CIFAR-10 JPEG folders (no network needed), "
    "default $TFLEAK_DATA_DIR; for --dataset=folder, the folder of class sub-folders.",
)
flags.DEFINE_string("output_dir", "results/dlg", "Where metrics.json and figures are written.")


def _validate_flags() -> Path:
    """Every check that needs no data, before anything slow; returns the output directory."""
    from tfleak.cli import require_finite
    from tfleak.io import check_writable_dir

    for name in ("iterations", "starts", "image_size"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be at least 1; got {getattr(FLAGS, name)}.")
    for name in ("restarts", "index"):
        if getattr(FLAGS, name) < 0:
            raise app.UsageError(f"--{name} must be >= 0; got {getattr(FLAGS, name)}.")
    if FLAGS.num_classes is not None and FLAGS.num_classes < 2:
        raise app.UsageError(f"--num_classes must be at least 2; got {FLAGS.num_classes}.")
    if FLAGS.label is not None and FLAGS.label < 0:
        raise app.UsageError(f"--label must be >= 0; got {FLAGS.label}.")
    require_finite("learning_rate", FLAGS.learning_rate, minimum=0.0, inclusive=(False, True))
    require_finite("tolerance", FLAGS.tolerance, minimum=0.0)
    try:
        # An unwritable --output_dir fails now, not after the attack has run.
        return check_writable_dir(FLAGS.output_dir, "output_dir")
    except (ValueError, PermissionError) as error:
        raise app.UsageError(str(error)) from error


def _load_private_example():
    """`(image [h, w, c] in [0, 1], label, num_classes, source)` from the flags."""
    import tfleak

    if FLAGS.image:
        image = tfleak.data.load_image_file(FLAGS.image, FLAGS.image_size)
        return image, 0, 10, FLAGS.image
    dataset = tfleak.data.load_dataset(
        FLAGS.dataset, FLAGS.split, FLAGS.data_dir, FLAGS.image_size, indices=[FLAGS.index]
    )
    label = int(dataset.labels[0])
    split = "" if FLAGS.dataset in ("sample", "digits") else f" {FLAGS.split}"
    source = f"{dataset.description}{split}[{FLAGS.index}]"
    if dataset.class_names:
        source += f", class {dataset.class_names[label]}"
    return dataset.images[0], label, dataset.num_classes, source


def _finite(value) -> bool:
    """Whether `value` (None, a Python or numpy number) is missing or a finite number."""
    if value is None:
        return True
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _summary(result, label: int, source: str, attack) -> dict:
    """metrics.json: a success beside a non-finite number or image is not reported as one."""
    label_pred = None if result.labels is None else int(result.labels[0])
    metrics = {k: result.metrics.get(k) for k in ("psnr", "ssim", "mse")}
    numbers = [*metrics.values(), result.gradient_distance, result.relative_distance]
    finite = all(_finite(v) for v in numbers) and (
        result.reconstruction is not None and bool(np.all(np.isfinite(result.reconstruction)))
    )
    success, message = bool(result.success), result.message
    if success and not finite:
        success = False
        message = f"not counted as a success: a non-finite reconstruction or metric ({message})"
    return {
        **metrics,
        "label_true": int(label),
        "label_pred": label_pred,
        "label_correct": label_pred == int(label),
        "seconds": result.seconds,
        "iterations": result.iterations,
        "restarts_used": result.restarts_used,
        "gradient_distance": result.gradient_distance,
        "relative_distance": result.relative_distance,
        "success": success,
        "message": message,
        "source": source,
        "model": FLAGS.model,
        "attack": repr(attack),
    }


def main(argv):
    del argv
    # Flags are validated, the output directory proven writable and the data
    # loaded before TF builds anything.
    output_dir = _validate_flags()

    import tensorflow as tf

    import tfleak
    from tfleak.io import atomic_write_json, json_safe

    try:
        image, label, num_classes, source = _load_private_example()
        label = FLAGS.label if FLAGS.label is not None else label
        num_classes = FLAGS.num_classes or num_classes
        if label >= num_classes:
            raise ValueError(
                f"label {label} is outside the model's classes 0..{num_classes - 1}; pass "
                f"--label in 0..{num_classes - 1} or a larger --num_classes."
            )
        victim = tfleak.models.get_victim(
            FLAGS.model, image.shape, num_classes, seed=FLAGS.model_seed
        )
        images, labels = image[np.newaxis], np.array([label])
        observed = victim.gradient(images, tf.constant(labels))
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error

    attack_class = tfleak.DLG if FLAGS.alg == "dlg" else tfleak.IDLG
    # The step size is a first-order solver's setting; L-BFGS finds its own.
    first_order = {} if FLAGS.optimizer == "lbfgs" else {"learning_rate": FLAGS.learning_rate}
    attack = attack_class(
        optimizer=FLAGS.optimizer,
        iterations=FLAGS.iterations,
        restarts=FLAGS.restarts,
        starts=FLAGS.starts,
        tolerance=FLAGS.tolerance,
        seed=FLAGS.seed,
        **first_order,
    )
    print(
        f"Attacking {source} (label {label}) shared by {FLAGS.model} "
        f"({victim.count_params()} parameters) with {attack!r}",
        flush=True,
    )
    result = attack(victim, observed, ground_truth=(images, labels))
    print(result)

    summary = _summary(result, label, source, attack)
    atomic_write_json(output_dir / "metrics.json", summary)
    written = ["metrics.json"]
    if result.history and result.reconstruction is not None:
        _save_figures(image, result, output_dir)
        written += ["reconstruction.png", "progress.gif"]
    keys = ("psnr", "ssim", "label_true", "label_pred", "seconds", "success")
    print(json.dumps({k: json_safe(summary[k]) for k in keys}, allow_nan=False))
    print(f"Wrote {', '.join(str(output_dir / name) for name in written)}")
    if not summary["success"]:
        print(f"FAILED: {summary['message']}")


def _save_figures(image, result, output_dir):
    from tfleak import plotting

    history = result.history
    psnr = result.metrics.get("psnr")
    psnr_text = "PSNR n/a" if psnr is None or not _finite(psnr) else f"PSNR {psnr:.1f} dB"
    label_text = "?" if result.labels is None else int(result.labels[0])
    picks = sorted(set(np.linspace(0, len(history) - 1, num=min(9, len(history))).astype(int)))
    snapshots = [history[i] for i in picks]
    plotting.plot_image_rows(
        [[image] + [s.images[0] for s in snapshots]],
        output_dir / "reconstruction.png",
        column_titles=["ground truth"] + [f"iter {s.iteration}" for s in snapshots],
        title=f"{type(result.attack).__name__}: {psnr_text}, label {label_text}",
    )
    plotting.save_progress_gif(
        [s.images[0] for s in history],
        output_dir / "progress.gif",
        captions=[f"iteration {s.iteration}" for s in history],
    )


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
