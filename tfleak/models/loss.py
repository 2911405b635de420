"""The client's loss, and gradients as one row.

The loss is the soft-label cross entropy of DLG (Zhu et al., 2019, code:
`cross_entropy_for_onehot`), written with `log_softmax` so that the gradient of
the gradient reaches the labels. (TF's fused
`softmax_cross_entropy_with_logits`, and the Keras losses built on it, have no
second-order gradient with respect to the labels: a dummy label optimised
through them never moves.)
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

__all__ = ["soft_cross_entropy", "flatten_gradient"]


def soft_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Cross entropy of soft labels, per example, twice differentiable in both.

    Args:
      labels: `[batch, classes]` float probabilities (rows sum to 1; one-hot
        for hard labels).
      logits: `[batch, classes]` float unnormalised scores.

    Returns:
      `[batch]` float32, `-sum_c labels[:, c] * log_softmax(logits)[:, c]`.
    """
    return -tf.reduce_sum(labels * tf.nn.log_softmax(logits, axis=-1), axis=-1)


def flatten_gradient(gradient: Sequence[tf.Tensor]) -> tf.Tensor:
    """Concatenates per-variable gradients into a `[1, num_parameters]` row."""
    return tf.concat([tf.reshape(g, (1, -1)) for g in gradient], axis=1)
