"""The DLG paper's small victims: one Dense layer, an MLP, and its LeNet.

Each builder returns a functional `keras.Model` (images in [0, 1] -> logits);
the capitalised names return it wrapped as a `Victim`, ready to share a
gradient.
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfleak.models.checks import check_classifier_shape
from tfleak.models.victim import Victim
from tfleak.models.wrap import as_victim

__all__ = ["dense", "mlp", "lenet", "SingleDense", "MLP", "LeNet"]


def _initializer(name: str, seed: int):
    if name == "uniform":
        # The DLG reference code's `weights_init`: every weight and bias
        # uniform in [-0.5, 0.5].
        return (
            keras.initializers.RandomUniform(-0.5, 0.5, seed=seed),
            keras.initializers.RandomUniform(-0.5, 0.5, seed=seed + 1),
        )
    if name == "keras":
        return keras.initializers.GlorotUniform(seed=seed), keras.initializers.Zeros()
    raise ValueError(f"unknown initializer {name!r}; choose 'uniform' (DLG) or 'keras'.")


def _input(input_shape: Sequence[int], num_classes: int):
    return keras.Input(check_classifier_shape(input_shape, num_classes), name="images")


def _classifier(num_classes, initializer, seed):
    kernel, bias = _initializer(initializer, seed)
    return keras.layers.Dense(
        int(num_classes), kernel_initializer=kernel, bias_initializer=bias, name="classifier"
    )


def dense(input_shape, num_classes, initializer="uniform", seed=0) -> keras.Model:
    """One Dense layer: `logits = flatten(x) W + b`."""
    inputs = _input(input_shape, num_classes)
    outputs = _classifier(num_classes, initializer, seed)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, outputs, name="dense")


def mlp(
    input_shape, num_classes, hidden_units=(256,), initializer="uniform", seed=0
) -> keras.Model:
    """A multilayer perceptron with sigmoid hidden layers (twice differentiable).

    Args:
      hidden_units: width of each hidden layer.
    """
    inputs = _input(input_shape, num_classes)
    h = keras.layers.Flatten()(inputs)
    for i, units in enumerate(hidden_units):
        kernel, bias = _initializer(initializer, seed + 2 * i)
        h = keras.layers.Dense(
            units, "sigmoid", kernel_initializer=kernel, bias_initializer=bias, name=f"hidden{i}"
        )(h)
    outputs = _classifier(num_classes, initializer, seed + 2 * len(hidden_units))(h)
    return keras.Model(inputs, outputs, name="mlp")


def lenet(input_shape, num_classes, initializer="uniform", seed=0) -> keras.Model:
    """The LeNet of the DLG paper's code (Zhu et al., 2019).

    Three 5x5 convolutions of 12 channels with strides 2, 2, 1, each with zero
    padding 2 on every side and a sigmoid, then one Dense layer. The padding is
    explicit because TF's `'same'` pads stride-2 convolutions asymmetrically,
    which is not the published network. For a 32x32 input the flattened code
    has 8 * 8 * 12 = 768 features, as in the reference.

    Args:
      initializer: 'uniform' (every weight and bias uniform in [-0.5, 0.5], as
        the DLG reference initialises its victim) or 'keras' (Glorot, zeros).
      seed: seed of the initialisation.
    """
    inputs = _input(input_shape, num_classes)
    h = inputs
    for i, stride in enumerate((2, 2, 1)):
        kernel, bias = _initializer(initializer, seed + 2 * i)
        h = keras.layers.ZeroPadding2D(2, name=f"pad{i}")(h)
        h = keras.layers.Conv2D(
            12,
            5,
            strides=stride,
            activation="sigmoid",
            kernel_initializer=kernel,
            bias_initializer=bias,
            name=f"conv{i}",
        )(h)
    h = keras.layers.Flatten()(h)
    outputs = _classifier(num_classes, initializer, seed + 6)(h)
    return keras.Model(inputs, outputs, name="lenet")


def SingleDense(input_shape, num_classes, initializer="uniform", seed=0) -> Victim:  # noqa: N802
    """`dense(...)` as a `Victim`."""
    return as_victim(dense(input_shape, num_classes, initializer, seed))


def MLP(input_shape, num_classes, hidden_units=(256,), initializer="uniform", seed=0) -> Victim:  # noqa: N802
    """`mlp(...)` as a `Victim`."""
    return as_victim(mlp(input_shape, num_classes, hidden_units, initializer, seed))


def LeNet(input_shape, num_classes, initializer="uniform", seed=0) -> Victim:  # noqa: N802
    """`lenet(...)` as a `Victim` (the DLG paper's victim)."""
    return as_victim(lenet(input_shape, num_classes, initializer, seed))
