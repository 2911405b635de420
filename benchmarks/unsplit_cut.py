"""UnSplit at one cut: inverting codes without the device's weights, on unseen Omniglot images.

The device stage of a fresh split target (seed 0) sends the codes of the first
--images unseen Tagalog test images; the attacker builds the same architecture
with other weights (seed 1) and runs `tfleak.split.UnSplit`. Prints the MSE
against the mean surrogate image's, and top-1 re-identification among the 340
test images.

    python benchmarks/unsplit_cut.py --cut=1 --images=8 --rounds=150 --data_dir=../shared/data
"""

from __future__ import annotations

import time

import tfleak  # noqa: F401  first: TensorFlow's start-up lines stay off the terminal

# isort: split
import keras
import numpy as np
from absl import app, flags

from tfleak import split
from tfleak.data.omniglot import omniglot_scheme

FLAGS = flags.FLAGS
flags.DEFINE_integer("cut", 1, "Conv blocks on the device, 1..4.")
flags.DEFINE_integer("images", 8, "Unseen test images to invert.")
flags.DEFINE_integer("rounds", 150, "UnSplit rounds (5 image and 5 clone steps each).")
flags.DEFINE_float("tv_weight", 0.01, "Total-variation weight.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder with the two small Omniglot zips.")


def main(argv):
    del argv
    # Before the data load: a bad flag is one line, not a minute of work.
    if FLAGS.cut not in split.CODE_SHAPES:
        raise app.UsageError(f"--cut must be one of 1, 2, 3, 4; got {FLAGS.cut}.")
    for name in ("images", "rounds"):
        if FLAGS[name].value < 1:
            raise app.UsageError(f"--{name} must be at least 1; got {FLAGS[name].value}.")
    scheme = omniglot_scheme("offline", FLAGS.data_dir)
    gallery = np.stack([image.numpy() for image, _ in scheme["attacker_test"]])
    images = gallery[: FLAGS.images]
    mean = split.mean_image(scheme["attacker_train"])
    keras.utils.set_random_seed(0)
    codes = split.device_stage(split.TargetModel(), FLAGS.cut)(images).numpy()
    attack = split.UnSplit(
        lambda: split.device_stage(split.TargetModel(), FLAGS.cut),
        rounds=FLAGS.rounds, tv_weight=FLAGS.tv_weight, init=mean, seed=1,
    )  # fmt: skip
    began = time.perf_counter()
    result = attack(codes)
    mse = float(np.mean((result.reconstructions - images) ** 2))
    baseline = float(np.mean((images - mean) ** 2))
    top1 = split.reidentify(result.reconstructions, gallery).top1
    print(f"{attack!r}\ncut {FLAGS.cut} ({codes.shape[1:]}), {len(images)} images: MSE {mse:.4f} "
          f"against the mean image's {baseline:.4f}; re-identification top-1 {top1:.3f} among "
          f"{len(gallery)}; {time.perf_counter() - began:.0f} s")  # fmt: skip


if __name__ == "__main__":
    tfleak.cli.run(main)
