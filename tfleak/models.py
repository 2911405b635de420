"""Victim models: subclassed Keras classifiers that expose the gradient they share.

In distributed and federated training a client shares `gradient(x, y)`, the
gradient of its training loss on a private batch with respect to every
trainable variable. A victim returns logits; its loss is the soft-label cross
entropy of DLG (Zhu et al., 2019, code: `cross_entropy_for_onehot`), written
with `tf.nn.log_softmax` so that the gradient of the gradient reaches the
labels. (TF's fused `softmax_cross_entropy_with_logits`, and the Keras losses
built on it, have no second-order gradient with respect to the labels: a dummy
label optimised through them never moves.)
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf
from tensorflow import keras

__all__ = [
    "soft_cross_entropy",
    "Victim",
    "SingleDense",
    "MLP",
    "LeNet",
    "VICTIMS",
    "get_victim",
]


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


class Victim(keras.Model):
    """A classifier whose training-loss gradient is what a client shares.

    Subclasses build their layers in `__init__`, name their last Dense layer
    `self.classifier`, and call `self._build_victim()` at the end.

    Args:
      input_shape: `(height, width, channels)` of one input image.
      num_classes: number of classes (>= 2).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, **kwargs):
        super().__init__(**kwargs)
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(
                f"input_shape must be (height, width, channels) of positive sizes; "
                f"got {input_shape}."
            )
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2; got {num_classes}.")
        self.image_shape = input_shape
        self.num_classes = int(num_classes)

    def _build_victim(self) -> None:
        self(tf.zeros((1, *self.image_shape)))

    @property
    def classifier_kernel_index(self) -> int:
        """Index in `trainable_variables` of the last Dense layer's kernel."""
        kernel = self.classifier.kernel
        for i, variable in enumerate(self.trainable_variables):
            if variable is kernel:
                return i
        raise ValueError("the classifier's kernel is not trainable; label restoration needs it.")

    def labels_to_probabilities(self, y) -> tf.Tensor:
        """Integer labels `[batch]` -> one-hot; probabilities `[batch, classes]` pass.

        Raises:
          ValueError: an integer label outside [0, num_classes), or a
            probability tensor of the wrong width.
        """
        y = tf.convert_to_tensor(y)
        if y.dtype.is_integer:
            if y.shape.rank != 1:
                raise ValueError(f"integer labels must be shaped [batch]; got {y.shape}.")
            if tf.executing_eagerly():
                bad = tf.boolean_mask(y, (y < 0) | (y >= self.num_classes)).numpy()
                if bad.size:
                    raise ValueError(
                        f"label {int(bad[0])} is outside the model's classes "
                        f"0..{self.num_classes - 1}; pass a label in that range or build "
                        "the victim with more classes (num_classes)."
                    )
            return tf.one_hot(y, self.num_classes)
        if y.shape.rank != 2 or y.shape[-1] != self.num_classes:
            raise ValueError(
                f"soft labels must be shaped [batch, {self.num_classes}]; got {y.shape}."
            )
        return tf.cast(y, tf.float32)

    def loss_on(self, x: tf.Tensor, y) -> tf.Tensor:
        """Mean soft cross entropy of the batch (a scalar), as the client trains."""
        probabilities = self.labels_to_probabilities(y)
        return tf.reduce_mean(soft_cross_entropy(probabilities, self(x, training=False)))

    def gradient(self, x: tf.Tensor, y) -> list[tf.Tensor]:
        """The gradient a client shares: d loss / d variable for each variable.

        Args:
          x: `[batch, height, width, channels]` float32 images in [0, 1].
          y: `[batch]` integer labels, or `[batch, classes]` float label
            probabilities (dummy labels are softmax probabilities).

        Returns:
          A list of float32 tensors, one per `trainable_variables` entry and of
          its shape. Differentiable with respect to `x` and float `y`.
        """
        with tf.GradientTape() as tape:
            loss = self.loss_on(x, y)
        return tape.gradient(loss, self.trainable_variables)

    def flat_gradient(self, x: tf.Tensor, y) -> tf.Tensor:
        """`gradient(x, y)` concatenated into one `[1, num_parameters]` row."""
        return flatten_gradient(self.gradient(x, y))

    def check_gradient(self, gradient: Sequence) -> list[tf.Tensor]:
        """Returns `gradient` as float32 tensors if it matches `trainable_variables`.

        Raises:
          ValueError: wrong number of tensors, or a tensor of the wrong shape.
        """
        variables = self.trainable_variables
        gradient = list(gradient)
        if len(gradient) != len(variables):
            raise ValueError(
                f"the gradient has {len(gradient)} tensors but {self.name} has "
                f"{len(variables)} trainable variables; pass victim.gradient(x, y) of "
                "this very model."
            )
        checked = []
        for g, v in zip(gradient, variables):
            g = tf.convert_to_tensor(g, dtype=tf.float32)
            if g.shape != v.shape:
                raise ValueError(
                    f"gradient tensor of shape {g.shape} does not match variable "
                    f"{v.name} of shape {v.shape}; pass victim.gradient(x, y) of this model."
                )
            checked.append(g)
        return checked


def flatten_gradient(gradient: Sequence[tf.Tensor]) -> tf.Tensor:
    """Concatenates per-variable gradients into a `[1, num_parameters]` row."""
    return tf.concat([tf.reshape(g, (1, -1)) for g in gradient], axis=1)


class SingleDense(Victim):
    """One Dense layer with softmax: `logits = flatten(x) W + b`."""

    def __init__(self, input_shape, num_classes, initializer="uniform", seed=0, **kwargs):
        super().__init__(input_shape, num_classes, **kwargs)
        kernel, bias = _initializer(initializer, seed)
        self.flatten = keras.layers.Flatten()
        self.classifier = keras.layers.Dense(
            self.num_classes, kernel_initializer=kernel, bias_initializer=bias
        )
        self._build_victim()

    def call(self, x, training=False):
        return self.classifier(self.flatten(x))


class MLP(Victim):
    """A multilayer perceptron with sigmoid hidden layers (twice differentiable).

    Args:
      hidden_units: width of each hidden layer.
    """

    def __init__(
        self, input_shape, num_classes, hidden_units=(256,), initializer="uniform", seed=0, **kw
    ):
        super().__init__(input_shape, num_classes, **kw)
        self.flatten = keras.layers.Flatten()
        self.hidden = []
        for i, units in enumerate(hidden_units):
            kernel, bias = _initializer(initializer, seed + 2 * i)
            self.hidden.append(
                keras.layers.Dense(
                    units, "sigmoid", kernel_initializer=kernel, bias_initializer=bias
                )
            )
        kernel, bias = _initializer(initializer, seed + 2 * len(self.hidden))
        self.classifier = keras.layers.Dense(
            self.num_classes, kernel_initializer=kernel, bias_initializer=bias
        )
        self._build_victim()

    def call(self, x, training=False):
        h = self.flatten(x)
        for layer in self.hidden:
            h = layer(h)
        return self.classifier(h)


class LeNet(Victim):
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

    def __init__(self, input_shape, num_classes, initializer="uniform", seed=0, **kwargs):
        super().__init__(input_shape, num_classes, **kwargs)
        self.features = []
        for i, stride in enumerate((2, 2, 1)):
            kernel, bias = _initializer(initializer, seed + 2 * i)
            self.features += [
                keras.layers.ZeroPadding2D(2),
                keras.layers.Conv2D(
                    12,
                    5,
                    strides=stride,
                    activation="sigmoid",
                    kernel_initializer=kernel,
                    bias_initializer=bias,
                ),
            ]
        self.flatten = keras.layers.Flatten()
        kernel, bias = _initializer(initializer, seed + 6)
        self.classifier = keras.layers.Dense(
            self.num_classes, kernel_initializer=kernel, bias_initializer=bias
        )
        self._build_victim()

    def call(self, x, training=False):
        for layer in self.features:
            x = layer(x)
        return self.classifier(self.flatten(x))


VICTIMS = {"dense": SingleDense, "mlp": MLP, "lenet": LeNet}


def get_victim(name: str, input_shape, num_classes: int, **kwargs) -> Victim:
    """Builds the victim registered as `name` ('dense', 'mlp', 'lenet').

    Raises:
      ValueError: `name` is not registered.
    """
    if name not in VICTIMS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(VICTIMS))}.")
    return VICTIMS[name](input_shape, num_classes, **kwargs)
