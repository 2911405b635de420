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

import math
from typing import Optional, Sequence

import tensorflow as tf

__all__ = ["clip_records", "clipped_sum", "gaussian_sum"]


def _check_clip(l2_norm_clip: float) -> None:
    if not l2_norm_clip > 0:  # Also refuses NaN.
        raise ValueError(f"l2_norm_clip must be > 0 (math.inf clips nothing); got {l2_norm_clip}.")


def clip_records(records: Sequence[tf.Tensor], l2_norm_clip: float) -> list[tf.Tensor]:
    """Clips every record to global L2 norm at most `l2_norm_clip`.

    Args:
      records: one float32 tensor per variable, each `[num_records, *variable.shape]`:
        row `i` of every tensor together is record `i`.
      l2_norm_clip: C > 0, in gradient units; `math.inf` leaves the records as
        they are.

    Returns:
      The records, each row scaled by `min(1, C / ||record||_2)` (a zero record
      stays zero).

    Raises:
      ValueError: `l2_norm_clip` is not > 0.
    """
    _check_clip(l2_norm_clip)
    records = [tf.convert_to_tensor(r, tf.float32) for r in records]
    if math.isinf(l2_norm_clip):
        return records
    squares = tf.add_n(
        [tf.reduce_sum(tf.reshape(tf.square(r), (tf.shape(r)[0], -1)), axis=1) for r in records]
    )
    norms = tf.sqrt(squares)  # [num_records]
    # tf.clip_by_global_norm's factor, C * min(1 / norm, 1 / C): 1 for a zero record.
    scale = l2_norm_clip * tf.minimum(1.0 / norms, 1.0 / l2_norm_clip)
    return [r * tf.reshape(scale, [-1] + [1] * (r.shape.rank - 1)) for r in records]


def clipped_sum(records: Sequence[tf.Tensor], l2_norm_clip: float) -> list[tf.Tensor]:
    """`sum_i clip(g_i, C)`: one tensor per variable, of the variable's shape.

    Args and Raises: as `clip_records`.
    """
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
      l2_norm_clip: C > 0 (`math.inf`: no clipping).
      stddev: the noise standard deviation, >= 0 and finite
        (`noise_multiplier * C`); 0 adds no noise.
      seed: an int for reproducible noise (stateless draws, one stream per
        variable: the same seed gives the same noise on every call); None
        draws from TF's global generator (a new draw on every run of the op).

    Returns:
      One float32 tensor per variable, of the variable's shape.

    Raises:
      ValueError: `l2_norm_clip` not > 0, or `stddev` negative or not finite.
    """
    if not 0 <= stddev < math.inf:
        raise ValueError(f"stddev must be >= 0 and finite; got {stddev}.")
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
