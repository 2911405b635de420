"""The small "ConvNet" victim of Inverting Gradients, layer for layer as breaching builds it.

Geiping, Bauermeister, Droege and Moeller, "Inverting Gradients - How easy is
it to break privacy in federated learning?" (NeurIPS 2020) attack a small
convolutional network on CIFAR-10; breaching (`cases/models/model_preparation.py`,
class `ConvNet`, model name `"ConvNet"`, width 64) defines it as eight 3x3
convolutions with bias, each followed by batch norm and ReLU, with widths
w, 2w, 2w, 4w, 4w, 4w | max pool 3 | 4w, 4w | max pool 3, then a dense layer
on the flattened `[3, 3, 4w]` features (2.9M parameters at w = 64).

Differences from PyTorch that a weight copy must undo: Keras flattens
`[height, width, channels]`, PyTorch `[channels, height, width]`, so the dense
kernel's rows are permuted (`benchmarks/torch_inversion.py`). Everything else
maps one to one: stride-1 `'same'` 3x3 convolutions pad one pixel on every
side as PyTorch's `padding=1`; the max pools are 3x3 windows with stride 3 and
no padding; batch norm has PyTorch's epsilon and momentum; weights start from
PyTorch's default uniform initialisation.
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfleak.models.resnet import (
    SeedStream,
    batch_norm,
    check_arguments,
    cifar10_normalization,
    torch_default_initializers,
)

__all__ = ["convnet"]

# Channels of the eight convolutions, in multiples of `width`; `None` is a max pool.
_LAYOUT = (1, 2, 2, 4, 4, 4, None, 4, 4, None)


def convnet(
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    width: int = 64,
    seed: int = 0,
    name: str = "convnet",
) -> keras.Model:
    """breaching's `ConvNet` (Inverting Gradients' CIFAR ConvNet with batch norm).

    Args:
      num_classes: number of classes (>= 2).
      input_shape: `(height, width, channels)` of one image; images are
        float32 in [0, 1], at least 9 pixels on a side (two 3x3 max pools).
      width: channels of the first convolution (64 in breaching); later ones
        have 2 and 4 times as many.
      seed: seed of every initializer; the same seed builds the same weights.
      name: the model's name.

    Returns:
      A functional `keras.Model` mapping `[batch, *input_shape]` float32 images
      in [0, 1] to `[batch, num_classes]` logits.

    Raises:
      ValueError: if an argument is invalid.
    """
    num_classes, input_shape, width = check_arguments(num_classes, input_shape, width)
    if min(input_shape[:2]) < 9:
        raise ValueError(
            f"the ConvNet pools twice by 3, so images need at least 9x9 pixels; got {input_shape}."
        )
    seeds = SeedStream(seed)
    inputs = keras.Input(shape=input_shape, dtype="float32", name="images")
    x = cifar10_normalization(input_shape[-1])(inputs)
    conv, pool = 0, 0
    for multiple in _LAYOUT:
        if multiple is None:
            x = keras.layers.MaxPooling2D(3, strides=3, padding="valid", name=f"pool{pool}")(x)
            pool += 1
            continue
        kernel, bias = torch_default_initializers(9 * int(x.shape[-1]), seeds)
        x = keras.layers.Conv2D(
            multiple * width,
            3,
            padding="same",
            kernel_initializer=kernel,
            bias_initializer=bias,
            name=f"conv{conv}",
        )(x)
        x = batch_norm(f"bn{conv}")(x)
        x = keras.layers.ReLU(name=f"relu{conv}")(x)
        conv += 1
    x = keras.layers.Flatten(name="flatten")(x)
    kernel, bias = torch_default_initializers(int(x.shape[-1]), seeds)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=kernel, bias_initializer=bias, name="linear"
    )(x)
    return keras.Model(inputs, logits, name=name)
