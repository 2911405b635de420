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

import json
from pathlib import Path

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "dataset",
    "sample",
    ["sample", "digits", "mnist", "cifar10", "cifar100"],
    "Where the private image comes from ('sample' needs no network).",
)
flags.DEFINE_integer("index", 0, "Index of the private image in --dataset.")
flags.DEFINE_string("split", "test", "Dataset split to take the image from.")
flags.DEFINE_string("image", None, "A PNG/JPEG to attack instead of --dataset.")
flags.DEFINE_integer("label", None, "Label of --image (default 0), or to override the dataset's.")
flags.DEFINE_integer("image_size", 32, "Side in pixels that --image and 'sample' are resized to.")
flags.DEFINE_integer("num_classes", None, "Classes of the victim (default: the dataset's).")
flags.DEFINE_enum("model", "lenet", ["dense", "mlp", "lenet"], "Victim architecture.")
flags.DEFINE_enum("alg", "dlg", ["dlg", "idlg"], "DLG optimises the label; iDLG restores it.")
flags.DEFINE_enum("optimizer", "lbfgs", ["lbfgs", "adam"], "Optimiser of the dummy data.")
flags.DEFINE_integer("iterations", 3000, "Most optimiser iterations per round.")
flags.DEFINE_integer("restarts", 4, "Further rounds from new random starts if a round fails.")
flags.DEFINE_integer("starts_per_round", 1, "Random starts optimised together (L-BFGS).")
flags.DEFINE_float("learning_rate", 0.1, "Adam's step size.")
flags.DEFINE_float("tolerance", 1e-8, "Success: gradient distance below this times a zero guess's.")
flags.DEFINE_integer("seed", 0, "Seed of the dummy data.")
flags.DEFINE_integer("model_seed", 0, "Seed of the victim's weights.")
flags.DEFINE_string(
    "data_dir",
    None,
    "Directory with the original dataset files (no network needed); default $TFLEAK_DATA_DIR.",
)
flags.DEFINE_string("output_dir", "results/dlg", "Where metrics.json and figures are written.")


def main(argv):
    del argv
    # Flags are validated and data loaded before TF builds anything.
    for name in ("iterations", "starts_per_round", "image_size"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be at least 1; got {getattr(FLAGS, name)}.")
    if FLAGS.restarts < 0:
        raise app.UsageError(f"--restarts must be >= 0; got {FLAGS.restarts}.")

    import tensorflow as tf

    import tfleak

    try:
        if FLAGS.image:
            image = tfleak.data.load_image_file(FLAGS.image, FLAGS.image_size)
            label, num_classes, source = 0, 10, FLAGS.image
        else:
            image, label, num_classes = tfleak.data.load_example(
                FLAGS.dataset, FLAGS.index, FLAGS.split, FLAGS.data_dir, FLAGS.image_size
            )
            source = f"{FLAGS.dataset}[{FLAGS.index}]"
        label = FLAGS.label if FLAGS.label is not None else label
        num_classes = FLAGS.num_classes or num_classes
        victim = tfleak.models.get_victim(
            FLAGS.model, image.shape, num_classes, seed=FLAGS.model_seed
        )
        images, labels = image[np.newaxis], np.array([label])
        observed = victim.gradient(images, tf.constant(labels))
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error

    attack_class = tfleak.DLG if FLAGS.alg == "dlg" else tfleak.IDLG
    attack = attack_class(
        optimizer=FLAGS.optimizer,
        iterations=FLAGS.iterations,
        restarts=FLAGS.restarts,
        starts_per_round=FLAGS.starts_per_round,
        learning_rate=FLAGS.learning_rate,
        tolerance=FLAGS.tolerance,
        seed=FLAGS.seed,
    )
    print(
        f"Attacking {source} (label {label}) shared by {FLAGS.model} "
        f"({victim.count_params()} parameters) with {attack!r}"
    )
    result = attack(victim, observed, ground_truth=(images, labels))
    print(result)

    output_dir = Path(FLAGS.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    label_pred = None if result.labels is None else int(result.labels[0])
    summary = {
        "psnr": result.metrics.get("psnr"),
        "ssim": result.metrics.get("ssim"),
        "mse": result.metrics.get("mse"),
        "label_true": int(label),
        "label_pred": label_pred,
        "label_correct": label_pred == int(label),
        "seconds": result.seconds,
        "iterations": result.iterations,
        "restarts_used": result.restarts_used,
        "gradient_distance": result.gradient_distance,
        "relative_distance": result.relative_distance,
        "success": result.success,
        "message": result.message,
        "source": source,
        "model": FLAGS.model,
        "attack": repr(attack),
    }
    (output_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    if result.history:
        _save_figures(image, result, output_dir)
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("psnr", "ssim", "label_true", "label_pred", "seconds", "success")
            }
        )
    )
    print(f"Wrote {output_dir}/metrics.json, reconstruction.png, progress.gif")
    if not result.success:
        print(f"FAILED: {result.message}")


def _save_figures(image, result, output_dir):
    from tfleak import plotting

    history = result.history
    picks = sorted(set(np.linspace(0, len(history) - 1, num=min(9, len(history))).astype(int)))
    snapshots = [history[i] for i in picks]
    plotting.plot_image_rows(
        [[image] + [s.images[0] for s in snapshots]],
        output_dir / "reconstruction.png",
        column_titles=["ground truth"] + [f"iter {s.iteration}" for s in snapshots],
        title=f"{type(result.attack).__name__}: PSNR {result.metrics['psnr']:.1f} dB, "
        f"label {int(result.labels[0])}",
    )
    plotting.save_progress_gif(
        [s.images[0] for s in history],
        output_dir / "progress.gif",
        captions=[f"iteration {s.iteration}" for s in history],
    )


if __name__ == "__main__":
    app.run(main)
