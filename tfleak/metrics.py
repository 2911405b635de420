"""Reconstruction quality: MSE, PSNR, SSIM, and label accuracy.

All image metrics take images as float32 in [0, 1], shaped
`[batch, height, width, channels]` (a single `[height, width, channels]` image
is promoted to a batch of one), and return one value per image. PSNR and SSIM
are TensorFlow's own `tf.image.psnr` / `tf.image.ssim` with `max_val=1`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = [
    "mse",
    "psnr",
    "ssim",
    "label_accuracy",
    "image_metrics",
    "PSNR_CAP_DB",
    "match",
    "label_multiset_accuracy",
    "evaluate",
    "check_ground_truth",
]


def _as_image_batch(images, name: str) -> tf.Tensor:
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    if images.shape.rank == 3:
        images = images[tf.newaxis]
    if images.shape.rank != 4:
        raise ValueError(
            f"`{name}` must be an image [height, width, channels] or a batch "
            f"[batch, height, width, channels]; got shape {images.shape}."
        )
    return images


def _pair(reference, reconstruction) -> tuple[tf.Tensor, tf.Tensor]:
    reference = _as_image_batch(reference, "reference")
    reconstruction = _as_image_batch(reconstruction, "reconstruction")
    if reference.shape != reconstruction.shape:
        raise ValueError(
            f"reference {reference.shape} and reconstruction {reconstruction.shape} "
            "must have the same shape."
        )
    # Reconstructions are compared as images, so outside [0, 1] is clipped.
    return reference, tf.clip_by_value(reconstruction, 0.0, 1.0)


def mse(reference, reconstruction) -> np.ndarray:
    """Mean squared error per image, float in [0, 1]; shape `[batch]`."""
    reference, reconstruction = _pair(reference, reconstruction)
    return tf.reduce_mean(tf.square(reference - reconstruction), axis=[1, 2, 3]).numpy()


def psnr(reference, reconstruction) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per image (`tf.image.psnr`, max_val=1).

    An exact reconstruction gives +inf.
    """
    reference, reconstruction = _pair(reference, reconstruction)
    return tf.image.psnr(reference, reconstruction, max_val=1.0).numpy()


# Traced once per image shape: eagerly, `tf.image.ssim` runs dozens of small
# ops, 12 ms a CIFAR-10 image, which was a fifth of `attack_many`'s time for
# 32 short attacks on LeNet.
_ssim = tf.function(
    lambda reference, reconstruction, size: tf.image.ssim(
        reference, reconstruction, max_val=1.0, filter_size=size
    ),
    autograph=False,
    reduce_retracing=True,
)


def ssim(reference, reconstruction) -> np.ndarray:
    """Structural similarity per image in [-1, 1] (`tf.image.ssim`, max_val=1).

    The standard 11x11 Gaussian window is shrunk for images smaller than 11
    pixels on a side (e.g. 8x8 digits), where TF's default would fail.
    """
    reference, reconstruction = _pair(reference, reconstruction)
    size = min(11, int(reference.shape[1]), int(reference.shape[2]))
    return _ssim(reference, reconstruction, size).numpy()


def label_accuracy(true_labels, predicted_labels) -> float:
    """Fraction of equal integer labels; both shaped `[batch]`."""
    true_labels = np.asarray(true_labels).reshape(-1)
    predicted_labels = np.asarray(predicted_labels).reshape(-1)
    if true_labels.shape != predicted_labels.shape:
        raise ValueError(
            f"{true_labels.size} true labels but {predicted_labels.size} predicted labels."
        )
    return float(np.mean(true_labels == predicted_labels))


def image_metrics(reference, reconstruction) -> dict[str, float]:
    """Mean MSE, PSNR (dB) and SSIM over a batch, as plain floats."""
    return {
        "mse": float(np.mean(mse(reference, reconstruction))),
        "psnr": float(np.mean(psnr(reference, reconstruction))),
        "ssim": float(np.mean(ssim(reference, reconstruction))),
    }


# -- batches: match, then score ------------------------------------------------

PSNR_CAP_DB = 100.0  # an exact match (MSE 0) is reported as this, labelled


def match(reference, reconstruction) -> np.ndarray:
    """Which reconstructed image goes with each true image.

    A batch is recovered as a set: the attack does not know the batch's
    order. The assignment minimising the total per-pair MSE
    (`scipy.optimize.linear_sum_assignment`, the Hungarian method, as
    breaching's analysis does) pairs them before scoring.

    Args:
      reference: `[batch, h, w, c]` true images in [0, 1].
      reconstruction: `[batch, h, w, c]` reconstructed images.

    Returns:
      `[batch]` int64: `reconstruction[order[i]]` is matched with `reference[i]`.
    """
    from scipy.optimize import linear_sum_assignment

    reference, reconstruction = _pair(reference, reconstruction)
    a = tf.reshape(reference, (reference.shape[0], -1)).numpy().astype(np.float64)
    b = tf.reshape(reconstruction, (reconstruction.shape[0], -1)).numpy().astype(np.float64)
    costs = ((a[:, None, :] - b[None, :, :]) ** 2).mean(axis=-1)  # [true, reconstructed]
    rows, columns = linear_sum_assignment(costs)
    return columns[np.argsort(rows)].astype(np.int64)


def label_multiset_accuracy(true_labels, predicted_labels) -> float:
    """Fraction of the true labels recovered, as multisets (order does not matter).

    `|true ∩ predicted| / batch` with multiplicities: [3, 3, 5] against
    [5, 3, 1] scores 2/3.
    """
    from collections import Counter

    true_labels = np.asarray(true_labels).reshape(-1).tolist()
    predicted_labels = np.asarray(predicted_labels).reshape(-1).tolist()
    if len(true_labels) != len(predicted_labels):
        raise ValueError(
            f"{len(true_labels)} true labels but {len(predicted_labels)} predicted labels."
        )
    common = Counter(true_labels) & Counter(predicted_labels)
    return float(sum(common.values()) / len(true_labels))


def evaluate(reference, reconstruction, true_labels=None, predicted_labels=None) -> dict:
    """Matched reconstruction quality of a batch, as strict-JSON-safe numbers.

    Args:
      reference: `[batch, h, w, c]` true images in [0, 1].
      reconstruction: `[batch, h, w, c]` reconstructed images in [0, 1].
      true_labels, predicted_labels: optional `[batch]` ints.

    Returns:
      A dict: `mse`, `psnr` (dB), `ssim` (means over the batch after matching),
      `psnr_per_image`, `mse_per_image`, `ssim_per_image` (true image order),
      `order` (the matching), `psnr_capped_at` (an exact match's PSNR, reported
      as `PSNR_CAP_DB` rather than infinity) and, with labels,
      `label_accuracy` (as multisets).
    """
    order = match(reference, reconstruction)
    matched = np.asarray(reconstruction)[order]
    per_mse = mse(reference, matched)
    per_psnr = np.minimum(psnr(reference, matched), PSNR_CAP_DB)
    per_ssim = ssim(reference, matched)
    result = {
        "mse": float(np.mean(per_mse)),
        "psnr": float(np.mean(per_psnr)),
        "ssim": float(np.mean(per_ssim)),
        "mse_per_image": [float(v) for v in per_mse],
        "psnr_per_image": [float(v) for v in per_psnr],
        "ssim_per_image": [float(v) for v in per_ssim],
        "order": [int(i) for i in order],
        "psnr_capped_at": PSNR_CAP_DB,
    }
    if true_labels is not None and predicted_labels is not None:
        result["label_accuracy"] = label_multiset_accuracy(true_labels, predicted_labels)
    return result


def check_ground_truth(ground_truth, victim, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Validates `(images, labels)` given for scoring an attack on `victim`.

    Raises:
      ValueError: shapes that do not match the victim or the batch, or images
        that are not in [0, 1] (e.g. 0..255 pixels, which would score PSNR
        about -43 dB without complaint).
    """
    images, labels = ground_truth
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim == 3:
        images = images[np.newaxis]
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(victim.image_shape):
        raise ValueError(
            f"ground-truth images shaped {list(images.shape)} do not match the victim's "
            f"[batch, {', '.join(map(str, victim.image_shape))}]."
        )
    if len(images) != batch_size or len(labels) != batch_size:
        raise ValueError(
            f"ground truth holds {len(images)} images and {len(labels)} labels for a batch "
            f"of {batch_size}; pass the shared batch itself."
        )
    if images.size and (images.min() < 0.0 or images.max() > 1.0 or not np.isfinite(images).all()):
        raise ValueError(
            f"ground-truth images must be in [0, 1]; they range over [{images.min():.3g}, "
            f"{images.max():.3g}]. Divide 0..255 pixels by 255."
        )
    return images, labels
