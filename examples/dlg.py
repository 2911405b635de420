"""Deep Leakage from Gradients: recover a private image and its label from one gradient.

In federated learning a client trains the shared model on its own data and
sends the server only the gradient of its loss. Zhu, Liu and Han (NeurIPS
2019) showed that the gradient is enough to rebuild the training image: start
from random dummy data and a dummy label, and optimise both with L-BFGS until
*their* gradient matches the shared one (DLG, eq. 4). iDLG (Zhao et al. 2020)
reads the label off the last layer's gradient first and optimises the image
alone.

This script plays both parts: a victim Keras model computes its gradient on one
private image, the attacker inverts that gradient, and the reconstruction is
scored against the truth.

    python examples/dlg.py --output_dir=results/demo
    python examples/dlg.py --dataset=mnist --data_dir=../shared/data --index=3 --alg=idlg
    python examples/dlg.py --image=photo.jpg --label=4 --model=mlp

It writes into --output_dir: metrics.json, reconstruction.png (the truth beside
the reconstruction over time, as in the paper's figure) and progress.gif.
"""

import tfleak  # first: TensorFlow's start-up lines stay off the terminal

# isort: split
import numpy as np
import tensorflow as tf
from absl import app, flags

from tfleak import plotting
from tfleak.io import atomic_write_json, check_writable_dir

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "dataset",
    "sample",
    ["sample", "digits", "mnist", "cifar10", "cifar100", "folder"],
    "Where the private image comes from ('sample' needs no data; 'folder': --data_dir holds "
    "one sub-folder of images per class).",
)
flags.DEFINE_string(
    "data_dir", None, "Folder with the dataset's files (default $TFLEAK_DATA_DIR; no network)."
)
flags.DEFINE_integer("index", 0, "Row of the private image in the dataset's test split.")
flags.DEFINE_string("image", None, "An image file (any format PIL reads) to attack instead.")
flags.DEFINE_integer("label", None, "Label of --image (default 0), or to override the dataset's.")
flags.DEFINE_enum("model", "lenet", ["dense", "mlp", "lenet"], "Victim architecture.")
flags.DEFINE_enum("alg", "dlg", ["dlg", "idlg"], "DLG optimises the label; iDLG restores it.")
flags.DEFINE_integer("iterations", 3000, "Most L-BFGS iterations per trial.")
flags.DEFINE_integer("restarts", 4, "Further trials from new random starts after one stalls.")
flags.DEFINE_integer("seed", 0, "Seed of the dummy data.")
flags.DEFINE_string("output_dir", "results/dlg", "Where metrics.json and the figures go.")


def main(argv):
    del argv
    # The library checks every value and says what to pass instead: that one line is the error.
    try:
        run_attack()
    except (ValueError, FileNotFoundError, PermissionError) as error:
        raise app.UsageError(str(error)) from error


def run_attack():
    output_dir = check_writable_dir(FLAGS.output_dir)
    attack_class = tfleak.IDLG if FLAGS.alg == "idlg" else tfleak.DLG
    attack = attack_class(iterations=FLAGS.iterations, restarts=FLAGS.restarts, seed=FLAGS.seed)

    # The private example: an image file of the user's, or one row of a dataset.
    if FLAGS.image:
        image, label, num_classes = tfleak.data.load_image_file(FLAGS.image), 0, 10
        source = FLAGS.image
    else:
        data = tfleak.data.load_dataset(
            FLAGS.dataset, "test", FLAGS.data_dir, indices=[FLAGS.index]
        )
        image, label, num_classes = data.images[0], int(data.labels[0]), data.num_classes
        source = f"{data.description}[{FLAGS.index}]"
    label = label if FLAGS.label is None else FLAGS.label

    # The client: a fresh victim computes the gradient of its loss on that one
    # image, the update it shares (FedSGD).
    victim = tfleak.models.get_victim(FLAGS.model, image.shape, num_classes)
    images, labels = image[np.newaxis], np.array([label])
    observed = victim.gradient(images, tf.constant(labels))

    # The attacker sees the model's weights and `observed`, nothing else; the
    # ground truth only fills `result.metrics` for scoring.
    print(f"Attacking {source} (label {label}) shared by {FLAGS.model} with {attack!r}")
    result = attack(victim, observed, ground_truth=(images, labels))
    print(result)

    label_pred = None if result.labels is None else int(result.labels[0])
    summary = {
        **{key: result.metrics.get(key) for key in ("psnr", "ssim", "mse")},
        "label_true": label,
        "label_pred": label_pred,
        "label_correct": label_pred == label,
        **{
            key: getattr(result, key)
            for key in (
                "success",
                "message",
                "iterations",
                "restarts_used",
                "seconds",
                "gradient_distance",
                "relative_distance",
            )  # fmt: skip
        },
        "source": source,
        "model": FLAGS.model,
        "attack": repr(attack),
    }
    # Strict JSON, written atomically: a non-finite number becomes null.
    atomic_write_json(output_dir / "metrics.json", summary)
    if result.history:
        save_figures(image, result, output_dir)
    psnr = summary["psnr"]
    print(
        f"PSNR {psnr:.2f} dB, SSIM {summary['ssim']:.4f}, label {label_pred} (true {label}), "
        f"{result.seconds:.1f} s; {result.message}"
        if psnr is not None
        else f"FAILED: {result.message}"
    )
    print(f"Wrote {output_dir}/metrics.json, reconstruction.png, progress.gif")


def save_figures(image, result, output_dir):
    """The truth beside nine snapshots of the reconstruction, and every snapshot as a GIF."""
    history = result.history
    picks = np.unique(np.linspace(0, len(history) - 1, num=min(9, len(history))).astype(int))
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
    tfleak.cli.run(main)
