"""DP-SGD's Gaussian sum query: clip every record, sum, add Gaussian noise.

The primitive under both of tfleak's DP uses (the DP-SGD defence of a shared
update and DP-Adam training of the split target), with tensorflow-privacy's
`GaussianSumQuery` semantics (Abadi et al. 2016, alg. 1):

    sum_i clip(g_i, C) + N(0, sigma^2 I),   clip(g, C) = g * min(1, C / ||g||_2),

where a record `g_i` is one example's (or one microbatch's) gradient over all
variables together, `C` the `l2_norm_clip` and `sigma` the noise standard
deviation (`noise_multiplier * l2_norm_clip`). Dividing by the number of
records gives DP-SGD's update.
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

__all__ = ["clip_records", "clipped_sum", "gaussian_sum"]


def clip_records(records: Sequence[tf.Tensor], l2_norm_clip: float) -> list[tf.Tensor]:
    """Clips every record to global L2 norm at most `l2_norm_clip`.

    Args:
      records: one float32 tensor per variable, each `[num_records, *variable.shape]`:
        row `i` of every tensor together is record `i`.
      l2_norm_clip: C > 0, in gradient units.

    Returns:
      The records, each row scaled by `min(1, C / ||record||_2)`.
    """
    records = [tf.convert_to_tensor(r, tf.float32) for r in records]
    squares = tf.add_n(
        [tf.reduce_sum(tf.reshape(tf.square(r), (tf.shape(r)[0], -1)), axis=1) for r in records]
    )
    norms = tf.sqrt(squares)  # [num_records]
    # tf.clip_by_global_norm's factor: C / max(norm, C).
    scale = l2_norm_clip / tf.maximum(norms, l2_norm_clip)
    return [r * tf.reshape(scale, [-1] + [1] * (r.shape.rank - 1)) for r in records]


def clipped_sum(records: Sequence[tf.Tensor], l2_norm_clip: float) -> list[tf.Tensor]:
    """`sum_i clip(g_i, C)`: one tensor per variable, of the variable's shape."""
    return [tf.reduce_sum(r, axis=0) for r in clip_records(records, l2_norm_clip)]


def gaussian_sum(
    records: Sequence[tf.Tensor],
    l2_norm_clip: float,
    stddev: float,
    seed: Optional[int] = None,
) -> list[tf.Tensor]:
    """`sum_i clip(g_i, C) + N(0, stddev^2 I)` (tensorflow-privacy's `GaussianSumQuery`).

    Args:
      records: as `clip_records`.
      l2_norm_clip: C > 0.
      stddev: the noise standard deviation, >= 0 (`noise_multiplier * C`).
      seed: an int for reproducible noise (stateless draws, one stream per
        variable); None draws from TF's global generator.

    Returns:
      One float32 tensor per variable, of the variable's shape.
    """
    total = clipped_sum(records, l2_norm_clip)
    if stddev == 0:
        return total
    noised = []
    for i, t in enumerate(total):
        if seed is None:
            noise = tf.random.normal(tf.shape(t), stddev=stddev)
        else:
            noise = stddev * tf.random.stateless_normal(tf.shape(t), seed=[int(seed), i])
        noised.append(t + noise)
    return noised
