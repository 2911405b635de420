"""`as_victim`: any Keras 3 classifier (or a `.keras` file) made into a `Victim`.

A functional or Sequential model is cloned (weights copied): a final softmax
is removed and every `BatchNormalization` becomes an `AttackBatchNorm`. A
subclassed model is wrapped as it is and evaluated through `stateless_call`;
its own `gradient(x, y)`, if any, is what a shared gradient is matched to.
Before any work, `tfleak.models.checks` refuses what cannot be attacked, and a
model whose layers cannot be differentiated twice is refused naming the layer.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfleak.models.batch_norm import BATCH_NORM_MODES, AttackBatchNorm
from tfleak.models.checks import (
    all_layers,
    check_attackable,
    check_classifier_shape,
    is_graph_model,
    is_softmax,
    load_model,
)
from tfleak.models.victim import Victim

__all__ = ["as_victim"]


def as_victim(
    model: keras.Model,
    num_classes: Optional[int] = None,
    preprocess: Optional[Callable] = None,
    batch_norm: str = "train",
    input_shape: Optional[Sequence[int]] = None,
) -> Victim:
    """Wraps any Keras 3 classifier for attack; the user's model is never changed.

    A functional or Sequential model is cloned (weights copied; softmax
    removed; batch norm as `AttackBatchNorm`). A subclassed model is evaluated
    as it is through `stateless_call`; its own `gradient(x, y)`, if it has one,
    is used for the shared gradient (FedSGD) and must take `[batch, classes]`
    label probabilities.

    Args:
      model: a built `keras.Model` taking one image batch `[batch, h, w, c]`
        and returning logits or softmax probabilities `[batch, classes]`; or a
        path to a `.keras` file saved by Keras 3.
      num_classes: classes; default: the width of the model's output.
      preprocess: optional function applied to images in [0, 1] before the
        model (e.g. the model's own normalisation, when it is not a layer).
      batch_norm: 'train' (the client computes its gradient with the batch's
        statistics, as in training mode) or 'eval' (with the moving ones).
      input_shape: `(height, width, channels)`, needed only for a subclassed
        model that was never called or built.

    Returns:
      A `Victim`.

    Raises:
      ValueError: a Keras 2 (`tf_keras`) model; an unbuilt model; not one image
        input; an output that is not `[batch, classes]`; a layer that cannot be
        differentiated twice or draws random numbers (named); a bad
        `num_classes` or `batch_norm`.
      FileNotFoundError: a model path that does not exist.
    """
    if isinstance(model, Victim):
        return model
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load_model(model)
    if batch_norm not in BATCH_NORM_MODES:
        raise ValueError(
            f"unknown batch_norm {batch_norm!r}; choose one of {', '.join(BATCH_NORM_MODES)}."
        )
    check_attackable(model, batch_norm)
    if is_graph_model(model):
        victim = _functional_victim(model, num_classes, preprocess, batch_norm)
    else:
        victim = _subclassed_victim(model, num_classes, preprocess, batch_norm, input_shape)
    _check_twice_differentiable(victim)
    return victim


def _functional_victim(model, num_classes, preprocess, batch_norm) -> Victim:
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(
            f"{model.name} must take one image batch [batch, height, width, channels]; its "
            f"inputs are {[list(i.shape) for i in model.inputs]}."
        )
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            f"{model.name} must return one [batch, classes] tensor; its outputs are "
            f"{[list(o.shape) for o in model.outputs]}."
        )
    output_layer = model.layers[-1]
    num_classes = _check_width(model, int(model.outputs[0].shape[-1]), num_classes)

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config.pop("use_batch_statistics", None)  # a Victim's model, wrapped again
            return AttackBatchNorm(use_batch_statistics=batch_norm == "train", **config)
        if layer is output_layer and isinstance(layer, keras.layers.Dense) and is_softmax(layer):
            config["activation"] = "linear"
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    clone.set_weights(model.get_weights())
    if is_softmax(output_layer) and not isinstance(output_layer, keras.layers.Dense):
        # A trailing Softmax / Activation('softmax') layer: the logits are its input.
        clone = keras.Model(clone.inputs, clone.layers[-1].input, name=clone.name)
    image_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    return Victim(clone, num_classes, image_shape, preprocess, batch_norm)


def _subclassed_victim(model, num_classes, preprocess, batch_norm, input_shape) -> Victim:
    if input_shape is None:
        shape = (model.get_build_config() or {}).get("input_shape") if model.built else None
        if shape is None or len(shape) != 4:
            raise ValueError(
                f"{model.name} is a subclassed model that was never called on images; call it "
                "once on a batch (model(x)) or pass input_shape=(height, width, channels)."
            )
        input_shape = shape[1:]
    image_shape = check_classifier_shape(input_shape, num_classes or 2)
    if not model.built:
        model.build((None, *image_shape))
    probe = tf.random.uniform((2, *image_shape), seed=0)
    if preprocess is not None:
        probe = preprocess(probe)
    outputs = model(probe)
    if len(outputs.shape) != 2:
        raise ValueError(
            f"{model.name} must return one [batch, classes] tensor; it returned "
            f"{list(outputs.shape)}."
        )
    num_classes = _check_width(model, int(outputs.shape[-1]), num_classes)
    values = outputs.numpy()
    probabilities = bool(np.all(values >= 0) and np.allclose(values.sum(axis=-1), 1.0, atol=1e-5))
    user_gradient = getattr(model, "gradient", None)
    return Victim(
        model,
        num_classes,
        image_shape,
        preprocess,
        batch_norm,
        outputs_probabilities=probabilities,
        user_gradient=user_gradient if callable(user_gradient) else None,
    )


def _check_width(model, width: int, num_classes: Optional[int]) -> int:
    num_classes = width if num_classes is None else int(num_classes)
    if num_classes != width or num_classes < 2:
        raise ValueError(
            f"num_classes={num_classes} does not match {model.name}'s {width} outputs (need >= 2)."
        )
    return num_classes


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
    layer = _first_layer_failing(victim.network)
    where = f"layer {layer.name!r} ({type(layer).__name__})" if layer else "one of its layers"
    raise ValueError(
        f"{victim.name}: {where} has {problem}; gradient inversion differentiates the "
        "gradient of the loss with respect to the input. Replace that layer (e.g. bilinear "
        "instead of nearest-neighbour resizing)."
    )


def _first_layer_failing(model) -> Optional[keras.layers.Layer]:
    """The first layer whose output is not twice differentiable in its input, if any."""
    for layer in all_layers(model):
        try:
            inputs = layer.input if isinstance(layer.input, list) else [layer.input]
            shapes = [tuple(i.shape) for i in inputs]
        except (AttributeError, ValueError):
            continue
        if any(None in shape[1:] for shape in shapes):
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
