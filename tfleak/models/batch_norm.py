"""Batch normalisation as an attack evaluates it: never updating the moving statistics.

`as_victim` replaces every `BatchNormalization` layer of a functional or
Sequential clone by an `AttackBatchNorm`, which normalises with the batch's own
statistics (`batch_norm='train'`: the client computed its gradient in training
mode) or the moving statistics (`batch_norm='eval'`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["BATCH_NORM_MODES", "AttackBatchNorm", "reduction_axes"]

BATCH_NORM_MODES = ("train", "eval")


class AttackBatchNorm(keras.layers.BatchNormalization):
    """Batch normalisation that never updates its moving statistics.

    Args:
      use_batch_statistics: normalise with the batch's own mean and (biased)
        variance, as a client training in training mode does; False uses the
        moving statistics (inference mode).
      **kwargs: as `keras.layers.BatchNormalization`.
    """

    def __init__(self, use_batch_statistics: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.use_batch_statistics = bool(use_batch_statistics)

    def get_config(self):
        return {**super().get_config(), "use_batch_statistics": self.use_batch_statistics}

    def call(self, inputs, training=None, mask=None):
        del training, mask
        axes = reduction_axes(inputs, self.axis)
        if self.use_batch_statistics:
            mean, variance = tf.nn.moments(inputs, axes)
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            variance = tf.convert_to_tensor(self.moving_variance)
        gamma = None if self.gamma is None else tf.convert_to_tensor(self.gamma)
        beta = None if self.beta is None else tf.convert_to_tensor(self.beta)
        return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, self.epsilon)


def reduction_axes(inputs, axis) -> list:
    """The axes of `inputs` that batch statistics reduce over: all but the channel `axis`."""
    rank = len(inputs.shape)
    channel_axes = [a % rank for a in (axis if isinstance(axis, (list, tuple)) else [axis])]
    return [a for a in range(rank) if a not in channel_axes]
