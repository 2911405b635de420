"""Reconstruction quality: MSE, PSNR, SSIM, and label accuracy.

All image metrics take images as float32 in [0, 1], shaped
`[batch, height, width, channels]` (a single `[height, width, channels]` image
is promoted to a batch of one), and return one value per image. PSNR and SSIM
are TensorFlow's own `tf.image.psnr` / `tf.image.ssim` with `max_val=1`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["mse", "psnr", "ssim", "label_accuracy", "image_metrics"]


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


def ssim(reference, reconstruction) -> np.ndarray:
    """Structural similarity per image in [-1, 1] (`tf.image.ssim`, max_val=1).

    The standard 11x11 Gaussian window is shrunk for images smaller than 11
    pixels on a side (e.g. 8x8 digits), where TF's default would fail.
    """
    reference, reconstruction = _pair(reference, reconstruction)
    size = min(11, int(reference.shape[1]), int(reference.shape[2]))
    return tf.image.ssim(reference, reconstruction, max_val=1.0, filter_size=size).numpy()


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
