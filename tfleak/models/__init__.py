"""Victim models: the Keras classifiers whose shared gradients are attacked.

`as_victim(model)` wraps any functional or Sequential Keras classifier;
`get_victim(name, input_shape, num_classes)` builds one of tfleak's own.
"""

from __future__ import annotations

from typing import Callable

from tfleak.models.classic import MLP, LeNet, SingleDense, dense, lenet, mlp
from tfleak.models.victim import (
    BATCH_NORM_MODES,
    AttackBatchNorm,
    Victim,
    as_victim,
    flatten_gradient,
    soft_cross_entropy,
)

__all__ = [
    "BATCH_NORM_MODES",
    "AttackBatchNorm",
    "Victim",
    "as_victim",
    "flatten_gradient",
    "soft_cross_entropy",
    "dense",
    "mlp",
    "lenet",
    "SingleDense",
    "MLP",
    "LeNet",
    "VICTIMS",
    "get_victim",
]

# name -> builder(input_shape, num_classes, seed=..., **kwargs) -> keras.Model
VICTIMS: dict[str, Callable] = {"dense": dense, "mlp": mlp, "lenet": lenet}


def get_victim(
    name: str, input_shape, num_classes: int, batch_norm: str = "train", **kwargs
) -> Victim:
    """Builds the victim registered as `name` (a key of `VICTIMS`).

    Args:
      name: e.g. 'lenet'.
      input_shape: `(height, width, channels)`.
      num_classes: classes.
      batch_norm: 'train' or 'eval' (see `as_victim`).
      **kwargs: passed to the builder (e.g. `seed`).

    Raises:
      ValueError: `name` is not registered.
    """
    if name not in VICTIMS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(VICTIMS))}.")
    return as_victim(VICTIMS[name](input_shape, num_classes, **kwargs), batch_norm=batch_norm)
