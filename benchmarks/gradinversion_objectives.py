"""Why GradInversion trails breaching's `seethroughgradients` in the side-by-side's cell 7.

Cell 7 of `breaching_side_by_side.py` attacks batches of 8 CIFAR-10 (JPEG) test
images on the trained ResNet-20 (client batch norm in training mode, labels
restored by GradInversion's rule, one seed, 2,000 iterations). This script runs
tfleak's side of that cell on the same batches (drawn with seeds 0, 1, 2, as the
side-by-side draws them) under several objectives, so that the gap can be
attributed to one term:

- `paper`: `tfleak.GradInversion` as in cell 7 (the paper's weights, group 0);
- `paper_no_bn`: the same without the batch-norm prior;
- `breaching`: breaching's `seethroughgradients` objective written in tfleak's
  terms: `0.5e-4 * sum_l ||g_l - g*_l||^2` (its Euclidean loss, scale 1e-4),
  mean-absolute TV 1e-4 per normalised unit (`'tv'` weight 1e-4 / 0.25, the
  mean CIFAR-10 std), the batch-norm prior 0.1 with the first layer x10
  matched to mean 0 and variance 1 (breaching, given no buffers by a client
  in training mode, resets every batch norm's running statistics to 0 and 1
  and stops tracking them, `_construct_models_from_payload_and_buffers`), its
  step 0.1 in normalised units (0.0251 in pixels) and Langevin noise 0.01;
- `breaching_no_bn`: the same without the batch-norm prior;
- `paper_strong_bn`: the paper's terms with a_G 1e-3 instead of 1e-2 (the
  batch-norm prior 10 times stronger against the gradient term).

Every row also records DeepInversion's batch-norm distance (first layer x10,
unweighted) of the true batch and of the reconstruction, against the victim's
moving statistics and against mean 0 / variance 1: it says where the prior pulls.

    python benchmarks/gradinversion_objectives.py --batches=3 --iterations=2000 \
        --output=benchmarks/results/gradinversion_objectives.json

Each finished attack is written to the JSON at once (atomically); rerunning the
same command skips the attacks it holds.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

OBJECTIVES = ("paper", "paper_no_bn", "breaching", "breaching_no_bn", "paper_strong_bn")

FLAGS = flags.FLAGS
flags.DEFINE_list("objectives", list(OBJECTIVES), f"Objectives to run, of {', '.join(OBJECTIVES)}.")
flags.DEFINE_integer("batches", 3, "Batches of 8, drawn with seeds 0, 1, ... as in cell 7.")
flags.DEFINE_integer("iterations", 2000, "Adam iterations per attack.")
flags.DEFINE_string("data_dir", "../shared/data", "Directory holding cifar10/ (JPEG folders).")
flags.DEFINE_string("output", "benchmarks/results/gradinversion_objectives.json", "JSON path.")


def _settings(name: str) -> dict:
    from tfleak.attacks import GRADINVERSION_PRIORS
    from tfleak.models.resnet import CIFAR10_STD

    std = float(np.mean(CIFAR10_STD))
    paper = dict(GRADINVERSION_PRIORS, group=0.0)
    breaching = dict(
        priors={"tv": 1e-4 / std, "bn": 0.1, "group": 0.0},
        gradient_weight=0.5e-4,
        distance="l2",
        learning_rate=0.1 * std,
        langevin=0.01,
        bn_target="shared",
    )
    return {
        "paper": dict(priors=paper),
        "paper_no_bn": dict(priors=dict(paper, bn=0.0)),
        "paper_strong_bn": dict(priors=paper, gradient_weight=1e-3),
        "breaching": breaching,
        "breaching_no_bn": dict(breaching, priors={"tv": 1e-4 / std, "group": 0.0}),
    }[name]


def _bn_distance(victim, images, targets) -> float:
    """DeepInversion's distance of `images`' batch statistics to `targets`, first layer x10."""
    import tensorflow as tf

    from tfleak.attacks.priors import PriorContext, batch_norm_statistics

    statistics = [(m[None], v[None]) for m, v in victim.batch_statistics(tf.constant(images))]
    context = PriorContext(statistics=statistics, targets=targets)
    return float(batch_norm_statistics(images[None], context, first_layer_scale=10.0)[0])


def _attack(victim, name: str, batch: int) -> dict:
    import tensorflow as tf

    import tfleak
    from tfleak import metrics
    from tfleak.data import load_dataset

    rng = np.random.default_rng(batch)
    indices = sorted(int(i) for i in rng.choice(10_000, 8, replace=False))
    data = load_dataset("cifar10", "test", data_dir=FLAGS.data_dir, indices=indices)
    images, labels = data.images.astype(np.float32), data.labels.astype(np.int64)
    moving = victim.moving_statistics()
    unit = [(tf.zeros_like(m), tf.ones_like(v)) for m, v in moving]
    attack = tfleak.GradInversion(
        iterations=FLAGS.iterations, starts=1, seed=batch, **_settings(name)
    )
    extra = {"batch_statistics": unit} if attack.objective.bn_target == "shared" else {}
    observed = tfleak.FedSGD().share(victim, images, labels)
    start = time.perf_counter()
    result = attack(
        victim, observed, batch_size=8, ground_truth=(images, labels), **extra
    )  # fmt: skip
    seconds = time.perf_counter() - start
    reconstruction = np.asarray(result.reconstruction, np.float32)
    scores = metrics.evaluate(images, reconstruction, labels, np.asarray(result.labels))
    return {
        "objective": name,
        "batch": batch,
        "indices": indices,
        "psnr": float(scores["psnr"]),
        "ssim": float(scores["ssim"]),
        "label_accuracy": float(scores["label_accuracy"]),
        "seconds": seconds,
        "bn_distance": {
            "truth_to_moving": _bn_distance(victim, images, moving),
            "reconstruction_to_moving": _bn_distance(victim, reconstruction, moving),
            "truth_to_unit": _bn_distance(victim, images, unit),
            "reconstruction_to_unit": _bn_distance(victim, reconstruction, unit),
        },
        "attack": repr(attack),
    }


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.objectives) - set(OBJECTIVES))
    if unknown:
        raise app.UsageError(
            f"unknown --objectives {unknown}; choose from {', '.join(OBJECTIVES)}."
        )
    if FLAGS.batches < 1 or FLAGS.iterations < 1:
        raise app.UsageError("--batches and --iterations must be at least 1.")
    import tfleak
    from tfleak.io import atomic_write_json

    output = Path(FLAGS.output)
    rows = json.loads(output.read_text())["rows"] if output.exists() else []
    done = {(r["objective"], r["batch"], r["iterations"]) for r in rows}
    victim = tfleak.models.trained_victim("resnet20", batch_norm="train")
    for name in FLAGS.objectives:
        for batch in range(FLAGS.batches):
            if (name, batch, FLAGS.iterations) in done:
                continue
            row = dict(_attack(victim, name, batch), iterations=FLAGS.iterations)
            rows.append(row)
            atomic_write_json(output, {"rows": rows})
            print(f"{name} batch {batch}: {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}, "
                  f"labels {row['label_accuracy']:.3f}, {row['seconds']:.0f} s")  # fmt: skip
    for name in FLAGS.objectives:
        psnr = [r["psnr"] for r in rows if r["objective"] == name]
        if psnr:
            print(f"{name}: {np.mean(psnr):.2f} ± {np.std(psnr):.2f} dB over {len(psnr)} batches")


if __name__ == "__main__":
    app.run(main)
