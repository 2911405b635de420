"""Checking what a victim is given: images, labels and a gradient, with messages that
say how to fix them."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["check_gradient", "check_images", "labels_to_probabilities"]


def labels_to_probabilities(y, num_classes: int) -> tf.Tensor:
    """Integer labels `[batch]` -> one-hot; probabilities `[batch, num_classes]` pass.

    Raises:
      ValueError: an integer label outside [0, num_classes), or a
        probability tensor of the wrong width.
    """
    y = tf.convert_to_tensor(y)
    if y.dtype.is_integer:
        if y.shape.rank != 1:
            raise ValueError(f"integer labels must be shaped [batch]; got {y.shape}.")
        if tf.executing_eagerly():
            bad = tf.boolean_mask(y, (y < 0) | (y >= num_classes)).numpy()
            if bad.size:
                raise ValueError(
                    f"label {int(bad[0])} is outside the model's classes "
                    f"0..{num_classes - 1}; pass a label in that range or build "
                    "the victim with more classes (num_classes)."
                )
        return tf.one_hot(y, num_classes)
    if y.shape.rank != 2 or y.shape[-1] != num_classes:
        raise ValueError(f"soft labels must be shaped [batch, {num_classes}]; got {y.shape}.")
    return tf.cast(y, tf.float32)


def check_images(x, image_shape: tuple, name: str) -> tf.Tensor:
    """Returns `x` as float32 if it is a batch of images shaped `image_shape`.

    Args:
      x: `[batch, height, width, channels]` float images in [0, 1].
      image_shape: `(height, width, channels)` the victim takes.
      name: the victim's name, for the message.

    Raises:
      ValueError: integer pixels (e.g. uint8 0..255) or the wrong shape.
    """
    if not tf.is_tensor(x):
        x = np.asarray(x)
    if (
        x.dtype in (np.uint8, tf.uint8)
        or getattr(x.dtype, "is_integer", False)
        or (isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer))
    ):
        raise ValueError(
            f"images must be float32 in [0, 1]; got integer pixels ({x.dtype}). "
            "Divide by 255 (or use tfleak.data's loaders, which do)."
        )
    x = tf.convert_to_tensor(x, tf.float32)
    if x.shape.rank != 4 or tuple(x.shape[1:]) != image_shape:
        raise ValueError(
            f"{name} takes images shaped [batch, {', '.join(map(str, image_shape))}]"
            f"; got {list(x.shape)}. Resize the images (e.g. --image_size) or build the "
            "victim for this shape."
        )
    return x


def check_gradient(gradient: Sequence, variables: Sequence, name: str) -> list[tf.Tensor]:
    """Returns `gradient` as float32 tensors if it matches `variables` (a victim's trainable ones).

    Raises:
      ValueError: wrong number of tensors, or a tensor of the wrong shape.
    """
    gradient = list(gradient)
    if len(gradient) != len(variables):
        raise ValueError(
            f"the gradient has {len(gradient)} tensors but {name} has "
            f"{len(variables)} trainable variables; pass victim.gradient(x, y) of "
            "this very model."
        )
    checked = []
    for g, v in zip(gradient, variables):
        g = tf.convert_to_tensor(g, dtype=tf.float32)
        if tuple(g.shape) != tuple(v.shape):
            raise ValueError(
                f"gradient tensor of shape {tuple(g.shape)} does not match variable "
                f"{v.path} of shape {tuple(v.shape)}; pass victim.gradient(x, y) of this "
                "model."
            )
        checked.append(g)
    return checked
