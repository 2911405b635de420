r"""Model inversion on a split Omniglot classifier: can the server see the phone's images?

In split learning a phone runs the first blocks of a classifier and sends the
server only the intermediate code; the server finishes the prediction. This
walk-through trains such a classifier, then plays the curious server: it
inverts the codes of images it never saw, two ways (He, Zhang, Lee, "Model
inversion attacks against collaborative inference", ACSAC 2019), and asks
whether each reconstruction points back at its own original.

    python examples/model_inversion.py --data_dir=../shared/data --cut=2 \
        --output_dir=results/model_inversion

Writes results.json and reconstructions.png to --output_dir; the training is
checkpointed there, so the same command resumes. The full study (every cut,
DP-Adam targets, code defences, NoPeek) is benchmarks/split_study.py.
"""

from __future__ import annotations

import json

import tfleak  # noqa: F401  first: TensorFlow's start-up lines stay off the terminal

# isort: split
import numpy as np
from absl import app, flags

from tfleak import privacy, split
from tfleak.cli import run
from tfleak.data.omniglot import omniglot_scheme
from tfleak.io import atomic_write_json, check_writable_dir
from tfleak.plotting import plot_image_rows
from tfleak.split import study
from tfleak.training import ConfigMismatchError

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder with the two small Omniglot zips; None: tfds.")
flags.DEFINE_enum("scheme", "offline", ["offline", "tfds"], "Which Omniglot images go where.")
flags.DEFINE_integer("cut", 2, "Conv blocks on the phone, 1..4 (4 as published: a 1x1x32 code).")
flags.DEFINE_integer("target_epochs", 6, "Epochs of the classifier (Adam).")
flags.DEFINE_float("noise_multiplier", 0.0, "Train it with DP-Adam at this noise (0: Adam).")
flags.DEFINE_integer("attacker_epochs", 5, "Epochs of the attacker's decoder.")
flags.DEFINE_integer("whitebox_images", 16, "Test images the white box inverts.")
flags.DEFINE_integer("whitebox_steps", 200, "Adam steps of the white box.")
flags.DEFINE_integer("limit", 0, "Use at most this many images of each set (0: all; smoke tests).")
flags.DEFINE_string("output_dir", "results/model_inversion", "Where results go.")


def main(argv):
    del argv
    # 0. Check every flag before any work.
    if FLAGS.cut not in split.CODE_SHAPES:
        raise app.UsageError(f"--cut must be one of 1, 2, 3, 4; got {FLAGS.cut}.")
    for name in ("target_epochs", "attacker_epochs", "whitebox_images", "whitebox_steps"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be >= 1; got {getattr(FLAGS, name)}.")
    if not 0 <= FLAGS.noise_multiplier < float("inf"):
        raise app.UsageError(f"--noise_multiplier must be >= 0; got {FLAGS.noise_multiplier}.")
    if 0 < FLAGS.limit < study.BATCH_SIZE:
        raise app.UsageError(f"--limit={FLAGS.limit} is smaller than one batch (32).")
    try:
        output_dir = check_writable_dir(FLAGS.output_dir)
        data = omniglot_scheme(FLAGS.scheme, FLAGS.data_dir)
    except (ValueError, FileNotFoundError, PermissionError) as error:
        raise app.UsageError(str(error)) from None
    if FLAGS.limit:
        data = {name: dataset.take(FLAGS.limit).cache() for name, dataset in data.items()}

    # 1. The classifier. The target trains on one set of alphabets; the attacker's
    #    surrogate images (`attacker_train`) and its test images (`attacker_test`, another
    #    alphabet) are images the target never saw.
    kind = "dp" if FLAGS.noise_multiplier else "plain"
    try:
        target, trained = study.train_target(
            kind,
            FLAGS.noise_multiplier or None,
            data,
            epochs=FLAGS.target_epochs,
            seed=0,
            checkpoint_dir=output_dir / "checkpoints" / kind,
        )
    except ConfigMismatchError as error:
        raise app.UsageError(f"{error} Pass another --output_dir.") from None
    val_images, val_labels = study.arrays(data["target_val"])
    val_accuracy = study.accuracy(target, 4, study.NO_DEFENSE, val_images, val_labels)
    print(f"classifier: validation accuracy {val_accuracy:.3f}")
    if kind == "dp":
        n = sum(1 for _ in data["target_train"])
        epsilon = privacy.compute_epsilon(n, 32, FLAGS.target_epochs, FLAGS.noise_multiplier)
        print(f"DP-Adam, noise {FLAGS.noise_multiplier:g}: epsilon {epsilon:.2f} (delta 1e-5)")

    # 2. Cut it: the phone's stage turns a 105x105 image into the code it sends.
    phone = split.device_stage(target, FLAGS.cut)
    print(f"cut after block {FLAGS.cut}: the phone sends a {split.CODE_SHAPES[FLAGS.cut]} code")

    # 3. Black box: the server queries the phone's stage with surrogate images and
    #    learns a decoder from codes back to images.
    decoder = split.compile_attacker(split.AttackModel(phone), learning_rate=0.005)
    split.train_resumable(
        decoder, data["attacker_train"], epochs=FLAGS.attacker_epochs, batch_size=32, name="decoder"
    )
    test_images, _ = study.arrays(data["attacker_test"])
    decoded = split.reconstruct(decoder, phone, test_images)

    # 4. White box: the server holds the phone's stage itself, so it optimises an image
    #    until the stage's code matches the intercepted one (with a smoothness prior).
    mean_image = split.mean_image(data["attacker_train"])
    shown = test_images[: FLAGS.whitebox_images]
    whitebox = split.WhiteBoxInversion(
        phone, steps=FLAGS.whitebox_steps, tv_weight=0.01, init=mean_image
    )(phone(shown).numpy())
    print(whitebox)

    # 5. Score both. MSE beside the mean image (the guess that needs no code), and
    #    re-identification: is each reconstruction nearer to its own original than to
    #    every other test image? Chance is 1 / (number of test images).
    results = {"cut": FLAGS.cut, "target": kind, "val_accuracy": val_accuracy,
               "target_epochs_trained": trained.final.get("epoch")}  # fmt: skip
    for attack, reconstructions in (("decoder", decoded), ("whitebox", whitebox.reconstructions)):
        originals = test_images[: len(reconstructions)]
        reid = split.reidentify(reconstructions, test_images)
        results[attack] = {
            "images": len(originals),
            "mse": float(np.mean((reconstructions - originals) ** 2)),
            "mean_image_mse": float(np.mean((originals - mean_image) ** 2)),
            **reid.as_dict(),
        }
        print(f"{attack}: " + json.dumps(results[attack]))

    # 6. Save the numbers and a picture: originals, then each attack's reconstructions.
    atomic_write_json(output_dir / "results.json", results)
    plot_image_rows(
        [list(shown), list(decoded[: len(shown)]), list(whitebox.reconstructions)],
        output_dir / "reconstructions.png",
        row_titles=["original", "decoder", "white box"],
        title=f"Unseen test images from the codes sent at cut {FLAGS.cut}",
    )
    print(f"wrote {output_dir / 'results.json'} and reconstructions.png")


if __name__ == "__main__":
    run(main)
