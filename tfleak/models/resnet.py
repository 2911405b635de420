"""ResNet victims for 32x32 images, layer for layer as breaching builds them.

The CIFAR ResNets of He, Zhang, Ren and Sun, "Deep Residual Learning for Image
Recognition" (CVPR 2016, section 4.2): a 3x3 stem, three stages of `n` basic
blocks each (widths 16, 32, 64; depth 6n + 2), global average pooling and one
dense layer; and the CIFAR ResNet-18 (four stages of two blocks, widths
64-512, a 3x3 stem without max pooling). Both follow breaching's
`cases/models/resnets.py` (Geiping et al.) exactly, so that weights copy across
one to one (`benchmarks/torch_inversion.py`):

- the shortcut is option B wherever the shape changes (a 1x1 convolution with
  the block's stride, then batch norm), the identity elsewhere; breaching uses
  B for its CIFAR ResNets, where He et al. used zero-padding option A;
- every convolution has no bias; batch norm has PyTorch's epsilon 1e-5 and
  momentum 0.1 (Keras momentum 0.9) (`batch_norm`); it updates the moving
  variance with the biased batch variance where PyTorch uses the unbiased one
  (a factor n / (n - 1), n = batch x height x width: below 1e-4 for a CIFAR
  batch);
- PyTorch pads a stride-2 3x3 convolution by one pixel on every side, while
  TF's `'same'` pads only the bottom and right; stride-2 convolutions therefore
  get an explicit `ZeroPadding2D(1)` and `'valid'`. Stride-1 convolutions use
  `'same'`, which is the same symmetric padding;
- initialisation as breaching's: He normal, fan-out, on convolutions; PyTorch's
  default uniform on the dense layer; batch norm scale 1, offset 0.

The models are flat functional Keras models (no sub-model used as a layer, so
every batch-norm layer's input is a tensor of the outer model) that take
float32 images in [0, 1], `[batch, 32, 32, 3]`, normalise them with the
CIFAR-10 mean and standard deviation in their first layer, and return logits.
Every layer is twice differentiable, as gradient inversion needs.
"""

from __future__ import annotations

import random
from typing import Optional, Sequence

import keras
import numpy as np

from tfleak.models.checks import check_classifier_shape

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "SeedStream",
    "batch_norm",
    "cifar10_normalization",
    "resnet",
    "resnet18",
    "resnet20",
    "resnet32",
]

# breaching's `config/case/data/CIFAR10.yaml`, per channel (R, G, B).
CIFAR10_MEAN = (0.4914672374725342, 0.4822617471218109, 0.4467701315879822)
CIFAR10_STD = (0.24703224003314972, 0.24348513782024384, 0.26158785820007324)

# PyTorch's batch norm defaults (`torch.nn.BatchNorm2d`).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # Keras keeps 0.9 of the old average; PyTorch's momentum=0.1.


class SeedStream:
    """Hands out one deterministic seed per initializer, derived from `seed`.

    A Keras initializer with an integer seed draws the same values on every
    call, so two layers must never share one: each asks this stream for its own.
    """

    def __init__(self, seed: int):
        self._random = random.Random(int(seed))

    def __call__(self) -> int:
        return self._random.randrange(2**31 - 1)


def cifar10_normalization(
    channels: int = 3,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    name: str = "normalization",
) -> keras.layers.Normalization:
    """The first layer of every CIFAR victim: `(x - mean) / std` per channel.

    Args:
      channels: channels of the input images; must equal `len(mean)`.
      mean: per-channel mean of images in [0, 1].
      std: per-channel standard deviation of images in [0, 1].
      name: the layer's name.

    Returns:
      A non-trainable `keras.layers.Normalization` with fixed statistics.

    Raises:
      ValueError: if the statistics do not have one value per channel.
    """
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"the normalisation needs one mean and std per channel: got {len(mean)} means "
            f"and {len(std)} stds for {channels} channels."
        )
    variance = np.square(np.asarray(std, dtype=np.float64))
    return keras.layers.Normalization(
        mean=list(map(float, mean)), variance=list(map(float, variance)), name=name
    )


def torch_conv_initializer(seeds: SeedStream) -> keras.initializers.Initializer:
    """`torch.nn.init.kaiming_normal_(w, mode='fan_out', nonlinearity='relu')`.

    Normal with standard deviation sqrt(2 / (out_channels * kh * kw)); Keras
    counts fan-out the same way for a `[kh, kw, in, out]` kernel.
    """
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal", seed=seeds()
    )


def torch_default_initializers(fan_in: int, seeds: SeedStream):
    """PyTorch's default `Linear`/`Conv2d` init: weight and bias U(-b, b), b = 1/sqrt(fan_in).

    (`kaiming_uniform_(a=sqrt(5))` gives bound sqrt(6 / ((1 + 5) fan_in)).)

    Returns:
      `(kernel_initializer, bias_initializer)`.
    """
    bound = 1.0 / np.sqrt(fan_in)
    kernel = keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seeds()
    )
    bias = keras.initializers.RandomUniform(-bound, bound, seed=seeds())
    return kernel, bias


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """Batch norm over the channels with PyTorch's epsilon (1e-5) and momentum (0.1).

    Keras' layer computes batch statistics with `ops.moments` and normalises
    with `tf.nn.batch_normalization` (never TF's fused kernel, whose gradient
    of the gradient is off in training mode), so second-order gradients
    through it are exact to float32 precision (`tests/test_resnet.py` checks
    them against a float64 copy).
    """
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _conv3x3(x, filters: int, stride: int, seeds: SeedStream, name: str):
    """A bias-free 3x3 convolution padded by one pixel on every side (PyTorch's padding=1)."""
    if stride == 1:
        padding = "same"
    else:
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=torch_conv_initializer(seeds),
        name=name,
    )(x)


def _basic_block(x, filters: int, stride: int, seeds: SeedStream, name: str):
    """breaching's `BasicBlock`: conv-BN-ReLU-conv-BN, plus the shortcut, then ReLU."""
    shortcut = x
    out = _conv3x3(x, filters, stride, seeds, f"{name}_conv1")
    out = batch_norm(f"{name}_bn1")(out)
    out = keras.layers.ReLU(name=f"{name}_relu1")(out)
    out = _conv3x3(out, filters, 1, seeds, f"{name}_conv2")
    out = batch_norm(f"{name}_bn2")(out)
    if stride != 1 or x.shape[-1] != filters:
        # Option B: a strided 1x1 projection and batch norm.
        shortcut = keras.layers.Conv2D(
            filters,
            1,
            strides=stride,
            padding="valid",
            use_bias=False,
            kernel_initializer=torch_conv_initializer(seeds),
            name=f"{name}_shortcut_conv",
        )(x)
        shortcut = batch_norm(f"{name}_shortcut_bn")(shortcut)
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(out)


def check_arguments(num_classes, input_shape, width):
    """Validates the arguments every CIFAR victim shares; returns them as ints."""
    input_shape = check_classifier_shape(input_shape, num_classes)
    if int(width) < 1:
        raise ValueError(f"width must be a positive number of channels; got {width}.")
    return int(num_classes), input_shape, int(width)


def _build_resnet(
    blocks: Sequence[int],
    num_classes: int,
    input_shape: Sequence[int],
    width: int,
    seed: int,
    name: str,
) -> keras.Model:
    num_classes, input_shape, width = check_arguments(num_classes, input_shape, width)
    seeds = SeedStream(seed)
    inputs = keras.Input(shape=input_shape, dtype="float32", name="images")
    x = cifar10_normalization(input_shape[-1])(inputs)
    x = _conv3x3(x, width, 1, seeds, "stem_conv")
    x = batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    filters = width
    for stage, count in enumerate(blocks):
        for block in range(count):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, seeds, f"stage{stage + 1}_block{block + 1}")
        filters *= 2
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    kernel, bias = torch_default_initializers(int(x.shape[-1]), seeds)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=kernel, bias_initializer=bias, name="logits"
    )(x)
    return keras.Model(inputs, logits, name=name)


def resnet(
    depth: int,
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    width: int = 16,
    seed: int = 0,
    name: Optional[str] = None,
) -> keras.Model:
    """A CIFAR ResNet of depth 6n + 2 (He et al. 2016, section 4.2), as breaching's `resnet<depth>`.

    Three stages of `n = (depth - 2) / 6` basic blocks with `width`, `2 width`
    and `4 width` channels; stages 2 and 3 halve the resolution. breaching
    builds depths 20, 32, 56 and 110 this way; any 6n + 2 works here.

    Args:
      depth: number of weighted layers, 6n + 2 with n >= 1 (20, 32, 44, 56, 110).
      num_classes: number of classes (>= 2).
      input_shape: `(height, width, channels)` of one image; images are
        float32 in [0, 1]. The normalisation assumes 3 (RGB) channels.
      width: channels of the stem and the first stage (16 in the paper).
      seed: seed of every initializer; the same seed builds the same weights.
      name: the model's name, `resnet<depth>` by default.

    Returns:
      A functional `keras.Model` mapping `[batch, *input_shape]` float32 images
      in [0, 1] to `[batch, num_classes]` logits.

    Raises:
      ValueError: if `depth` is not 6n + 2, or another argument is invalid.
    """
    depth = int(depth)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"a CIFAR ResNet has depth 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...); got {depth}. "
            "For the four-stage ResNet-18 call resnet18()."
        )
    n = (depth - 2) // 6
    return _build_resnet((n, n, n), num_classes, input_shape, width, seed, name or f"resnet{depth}")


def resnet18(
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    width: int = 64,
    seed: int = 0,
    name: str = "resnet18",
) -> keras.Model:
    """breaching's CIFAR ResNet-18: a 3x3 stride-1 stem, no max pool, four stages of two blocks.

    Widths `width`, 2, 4 and 8 times `width` (64-512 by default); stages 2-4
    halve the resolution. Arguments and return value as for `resnet`.
    """
    return _build_resnet((2, 2, 2, 2), num_classes, input_shape, width, seed, name)


def resnet20(num_classes: int = 10, seed: int = 0, **kwargs) -> keras.Model:
    """ResNet-20 (0.27M parameters): `resnet(20, ...)`."""
    return resnet(20, num_classes=num_classes, seed=seed, **kwargs)


def resnet32(num_classes: int = 10, seed: int = 0, **kwargs) -> keras.Model:
    """ResNet-32 (0.47M parameters): `resnet(32, ...)`."""
    return resnet(32, num_classes=num_classes, seed=seed, **kwargs)
