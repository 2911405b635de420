"""Victim models: the Keras classifiers whose shared gradients are attacked.

`as_victim(model)` wraps any functional or Sequential Keras classifier;
`get_victim(name, input_shape, num_classes)` builds one of tfleak's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tfleak.models import convnet as _convnet
from tfleak.models import resnet as _resnet
from tfleak.models.batch_norm import BATCH_NORM_MODES, AttackBatchNorm
from tfleak.models.classic import MLP, LeNet, SingleDense, dense, lenet, mlp
from tfleak.models.loss import flatten_gradient, soft_cross_entropy
from tfleak.models.resnet import resnet18, resnet20, resnet32
from tfleak.models.victim import Victim
from tfleak.models.wrap import as_victim

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
    "resnet18",
    "resnet20",
    "resnet32",
    "VICTIMS",
    "get_victim",
    "trained_victim",
]

# name -> builder(input_shape, num_classes, seed=...) -> keras.Model
VICTIMS: dict[str, Callable] = {
    "dense": dense,
    "mlp": mlp,
    "lenet": lenet,
    "convnet": lambda shape, classes, seed=0: _convnet.convnet(classes, shape, seed=seed),
    "resnet20": lambda shape, classes, seed=0: _resnet.resnet(20, classes, shape, seed=seed),
    "resnet32": lambda shape, classes, seed=0: _resnet.resnet(32, classes, shape, seed=seed),
    "resnet18": lambda shape, classes, seed=0: _resnet.resnet18(classes, shape, seed=seed),
}


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


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def trained_victim(name: str = "resnet20", batch_norm: str = "train") -> Victim:
    """A victim trained on CIFAR-10 (JPEG), from the weights shipped with tfleak.

    The weights were written by `benchmarks/train_victim.py` (its command and
    the measured test accuracy are in `tfleak/models/weights/<name>_cifar10.json`).

    Args:
      name: a key of `VICTIMS` with shipped weights (e.g. 'resnet20').
      batch_norm: 'train' or 'eval' (see `as_victim`).

    Raises:
      FileNotFoundError: no shipped weights for `name` (the message gives the
        command that trains them).
    """
    path = WEIGHTS_DIR / f"{name}_cifar10.weights.h5"
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained weights for {name!r} at {path}; train them with `python "
            f"benchmarks/train_victim.py --model={name} --data_dir=<folder with cifar10/>`."
        )
    model = VICTIMS[name]((32, 32, 3), 10)
    model.load_weights(str(path))
    return as_victim(model, batch_norm=batch_norm)
