"""Registration of reconstructions from different seeds, for GradInversion's group consistency.

GradInversion (Yin et al., CVPR 2021, sec. 3.3) optimises a group G of seeds
together; seeds that recover the same image at different positions would blur
their pixel-wise mean, so each seed's image is first registered (aligned) to
that mean, and the mean of the registered images is the consensus the group
prior pulls every seed towards. The paper registers with an optical-flow
method (RANSAC-Flow). tfleak registers by **translation**: each image is
shifted circularly by the integer offset that maximises its cross-correlation
with the reference (computed for every offset at once by FFT), within
`max_shift` pixels.

What translation cannot align: rotation, scaling, flips, non-rigid
deformation, and changes of colour or contrast; content shifted past a border
wraps around to the other (circular shift); offsets beyond `max_shift`; and,
within a batch, images that two seeds placed in different slots (the slots
are compared one to one).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

__all__ = ["REGISTRATIONS", "translation_shifts", "shift_images", "register", "group_consensus"]

REGISTRATIONS = ("none", "translation")


def _check(images: tf.Tensor, reference: tf.Tensor) -> None:
    if images.shape.rank is not None and images.shape.rank < 3:
        raise ValueError(f"images must be [..., height, width, channels]; got {images.shape}.")
    if images.shape[-3:] != reference.shape[-3:]:
        raise ValueError(
            f"images {images.shape} and reference {reference.shape} differ in "
            "[height, width, channels]."
        )


def translation_shifts(
    images: tf.Tensor, reference: tf.Tensor, max_shift: Optional[int] = None
) -> tf.Tensor:
    """The circular shift that best aligns each image with the reference.

    Maximises the cross-correlation `c(s) = sum_p ref(p) img(p - s)` of
    mean-subtracted images (summed over channels) over all offsets `s`,
    by FFT: `c = IFFT(conj(F(img)) F(ref))`.

    Args:
      images: `[..., h, w, c]` float32.
      reference: broadcastable to `images`, `[..., h, w, c]` float32.
      max_shift: largest offset considered along each axis, in pixels (None:
        every offset).

    Returns:
      `[..., 2]` int32 `(dy, dx)`, each in `[-h//2, h//2]` / `[-w//2, w//2]`;
      `shift_images(images, shifts)` aligns the images with the reference.

    Raises:
      ValueError: images and reference differ in height, width or channels.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    reference = tf.convert_to_tensor(reference, tf.float32)
    _check(images, reference)
    reference = tf.broadcast_to(reference, tf.shape(images))
    height, width = images.shape[-3], images.shape[-2]

    def spectrum(x):
        x = x - tf.reduce_mean(x, axis=[-3, -2], keepdims=True)
        channels_first = tf.experimental.numpy.moveaxis(x, -1, -3)  # [..., c, h, w]
        return tf.signal.fft2d(tf.complex(channels_first, tf.zeros_like(channels_first)))

    correlation = tf.math.real(
        tf.signal.ifft2d(tf.math.conj(spectrum(images)) * spectrum(reference))
    )
    correlation = tf.reduce_sum(correlation, axis=-3)  # [..., h, w]
    # Offsets 0..h-1 as signed offsets -h/2..h/2.
    dy = (tf.range(height) + height // 2) % height - height // 2
    dx = (tf.range(width) + width // 2) % width - width // 2
    if max_shift is not None:
        allowed = (tf.abs(dy)[:, None] <= max_shift) & (tf.abs(dx)[None, :] <= max_shift)
        lowest = tf.reduce_min(correlation) - 1.0
        correlation = tf.where(allowed, correlation, lowest)
    flat = tf.reshape(correlation, tf.concat([tf.shape(correlation)[:-2], [-1]], 0))
    best = tf.argmax(flat, axis=-1, output_type=tf.int32)
    return tf.stack([tf.gather(dy, best // width), tf.gather(dx, best % width)], axis=-1)


def shift_images(images: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
    """Shifts every image circularly: `out[i, j] = img[(i - dy) % h, (j - dx) % w]`.

    Args:
      images: `[..., h, w, c]` float32.
      shifts: `[..., 2]` int32 `(dy, dx)` per image.

    Returns:
      `[..., h, w, c]`, the shifted images (`tf.roll` per image).
    """
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    height, width = images.shape[-3], images.shape[-2]
    flat = tf.reshape(images, tf.concat([[-1], shape[-3:]], 0))
    offsets = tf.reshape(tf.cast(shifts, tf.int32), [-1, 2])
    rows = (tf.range(height)[None, :] - offsets[:, :1]) % height
    cols = (tf.range(width)[None, :] - offsets[:, 1:]) % width
    flat = tf.gather(flat, rows, axis=1, batch_dims=1)
    flat = tf.gather(flat, cols, axis=2, batch_dims=1)
    return tf.reshape(flat, shape)


def register(
    images: tf.Tensor, reference: tf.Tensor, max_shift: Optional[int] = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """`(registered images [..., h, w, c], shifts [..., 2])`: each image aligned with the reference.

    See `translation_shifts` for the arguments and what is raised.
    """
    shifts = translation_shifts(images, reference, max_shift)
    return shift_images(images, shifts), shifts


def group_consensus(
    data: tf.Tensor, registration: str = "translation", max_shift: Optional[int] = None
) -> tf.Tensor:
    """GradInversion's consensus of a group of seeds, `[batch, h, w, c]`.

    The pixel-wise mean of the seeds' images; with `registration='translation'`
    each seed's image is first registered to that mean and the consensus is
    the mean of the registered images (Yin et al. 2021, sec. 3.3).

    Args:
      data: `[seeds, batch, h, w, c]` float32, the seeds' dummy data.
      registration: 'none' (the plain mean) or 'translation'.
      max_shift: largest offset for registration, in pixels.

    Raises:
      ValueError: an unknown registration.
    """
    if registration not in REGISTRATIONS:
        raise ValueError(
            f"unknown registration {registration!r}; choose one of {', '.join(REGISTRATIONS)}."
        )
    mean = tf.reduce_mean(data, axis=0)
    if registration == "none":
        return mean
    registered, _ = register(data, mean[None], max_shift)
    return tf.reduce_mean(registered, axis=0)
