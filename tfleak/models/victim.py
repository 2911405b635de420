"""The victim: a Keras classifier whose training gradient a client shares.

A victim is a `keras.Model` exposing `gradient(x, y)`. `as_victim(model)` makes
one of any Keras 3 classifier, and attacks it without ever changing the user's
model, its weights or its batch-norm moving statistics:

- a functional or Sequential model is cloned (weights copied): a final softmax
  is removed, so the victim returns logits, and every `BatchNormalization`
  layer becomes an `AttackBatchNorm`, which normalises with the batch's own
  statistics (`batch_norm='train'`: the client computed its gradient in
  training mode) or the moving statistics (`batch_norm='eval'`) and never
  updates the moving statistics. Its feature extractor
  `keras.Model(inputs, [logits, *bn_inputs])` gives every batch-norm layer's
  input in the same pass (for the batch-norm statistics prior);
- a subclassed model is evaluated as it is, through Keras 3's
  `Model.stateless_call` (weights given as tensors; batch-norm updates are
  returned, not applied), in training mode for `batch_norm='train'`; a model
  that returns softmax probabilities `p` is read as logits `log p`, which gives
  the same cross entropy. If it defines its own `gradient(x, y)` (taking
  `[batch, classes]` label probabilities), that is the gradient the attack
  matches for one shared gradient (FedSGD).

Every computation runs on weights given as tensors (`gradient_at`,
`losses_at`), so FedAvg's local steps and per-example gradients evaluate the
model at other weights without assigning any variable.

The loss is the soft-label cross entropy of DLG (`tfleak.models.loss`).
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfleak.models.batch_norm import BATCH_NORM_MODES, AttackBatchNorm, reduction_axes
from tfleak.models.checks import all_layers, check_classifier_shape, is_graph_model, is_softmax
from tfleak.models.inputs import check_gradient as _check_gradient
from tfleak.models.inputs import check_images as _check_images
from tfleak.models.inputs import labels_to_probabilities as _labels_to_probabilities
from tfleak.models.loss import flatten_gradient, soft_cross_entropy

__all__ = [
    "BATCH_NORM_MODES",
    "AttackBatchNorm",
    "Victim",
    "soft_cross_entropy",
    "flatten_gradient",
    "check_classifier_shape",
    "is_softmax",
]


def _accepts_training(model) -> bool:
    parameters = inspect.signature(model.call).parameters
    return "training" in parameters or any(
        p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


class Victim(keras.Model):
    """A classifier whose training gradient is what a client shares.

    Build one with `as_victim(model)`, or with `tfleak.models.LeNet(...)`,
    `tfleak.models.get_victim(name, ...)`.

    Calling it maps images `[batch, h, w, c]` float32 in [0, 1] to logits
    `[batch, num_classes]`; `gradient(x, y)` is what a client shares.

    Attributes:
      network: the attacked model: a functional clone of the user's model, or
        the user's subclassed model itself (never assigned to by an attack).
      num_classes: classes (>= 2).
      image_shape: `(height, width, channels)` of one input image.
      batch_norm: 'train' (batch statistics) or 'eval' (moving statistics).
      batch_norm_layers: the clone's `AttackBatchNorm` layers, in order (empty
        for a subclassed model: its batch-norm inputs are not reachable, so
        the batch-norm statistics prior is unavailable).
      classifier: the last Dense layer (its gradient restores labels), or None.
      preprocess: optional function applied to images before the network.
    """

    def __init__(
        self,
        network: keras.Model,
        num_classes: int,
        image_shape: Sequence[int],
        preprocess: Optional[Callable] = None,
        batch_norm: str = "train",
        outputs_probabilities: bool = False,
        user_gradient: Optional[Callable] = None,
    ):
        super().__init__(name=network.name)
        self.network = network
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.preprocess = preprocess
        self.batch_norm = batch_norm
        self.outputs_probabilities = bool(outputs_probabilities)
        self.user_gradient = user_gradient
        self.graph = is_graph_model(network)
        self.built = True

    def __repr__(self) -> str:
        return (
            f"Victim({self.name}, image_shape={self.image_shape}, num_classes={self.num_classes}, "
            f"parameters={self.count_params()}, batch_norm={self.batch_norm!r}, "
            f"batch_norm_layers={len(self.batch_norm_layers)})"
        )

    # -- structure -----------------------------------------------------------

    @property
    def model(self) -> keras.Model:
        """The attacked network (alias of `network`)."""
        return self.network

    @functools.cached_property
    def batch_norm_layers(self) -> list:
        if not self.graph:
            return []
        return [layer for layer in all_layers(self.network) if isinstance(layer, AttackBatchNorm)]

    @functools.cached_property
    def classifier(self):
        dense = [
            layer for layer in all_layers(self.network) if isinstance(layer, keras.layers.Dense)
        ]
        return dense[-1] if dense else None

    @functools.cached_property
    def _features(self):
        """`(extractor, index)`: the functional `inputs -> [logits, *bn_inputs]` and, for each
        of its trainable variables, the position of that variable in `trainable_variables`."""
        if not self.graph:
            return None, None
        extractor = keras.Model(
            self.network.inputs,
            [self.network.outputs[0]] + [layer.input for layer in self.batch_norm_layers],
        )
        position = {id(v): i for i, v in enumerate(self.trainable_variables)}
        return extractor, [position[id(v)] for v in extractor.trainable_variables]

    def count_params(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.network.weights))

    def current_weights(self) -> list[tf.Tensor]:
        """The trainable weights as tensors, in `trainable_variables` order."""
        return [tf.convert_to_tensor(v) for v in self.trainable_variables]

    # -- what the client computes --------------------------------------------

    def forward_at(self, weights: Optional[Sequence], x: tf.Tensor):
        """Logits `[batch, classes]` and every batch-norm layer's input, at `weights`.

        Args:
          weights: one tensor per `trainable_variables` entry (None: the
            current weights).
          x: `[batch, h, w, c]` float32 images in [0, 1].
        """
        if weights is None:
            weights = self.current_weights()
        if self.preprocess is not None:
            x = self.preprocess(x)
        if self.graph:
            extractor, index = self._features
            non_trainable = [tf.convert_to_tensor(v) for v in extractor.non_trainable_variables]
            outputs, _ = extractor.stateless_call(
                [weights[i] for i in index], non_trainable, x, training=False
            )
            outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
            return outputs[0], outputs[1:]
        non_trainable = [tf.convert_to_tensor(v) for v in self.network.non_trainable_variables]
        kwargs = {"training": self.batch_norm == "train"} if _accepts_training(self.network) else {}
        outputs, _ = self.network.stateless_call(list(weights), non_trainable, x, **kwargs)
        if self.outputs_probabilities:
            # log p is a valid logit vector of p: log_softmax(log p) = log p.
            outputs = tf.math.log(tf.maximum(outputs, 1e-30))
        return outputs, []

    def forward(self, x: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Logits `[batch, classes]` and the input of every batch-norm layer, in one pass."""
        return self.forward_at(None, x)

    def call(self, x, training=None):
        """Logits `[batch, num_classes]` of images `[batch, h, w, c]` in [0, 1]."""
        del training
        return self.forward(self.check_images(x) if tf.executing_eagerly() else x)[0]

    def losses_at(self, weights: Optional[Sequence], x: tf.Tensor, probabilities) -> tf.Tensor:
        """Per-example soft cross entropy `[batch]` at `weights` (None: the current ones)."""
        return soft_cross_entropy(probabilities, self.forward_at(weights, x)[0])

    def gradient_at(
        self, weights: Optional[Sequence], x: tf.Tensor, probabilities, statistics: bool = False
    ):
        """`dL/dW` of the mean soft cross entropy at weight tensors `weights`.

        Differentiable with respect to `x`, `probabilities` and `weights`.

        Args:
          weights: one tensor per trainable variable (None: the current weights).
          x: `[batch, h, w, c]` float32.
          probabilities: `[batch, classes]` float32 label probabilities.
          statistics: also return `(mean, variance)` per batch-norm layer.

        Returns:
          The gradient (one tensor per trainable variable), and the statistics
          (a list; empty unless `statistics`) when `statistics` is True.
        """
        if weights is None:
            weights = self.current_weights()
        weights = list(weights)
        with tf.GradientTape() as tape:
            tape.watch(weights)
            logits, bn_inputs = self.forward_at(weights, x)
            loss = tf.reduce_mean(soft_cross_entropy(probabilities, logits))
        gradient = tape.gradient(loss, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if not statistics:
            return gradient
        moments = [
            tf.nn.moments(h, reduction_axes(h, layer.axis))
            for h, layer in zip(bn_inputs, self.batch_norm_layers)
        ]
        return gradient, moments

    def example_gradients_at(
        self, weights: Optional[Sequence], x: tf.Tensor, probabilities
    ) -> list[tf.Tensor]:
        """Every example's gradient at `weights`, `[batch, *variable.shape]` per variable.

        The Jacobian of the `[batch]` per-example losses of one forward pass of
        the whole batch (`GradientTape.jacobian`, pfor), as tensorflow-privacy's
        vectorised DP optimizers compute it, so the mean of the rows is exactly
        the gradient of the mean loss. With batch statistics (`batch_norm='train'`)
        row i also depends on the other examples.

        Args:
          weights: one tensor per trainable variable (None: the current weights).
          x: `[batch, h, w, c]` float32.
          probabilities: `[batch, classes]` float32 label probabilities.
        """
        weights = list(self.current_weights() if weights is None else weights)
        with tf.GradientTape() as tape:
            tape.watch(weights)
            losses = self.losses_at(weights, x, probabilities)  # [batch]
        return tape.jacobian(losses, weights, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def gradient(self, x: tf.Tensor, y) -> list[tf.Tensor]:
        """The gradient a client shares: d loss / d variable for each variable.

        Args:
          x: `[batch, height, width, channels]` float32 images in [0, 1].
          y: `[batch]` integer labels, or `[batch, classes]` float label
            probabilities (dummy labels are softmax probabilities).

        Returns:
          A list of float32 tensors, one per `trainable_variables` entry and of
          its shape. Differentiable with respect to `x` and float `y`.

        Raises:
          ValueError: images of the wrong shape or integer dtype; bad labels.
        """
        if tf.executing_eagerly():
            x = self.check_images(x)
        probabilities = self.labels_to_probabilities(y)
        if self.user_gradient is not None:
            return list(self.user_gradient(x, probabilities))
        return self.gradient_at(None, x, probabilities)

    def gradient_and_statistics(self, x: tf.Tensor, y) -> tuple[list, list]:
        """The gradient, and `(mean, variance)` per batch-norm layer of that same pass.

        The statistics are per channel, over batch and space, of each batch-norm
        layer's input (what DeepInversion's feature-statistics prior compares).
        """
        return self.gradient_at(None, x, self.labels_to_probabilities(y), statistics=True)

    def flat_gradient(self, x: tf.Tensor, y) -> tf.Tensor:
        """`gradient(x, y)` concatenated into one `[1, num_parameters]` row."""
        return flatten_gradient(self.gradient(x, y))

    def loss_on(self, x: tf.Tensor, y) -> tf.Tensor:
        """Mean soft cross entropy of the batch (a scalar), as the client trains."""
        return tf.reduce_mean(self.losses_at(None, x, self.labels_to_probabilities(y)))

    def moving_statistics(self) -> list[tuple[tf.Tensor, tf.Tensor]]:
        """`(moving_mean, moving_variance)` of every batch-norm layer (what the server knows)."""
        return [
            (tf.convert_to_tensor(layer.moving_mean), tf.convert_to_tensor(layer.moving_variance))
            for layer in self.batch_norm_layers
        ]

    def batch_statistics(self, x: tf.Tensor) -> list[tuple[tf.Tensor, tf.Tensor]]:
        """`(mean, variance)` of every batch-norm layer's input on `x` (what a client may share)."""
        x = self.check_images(x) if tf.executing_eagerly() else x
        _, bn_inputs = self.forward(x)
        return [
            tf.nn.moments(h, reduction_axes(h, layer.axis))
            for h, layer in zip(bn_inputs, self.batch_norm_layers)
        ]

    # -- checks --------------------------------------------------------------

    def labels_to_probabilities(self, y) -> tf.Tensor:
        """Integer labels `[batch]` -> one-hot; probabilities `[batch, classes]` pass.

        Raises:
          ValueError: a label outside the classes, or probabilities of the wrong
            width (`tfleak.models.inputs.labels_to_probabilities`).
        """
        return _labels_to_probabilities(y, self.num_classes)

    def check_images(self, x) -> tf.Tensor:
        """Returns `x` as float32 if it is a batch of this victim's images.

        Raises:
          ValueError: integer pixels (e.g. uint8 0..255) or the wrong shape.
        """
        return _check_images(x, self.image_shape, self.name)

    @property
    def classifier_kernel_index(self) -> int:
        """Index in `trainable_variables` of the last Dense layer's kernel."""
        if self.classifier is None:
            raise ValueError(f"{self.name} has no Dense layer; label restoration needs one.")
        return self._index_of(self.classifier.kernel)

    @property
    def classifier_bias_index(self) -> Optional[int]:
        """Index of the last Dense layer's bias, None if it has none."""
        if self.classifier is None or self.classifier.bias is None:
            return None
        return self._index_of(self.classifier.bias)

    def _index_of(self, variable) -> int:
        for i, candidate in enumerate(self.trainable_variables):
            if candidate is variable:
                return i
        raise ValueError(f"{variable.name} is not trainable; label restoration needs it.")

    def check_gradient(self, gradient: Sequence) -> list[tf.Tensor]:
        """Returns `gradient` as float32 tensors if it matches `trainable_variables`.

        Raises:
          ValueError: wrong number of tensors, or a tensor of the wrong shape.
        """
        return _check_gradient(gradient, self.trainable_variables, self.name)
