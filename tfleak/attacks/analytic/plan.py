"""Where analytic recovery applies: which layer of a victim is inverted, and how.

Two structures are inverted:

- `Flatten -> Dense (+bias) -> ...` (an MLP): the first Dense layer's input is
  the flattened image (`tfleak.attacks.analytic.dense`). Input layers that
  only reshape or rescale (`Flatten`, `Reshape`, `Rescaling`,
  `Normalization`) are undone (`undo_input_layers`).
- `Conv2D -> [activation] -> Flatten -> Dense (+bias)` as the model's last
  Dense, one example (`tfleak.attacks.analytic.conv`).

`plan_recovery` reads a victim's layers and returns the `Plan`, or raises a
`ValueError` naming why neither structure fits.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import keras
import numpy as np

__all__ = ["Plan", "plan_recovery", "undo_input_layers"]

# Layers below the inverted one that are undone exactly (they only reshape or rescale).
_INVERTIBLE_INPUT_LAYERS = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Rescaling,
    keras.layers.Normalization,
)
# Activations between the convolution and the classifier, with the inverse and derivative.
_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a victim's input is read off its gradient."""

    kind: str  # 'dense' or 'conv'
    below: tuple  # layers below the inverted one, undone afterwards
    layer: object  # the first Dense layer, or the Conv2D
    kernel_index: int
    bias_index: Optional[int]
    activation: str = "linear"  # between the Conv2D and the classifier


def plan_recovery(victim, batch_size: int, max_pixels: int) -> Plan:
    """How `victim`'s input is read off its gradient for a batch of `batch_size`.

    Args:
      victim: a `tfleak.models.Victim` or a Keras model.
      batch_size: examples behind the update.
      max_pixels: the largest image (height x width x channels) the
        convolution's dense least-squares system is built for.

    Returns:
      The `Plan`: a first Dense layer on the flattened image, or one Conv2D
      under the classifier.

    Raises:
      ValueError: the victim has no layer analytic recovery inverts; the
        message names why.
    """
    from tfleak.models import as_victim

    victim = as_victim(victim)
    name = victim.name
    if victim.preprocess is not None:
        raise ValueError(
            f"{name} applies a preprocess function before its layers; analytic recovery "
            "can only undo reshaping and rescaling layers. Make the preprocessing a "
            "Rescaling or Normalization layer of the model."
        )
    if not victim.graph:
        raise ValueError(
            f"{name} is a subclassed model; analytic recovery reads the order of the "
            "layers of a functional or Sequential model."
        )
    layers = _flat_layers(victim.network)
    first = next((i for i, layer in enumerate(layers) if layer.trainable_weights), None)
    if first is None:
        raise ValueError(f"{name} has no trainable layer.")
    below, layer = tuple(layers[:first]), layers[first]
    odd = [x for x in below if not isinstance(x, _INVERTIBLE_INPUT_LAYERS)]
    if odd:
        raise ValueError(
            f"{name}: layer {odd[0].name!r} ({type(odd[0]).__name__}) comes before the "
            "first trainable layer and cannot be undone; analytic recovery undoes only "
            "Flatten, Reshape, Rescaling and Normalization."
        )
    if isinstance(layer, keras.layers.Dense):
        return _dense_plan(victim, below, layer)
    if isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D:
        return _conv_plan(victim, below, layer, layers[first + 1 :], batch_size, max_pixels)
    raise ValueError(
        f"{name}'s first trainable layer is {layer.name!r} ({type(layer).__name__}), not "
        "a Dense layer with a bias on the flattened image (Flatten -> Dense) or one "
        "Conv2D -> Flatten -> Dense classifier; analytic recovery does not apply."
    )


def _dense_plan(victim, below, layer) -> Plan:
    name = victim.name
    pixels = int(np.prod(victim.image_shape))
    shape = tuple(layer.input.shape[1:])
    if shape != (pixels,):
        raise ValueError(
            f"{name}'s first Dense layer {layer.name!r} takes inputs shaped {list(shape)}, "
            f"not the flattened image ({pixels} values); put a Flatten layer before it."
        )
    if layer.bias is None:
        raise ValueError(
            f"{name}'s first Dense layer {layer.name!r} has no bias (use_bias=False); "
            "analytic recovery divides the kernel gradient by the bias gradient."
        )
    kernel, bias = _variable_index(victim, layer.kernel), _variable_index(victim, layer.bias)
    if kernel is None or bias is None:
        raise ValueError(f"{name}'s first Dense layer {layer.name!r} is frozen.")
    return Plan("dense", below, layer, kernel, bias)


def _conv_plan(victim, below, layer, above, batch_size, max_pixels) -> Plan:
    name = victim.name
    if batch_size != 1:
        raise ValueError(
            f"{name} starts with a Conv2D: analytic recovery through a convolution needs "
            f"one example (the classifier's gradient mixes a batch); got batch_size="
            f"{batch_size}."
        )
    if any(not isinstance(x, (keras.layers.Rescaling, keras.layers.Normalization)) for x in below):
        raise ValueError(f"{name}: only rescaling layers may come before its Conv2D.")
    if layer.data_format != "channels_last" or layer.groups != 1:
        raise ValueError(
            f"{name}'s Conv2D {layer.name!r} is channels_first or grouped; analytic "
            "recovery handles channels_last convolutions with groups=1."
        )
    activations = [_activation_name(layer)]
    rest = list(above)
    while rest and isinstance(rest[0], (keras.layers.Activation, keras.layers.ReLU)):
        activations.append(_activation_name(rest.pop(0)))
    chosen = [a for a in activations if a != "linear"]
    if len(chosen) > 1 or (chosen and chosen[0] not in _ACTIVATIONS):
        raise ValueError(
            f"{name}'s Conv2D {layer.name!r} is followed by the activations "
            f"{activations}; analytic recovery inverts one of {', '.join(_ACTIVATIONS)}."
        )
    if (
        len(rest) != 2
        or not isinstance(rest[0], keras.layers.Flatten)
        or rest[1] is not victim.classifier
    ):
        kinds = [type(x).__name__ for x in rest]
        raise ValueError(
            f"{name}: after its Conv2D come {kinds}; analytic recovery through a "
            "convolution needs Conv2D -> Flatten -> Dense classifier (no pooling or "
            "further layers)."
        )
    if victim.classifier_bias_index is None:
        raise ValueError(
            f"{name}'s classifier has no bias; its input features cannot be read from its gradient."
        )
    pixels = int(np.prod(victim.image_shape))
    if pixels > max_pixels:
        raise ValueError(
            f"{name}'s images have {pixels} values, more than max_pixels={max_pixels} "
            "for the convolution's dense least-squares system."
        )
    units = int(np.prod(layer.output.shape[1:]))
    taps = int(np.prod(layer.kernel.shape))
    if units + taps < pixels:
        raise ValueError(
            f"{name}'s Conv2D {layer.name!r} has {units} output units and {taps} kernel "
            f"weights, fewer equations than the image's {pixels} values: the image is not "
            "determined by the gradient (a stride or too few filters), so analytic "
            "recovery does not apply."
        )
    kernel = _variable_index(victim, layer.kernel)
    if kernel is None:
        raise ValueError(f"{name}'s Conv2D {layer.name!r} is frozen.")
    activation = chosen[0] if chosen else "linear"
    return Plan("conv", below, layer, kernel, None, activation)


def undo_input_layers(layers, values: np.ndarray, image_shape) -> np.ndarray:
    """Maps `[batch, ...]` outputs of `layers` (applied in order) back to their images."""
    for layer in reversed(layers):
        if isinstance(layer, keras.layers.Rescaling):
            scale = np.asarray(layer.scale, np.float64)
            offset = np.asarray(layer.offset, np.float64)
            values = (values - offset) / scale
        elif isinstance(layer, keras.layers.Normalization):
            mean = np.asarray(layer.mean, np.float64)
            std = np.maximum(
                np.sqrt(np.asarray(layer.variance, np.float64)), keras.config.epsilon()
            )
            values = values * std + mean
        elif isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
            shape = tuple(int(d) for d in layer.input.shape[1:])
            values = values.reshape((len(values), *shape))
    return values.reshape((len(values), *image_shape))


def _flat_layers(model) -> list:
    """The model's layers in order, nested models flattened, input layers dropped."""
    layers = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            layers += _flat_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            layers.append(layer)
    return layers


def _variable_index(victim, variable) -> Optional[int]:
    for i, candidate in enumerate(victim.trainable_variables):
        if candidate is variable:
            return i
    return None


def _activation_name(layer) -> str:
    if isinstance(layer, keras.layers.ReLU):
        return "relu" if layer.negative_slope == 0 and layer.max_value is None else "other"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "other") if activation is not None else "linear"
