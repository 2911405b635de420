"""Why one image is hard to recover when the client's batch norm runs in training mode.

A batch-norm layer in training mode normalises each channel by the batch's own
mean and standard deviation. tfleak's CIFAR victims normalise the image by the
data set's mean `m` and standard deviation per channel, then convolve with zero
padding. A contrast change of the whole batch about the data set's mean,
`x -> m + a * (x - m)` with `a > 0`, scales the normalised image by `a`, so
every output channel of the first convolution changes by an affine map that the
next batch norm removes: the network's output, and every gradient it shares,
do not depend on `a` at all. A brightness change `x -> x + b` shifts the
normalised image, and the zero padding at the border is all that sees it. An
attacker who matches the gradient exactly can still be off in contrast (and
nearly so in brightness), and PSNR counts that as error.

This script measures both halves of that claim on CIFAR-10 (JPEG) test images:

1. The cosine distance between the gradient of `x` and of the changed image
   (`--contrast`, `--brightness`), for ResNet-20 (fresh and the shipped 85 %
   weights) with the client's batch norm in training and in eval mode.
2. For reconstructions saved by `breaching_side_by_side.py`, the PSNR as
   reported and after the best brightness and contrast fit of the whole batch
   (least squares over one `a` and `b`): the part of the error the gradient
   cannot see, or barely.

    python benchmarks/batch_norm_invariance.py --images=3 \\
        --side_by_side=benchmarks/results/breaching_side_by_side.json

Writes its JSON to --output.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("images", 3, "CIFAR-10 test images (image r drawn with seed r).")
flags.DEFINE_float("contrast", 0.5, "a of the contrast change m + a * (x - m).")
flags.DEFINE_float("brightness", 0.1, "b of the brightness change x + b.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding cifar10/test.")
flags.DEFINE_string(
    "side_by_side", "benchmarks/results/breaching_side_by_side.json", "Its JSON (optional)."
)
flags.DEFINE_string("arrays_dir", "results/breaching_side_by_side", "Its reconstructions.")
flags.DEFINE_string("output", "benchmarks/results/batch_norm_invariance.json", "JSON path.")


def _cosine_distance(first, second) -> float:
    dot = sum(float(np.sum(a * b)) for a, b in zip(first, second))
    norms = [np.sqrt(sum(float(np.sum(a * a)) for a in g)) for g in (first, second)]
    return 1.0 - dot / (norms[0] * norms[1])


def _affine_fit(reference: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """`a * reconstruction + b` closest to `reference` in least squares (one a, b per batch)."""
    design = np.stack([reconstruction.ravel(), np.ones(reconstruction.size)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, reference.ravel(), rcond=None)
    return np.clip(a * reconstruction + b, 0.0, 1.0)


def _invariance(images, labels) -> list:
    import tfleak
    from tfleak.models.resnet import CIFAR10_MEAN, resnet

    mean = np.asarray(CIFAR10_MEAN, np.float32)
    changes = {
        f"contrast {FLAGS.contrast} about the mean": lambda x: mean + FLAGS.contrast * (x - mean),
        f"brightness {FLAGS.brightness:+}": lambda x: x + FLAGS.brightness,
    }
    rows = []
    for weights in ("fresh", "trained"):
        if weights == "trained":
            model = tfleak.models.trained_victim("resnet20").model
        else:
            model = resnet(20, seed=0)
        for mode in ("train", "eval"):
            victim = tfleak.as_victim(model, batch_norm=mode)
            for change, apply in changes.items():
                distances = []
                for x, y in zip(images, labels):
                    first = [g.numpy() for g in victim.gradient(x[None], y[None])]
                    second = [g.numpy() for g in victim.gradient(apply(x[None]), y[None])]
                    distances.append(_cosine_distance(first, second))
                rows.append(
                    {
                        "victim": f"resnet20 {weights}",
                        "batch_norm": mode,
                        "change": change,
                        "cosine_distance": distances,
                        "mean": float(np.mean(distances)),
                    }
                )
                each = ", ".join(f"{d:.1e}" for d in distances)
                print(
                    f"ResNet-20 {weights}, batch norm {mode}, {change}: gradient cosine "
                    f"distance {np.mean(distances):.1e} ({each})"
                )
    return rows


def _refit(side_by_side: Path) -> list:
    from tfleak import metrics
    from tfleak.data import load_dataset

    report = json.loads(side_by_side.read_text())
    rows = []
    for cell, records in report["records"].items():
        for repeat, record in records.items():
            data = load_dataset(
                "cifar10", "test", data_dir=FLAGS.data_dir, indices=record["indices"]
            )
            images = data.images.astype(np.float32)
            for side in ("tfleak", "breaching"):
                path = Path(FLAGS.arrays_dir) / f"{cell}_{repeat}_{side}.npy"
                if side not in record or not path.is_file():
                    continue
                matched = np.load(path)[record[side]["order"]]
                fitted = _affine_fit(images, matched)
                rows.append(
                    {
                        "cell": cell,
                        "repeat": int(repeat),
                        "side": side,
                        "psnr": float(np.mean(metrics.psnr(images, matched))),
                        "psnr_after_fit": float(np.mean(metrics.psnr(images, fitted))),
                    }
                )
    print("\n| cell | side | PSNR (dB) | after brightness/contrast fit (dB) | n |")
    print("|---|---|---|---|---|")
    for cell in dict.fromkeys(r["cell"] for r in rows):
        for side in ("tfleak", "breaching"):
            chosen = [r for r in rows if r["cell"] == cell and r["side"] == side]
            if chosen:
                before = np.array([r["psnr"] for r in chosen])
                after = np.array([r["psnr_after_fit"] for r in chosen])
                print(
                    f"| {cell} | {side} | {before.mean():.2f} ± {before.std():.2f} "
                    f"| {after.mean():.2f} ± {after.std():.2f} | {len(chosen)} |"
                )
    return rows


def main(argv):
    del argv
    if FLAGS.images < 1 or not FLAGS.contrast > 0:
        raise app.UsageError("--images must be >= 1 and --contrast > 0.")
    from tfleak.data import load_dataset
    from tfleak.io import atomic_write_json

    # Image r as breaching_side_by_side.py draws it for repeat r of a one-image cell.
    picked = [
        int(np.random.default_rng(r).choice(10_000, 1, replace=False)[0])
        for r in range(FLAGS.images)
    ]
    data = load_dataset("cifar10", "test", data_dir=FLAGS.data_dir, indices=picked)
    result = {
        "indices": picked,
        "contrast": FLAGS.contrast,
        "brightness": FLAGS.brightness,
        "invariance": _invariance(data.images.astype(np.float32), data.labels),
    }
    side_by_side = Path(FLAGS.side_by_side)
    if side_by_side.is_file():
        result["refit"] = _refit(side_by_side)
    atomic_write_json(Path(FLAGS.output), result)
    print(f"Wrote {FLAGS.output}.")


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
