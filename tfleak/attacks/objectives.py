"""Gradient-matching objectives: how far a dummy gradient is from the observed one.

A registry of distances between two gradients, each a list of per-variable
tensors of equal structure:

- `l2`: the squared Euclidean distance summed over variables,
  `sum_l ||g'_l - g_l||^2` (DLG, Zhu et al. 2019, eq. 4).
- `cosine`: one minus the cosine similarity of the concatenated gradients,
  `1 - <g', g> / (||g'|| ||g||)` (Inverting Gradients, Geiping et al. 2020,
  eq. 4), insensitive to the gradient's scale.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

__all__ = ["GRADIENT_DISTANCES", "get_gradient_distance", "squared_l2", "cosine_distance"]


def squared_l2(dummy: Sequence[tf.Tensor], observed: Sequence[tf.Tensor]) -> tf.Tensor:
    """`sum_l ||dummy_l - observed_l||^2`, a float32 scalar >= 0 (DLG eq. 4)."""
    return tf.add_n([tf.reduce_sum(tf.square(d - o)) for d, o in zip(dummy, observed)])


def cosine_distance(dummy: Sequence[tf.Tensor], observed: Sequence[tf.Tensor]) -> tf.Tensor:
    """`1 - cos(dummy, observed)` over all variables, a float32 scalar in [0, 2]."""
    dot = tf.add_n([tf.reduce_sum(d * o) for d, o in zip(dummy, observed)])
    dummy_norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(d)) for d in dummy]))
    observed_norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(o)) for o in observed]))
    return 1.0 - dot / (dummy_norm * observed_norm + 1e-12)


GRADIENT_DISTANCES: dict[str, Callable] = {"l2": squared_l2, "cosine": cosine_distance}


def get_gradient_distance(name: str) -> Callable:
    """Returns the distance registered as `name`.

    Raises:
      ValueError: `name` is not one of `GRADIENT_DISTANCES`.
    """
    if name not in GRADIENT_DISTANCES:
        raise ValueError(
            f"unknown gradient distance {name!r}; choose one of "
            f"{', '.join(sorted(GRADIENT_DISTANCES))}."
        )
    return GRADIENT_DISTANCES[name]
