"""The victim: a Keras classifier whose training gradient a client shares.

`as_victim(model)` wraps any functional or Sequential Keras classifier (and
tfleak's own LeNet, MLP, ResNets) for attack. It attacks a *clone*: the user's
model, its weights and its batch-norm moving statistics are never changed.

The clone differs from the model in two ways only:
- a final softmax is removed, so the victim returns logits;
- every `BatchNormalization` layer becomes an `AttackBatchNorm`, which
  normalises with the batch's own statistics (`batch_norm='train'`: the client
  computed its gradient in training mode) or the moving statistics
  (`batch_norm='eval'`), and never updates the moving statistics.

The loss is the soft-label cross entropy of DLG (Zhu et al., 2019, code:
`cross_entropy_for_onehot`), written with `tf.nn.log_softmax` so that the
gradient of the gradient reaches the labels. (TF's fused
`softmax_cross_entropy_with_logits`, and the Keras losses built on it, have no
second-order gradient with respect to the labels: a dummy label optimised
through them never moves.)

In one forward pass the victim also returns the input of every batch-norm
layer (a feature-extractor `keras.Model(inputs, [logits, *bn_inputs])`, as
keras-io builds them), from which the batch-norm statistics prior is computed
without hooks.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow import keras

__all__ = [
    "BATCH_NORM_MODES",
    "AttackBatchNorm",
    "Victim",
    "as_victim",
    "soft_cross_entropy",
    "flatten_gradient",
    "check_classifier_shape",
]

BATCH_NORM_MODES = ("train", "eval")

# Layers that draw random numbers or keep state while training: at inference
# (which is how the victim runs them) they are the identity, but a client that
# trains through them shares a gradient no attacker can reproduce exactly.
_RANDOM_LAYERS = (
    "RandomFlip",
    "RandomCrop",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "RandomContrast",
    "RandomBrightness",
    "RandomHeight",
    "RandomWidth",
)


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


def check_classifier_shape(input_shape: Sequence[int], num_classes: int) -> tuple:
    """Validates a victim builder's `input_shape` and `num_classes`; returns the shape as ints.

    Raises:
      ValueError: a shape that is not three positive sizes, or fewer than 2 classes.
    """
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(
            f"input_shape must be (height, width, channels) of positive sizes; got {input_shape}."
        )
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}.")
    return input_shape


def flatten_gradient(gradient: Sequence[tf.Tensor]) -> tf.Tensor:
    """Concatenates per-variable gradients into a `[1, num_parameters]` row."""
    return tf.concat([tf.reshape(g, (1, -1)) for g in gradient], axis=1)


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

    def call(self, inputs, training=None):
        rank = inputs.shape.rank
        channel_axes = [a % rank for a in self.axis]
        axes = [a for a in range(rank) if a not in channel_axes]
        if self.use_batch_statistics:
            mean, variance = tf.nn.moments(inputs, axes)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        return tf.nn.batch_normalization(
            inputs, mean, variance, self.beta, self.gamma, self.epsilon
        )


def _is_softmax(layer) -> bool:
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.Softmax):
        return True
    return activation is not None and getattr(activation, "__name__", "") == "softmax"


class Victim:
    """A classifier whose training gradient is what a client shares.

    Build one with `as_victim(model)`, or with `tfleak.LeNet(...)`,
    `tfleak.models.get_victim(name, ...)`.

    Attributes:
      model: the attacked clone, `[batch, h, w, c]` float32 in [0, 1] -> logits
        `[batch, num_classes]`.
      num_classes: classes (>= 2).
      image_shape: `(height, width, channels)` of one input image.
      batch_norm: 'train' (batch statistics) or 'eval' (moving statistics).
      batch_norm_layers: the clone's `AttackBatchNorm` layers, in order.
      classifier: the last Dense layer (its gradient restores labels).
      name: the model's name.
    """

    def __init__(
        self,
        model: keras.Model,
        num_classes: int,
        preprocess: Optional[Callable] = None,
        batch_norm: str = "train",
    ):
        self.model = model
        self.name = model.name
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(d) for d in model.input_shape[1:])
        self.preprocess = preprocess
        self.batch_norm = batch_norm
        self.batch_norm_layers = [
            layer for layer in _all_layers(model) if isinstance(layer, AttackBatchNorm)
        ]
        dense = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.Dense)]
        self.classifier = dense[-1] if dense else None
        self._features = keras.Model(
            model.inputs, [model.output] + [layer.input for layer in self.batch_norm_layers]
        )

    def __repr__(self) -> str:
        return (
            f"Victim({self.name}, image_shape={self.image_shape}, num_classes={self.num_classes}, "
            f"parameters={self.count_params()}, batch_norm={self.batch_norm!r}, "
            f"batch_norm_layers={len(self.batch_norm_layers)})"
        )

    # -- what the client computes --------------------------------------------

    @property
    def trainable_variables(self) -> list:
        return self.model.trainable_variables

    @property
    def weights(self) -> list:
        """Every weight of the attacked clone (trainable, and batch-norm moving statistics)."""
        return self.model.weights

    def count_params(self) -> int:
        return int(sum(np.prod(v.shape) for v in self.model.weights))

    def forward(self, x: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Logits `[batch, classes]` and the input of every batch-norm layer, in one pass."""
        if self.preprocess is not None:
            x = self.preprocess(x)
        outputs = self._features(x, training=False)
        if not self.batch_norm_layers:
            return outputs, []
        return outputs[0], list(outputs[1:])

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Logits `[batch, num_classes]` of images `[batch, h, w, c]` in [0, 1]."""
        return self.forward(self.check_images(x))[0]

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

    def check_images(self, x) -> tf.Tensor:
        """Returns `x` as float32 if it is a batch of this victim's images.

        Raises:
          ValueError: integer pixels (e.g. uint8 0..255) or the wrong shape.
        """
        if not tf.is_tensor(x):
            x = np.asarray(x)
        if (
            x.dtype in (np.uint8, tf.uint8)
            or getattr(x.dtype, "is_integer", False)
            or (isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer))
        ):
            raise ValueError(
                f"images must be float32 in [0, 1]; got integer pixels ({x.dtype}). "
                "Divide by 255 (or use tfleak.data's loaders, which do)."
            )
        x = tf.convert_to_tensor(x, tf.float32)
        if x.shape.rank != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"{self.name} takes images shaped [batch, {', '.join(map(str, self.image_shape))}]"
                f"; got {list(x.shape)}. Resize the images (e.g. --image_size) or build the "
                "victim for this shape."
            )
        return x

    def loss_on(self, x: tf.Tensor, y) -> tf.Tensor:
        """Mean soft cross entropy of the batch (a scalar), as the client trains."""
        probabilities = self.labels_to_probabilities(y)
        return tf.reduce_mean(soft_cross_entropy(probabilities, self.forward(x)[0]))

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
        return self.gradient_and_statistics(x, y)[0]

    def gradient_and_statistics(self, x: tf.Tensor, y) -> tuple[list, list]:
        """The gradient, and `(mean, variance)` per batch-norm layer of that same pass.

        The statistics are per channel, over batch and space, of each batch-norm
        layer's input (what DeepInversion's feature-statistics prior compares).
        """
        probabilities = self.labels_to_probabilities(y)
        with tf.GradientTape() as tape:
            logits, bn_inputs = self.forward(x)
            loss = tf.reduce_mean(soft_cross_entropy(probabilities, logits))
        gradient = tape.gradient(loss, self.trainable_variables)
        statistics = [_moments(h, layer) for h, layer in zip(bn_inputs, self.batch_norm_layers)]
        return gradient, statistics

    def flat_gradient(self, x: tf.Tensor, y) -> tf.Tensor:
        """`gradient(x, y)` concatenated into one `[1, num_parameters]` row."""
        return flatten_gradient(self.gradient(x, y))

    def moving_statistics(self) -> list[tuple[tf.Tensor, tf.Tensor]]:
        """`(moving_mean, moving_variance)` of every batch-norm layer (what the server knows)."""
        return [(layer.moving_mean, layer.moving_variance) for layer in self.batch_norm_layers]

    def batch_statistics(self, x: tf.Tensor) -> list[tuple[tf.Tensor, tf.Tensor]]:
        """`(mean, variance)` of every batch-norm layer's input on `x` (what a client may share)."""
        _, bn_inputs = self.forward(self.check_images(x))
        return [_moments(h, layer) for h, layer in zip(bn_inputs, self.batch_norm_layers)]

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


def _moments(h: tf.Tensor, layer: AttackBatchNorm) -> tuple[tf.Tensor, tf.Tensor]:
    rank = h.shape.rank
    channel_axes = [a % rank for a in layer.axis]
    return tf.nn.moments(h, [a for a in range(rank) if a not in channel_axes])


def _all_layers(model) -> list:
    """The model's layers, nested models flattened, in order."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers += _all_layers(layer)
        else:
            layers.append(layer)
    return layers


def as_victim(
    model: keras.Model,
    num_classes: Optional[int] = None,
    preprocess: Optional[Callable] = None,
    batch_norm: str = "train",
) -> Victim:
    """Wraps a functional or Sequential Keras classifier for attack.

    The user's model is cloned (weights copied); attacks run on the clone, so
    the model, its weights and its batch-norm moving statistics never change.

    Args:
      model: a built `keras.Model` taking one image batch `[batch, h, w, c]`
        and returning logits or softmax probabilities `[batch, classes]`.
      num_classes: classes; default: the width of the model's output.
      preprocess: optional function applied to images in [0, 1] before the
        model (e.g. the model's own normalisation, when it is not a layer).
      batch_norm: 'train' (the client computes its gradient with the batch's
        statistics, as in training mode) or 'eval' (with the moving ones).

    Returns:
      A `Victim`.

    Raises:
      ValueError: not a built functional/Sequential model with one image
        input; an output that is not `[batch, classes]`; a layer that cannot
        be differentiated twice (named); a bad `num_classes` or `batch_norm`.
    """
    if isinstance(model, Victim):
        return model
    if not isinstance(model, keras.Model):
        raise ValueError(f"as_victim needs a keras.Model; got {type(model).__name__}.")
    if batch_norm not in BATCH_NORM_MODES:
        raise ValueError(
            f"unknown batch_norm {batch_norm!r}; choose one of {', '.join(BATCH_NORM_MODES)}."
        )
    if not model.built or not getattr(model, "_is_graph_network", False):
        raise ValueError(
            f"{model.name} is a subclassed or unbuilt model; as_victim needs a functional or "
            "Sequential model with a known input shape (e.g. keras.Input((32, 32, 3)) first)."
        )
    if len(model.inputs) != 1 or model.inputs[0].shape.rank != 4:
        raise ValueError(
            f"{model.name} must take one image batch [batch, height, width, channels]; its "
            f"inputs are {[list(i.shape) for i in model.inputs]}."
        )
    if len(model.outputs) != 1 or model.outputs[0].shape.rank != 2:
        raise ValueError(
            f"{model.name} must return one [batch, classes] tensor; its outputs are "
            f"{[list(o.shape) for o in model.outputs]}."
        )
    for layer in _all_layers(model):
        if type(layer).__name__ in _RANDOM_LAYERS:
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) draws random numbers while "
                "training, so no attacker can reproduce the client's gradient; attack the "
                "model without its augmentation layers."
            )
        if getattr(layer, "stateful", False):
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) is stateful; an attack would "
                "change its state. Attack a model without stateful layers."
            )
    output_layer = model.layers[-1]
    width = int(model.outputs[0].shape[-1])
    num_classes = width if num_classes is None else int(num_classes)
    if num_classes != width or num_classes < 2:
        raise ValueError(
            f"num_classes={num_classes} does not match the model's {width} outputs (need >= 2)."
        )

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            return AttackBatchNorm(use_batch_statistics=batch_norm == "train", **config)
        if layer is output_layer and isinstance(layer, keras.layers.Dense) and _is_softmax(layer):
            config["activation"] = "linear"
        return type(layer).from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    if _is_softmax(output_layer) and not isinstance(output_layer, keras.layers.Dense):
        # A trailing Softmax / Activation('softmax') layer: the logits are its input.
        clone = keras.Model(clone.inputs, clone.layers[-1].input, name=clone.name)
    victim = Victim(clone, num_classes, preprocess, batch_norm)
    _check_twice_differentiable(victim)
    return victim


def _check_twice_differentiable(victim: Victim) -> None:
    """Raises a ValueError naming a layer that gradient inversion cannot differentiate twice."""
    x = tf.random.uniform((2, *victim.image_shape), seed=0)
    labels = tf.one_hot([0, 1 % victim.num_classes], victim.num_classes)
    try:
        with tf.GradientTape() as tape:
            tape.watch(x)
            gradient = victim.gradient(x, labels)
            norm = tf.add_n([tf.reduce_sum(tf.square(g)) for g in gradient if g is not None])
        second = tape.gradient(norm, x)
        problem = None if second is not None else "no gradient with respect to its input"
    except LookupError as error:  # "gradient registry has no entry for: <op>"
        problem = f"no second-order gradient ({str(error).splitlines()[0]})"
    if problem is None:
        return
    layer = _first_layer_failing(victim.model)
    where = f"layer {layer.name!r} ({type(layer).__name__})" if layer else "one of its layers"
    raise ValueError(
        f"{victim.name}: {where} has {problem}; gradient inversion differentiates the "
        "gradient of the loss with respect to the input. Replace that layer (e.g. bilinear "
        "instead of nearest-neighbour resizing)."
    )


def _first_layer_failing(model) -> Optional[keras.layers.Layer]:
    """The first layer whose output is not twice differentiable in its input, if any."""
    for layer in _all_layers(model):
        shapes = layer.input_shape if isinstance(layer.input_shape, list) else [layer.input_shape]
        if any(shape is None or None in shape[1:] for shape in shapes):
            continue
        inputs = [tf.random.uniform((2, *shape[1:]), seed=1) for shape in shapes]
        try:
            with tf.GradientTape() as outer:
                outer.watch(inputs)
                with tf.GradientTape() as inner:
                    inner.watch(inputs)
                    output = layer(inputs if len(inputs) > 1 else inputs[0])
                    value = tf.reduce_sum(tf.square(output))
                first = inner.gradient(value, inputs)
                if any(g is None for g in first):
                    return layer
                total = tf.add_n([tf.reduce_sum(tf.square(g)) for g in first])
            if any(g is None for g in outer.gradient(total, inputs)):
                return layer
        except LookupError:
            return layer
    return None
