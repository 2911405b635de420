"""The black-box model-inversion attacker: a decoder learned from queries of the device.

An attacker who can query the on-device stage (or holds its saved copy) feeds
it surrogate images, records the codes, and fits a decoder from code back to
image; it then inverts intercepted codes of images it never saw. This is the
inverse network of He, Zhang, Lee, "Model inversion attacks against
collaborative inference" (ACSAC 2019, Section 4.2) and the attack of PySyft's
split-network Omniglot example; in the terms of Fredrikson, Jha, Ristenpart
(CCS 2015) it inverts a model's intermediate output.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfleak.data.omniglot import IMAGE_SIZE
from tfleak.metrics import image_metrics
from tfleak.split.model import CODE_SHAPE, CODE_SHAPES, CONV_BLOCKS

__all__ = [
    "AttackModel",
    "compile_attacker",
    "decoder_layers",
    "surrogate_augmentation",
    "reconstruct",
    "evaluate_attack",
    "mean_image",
    "mean_image_baseline_mse",
]

# (filters, kernel, stride) of the published attacker's transposed convolutions for the
# 1x1x32 code: 1 -> 9 -> 23 -> 51 -> 105 (valid padding: out = (in - 1) * stride + kernel).
_DECONV_BLOCKS = ((32, 9, 1), (32, 7, 2), (1, 7, 2), (1, 5, 2))


def _mirror_blocks(cut: int) -> list[tuple[int, int, int]]:
    """(filters, kernel, stride) of transposed convolutions undoing blocks `cut`..1.

    Each device block is conv k (n -> n - k + 1) then pool p / s (m -> (m - p) // s + 1);
    its mirror is a transposed conv of stride s whose kernel m - (pooled - 1) * s gives
    back exactly m (floor division lost nothing then), then one of kernel k, stride 1
    (m -> m + k - 1 = n). For the first cut: 33 -(3, /3)-> 99 -(7)-> 105.
    """
    sizes = [IMAGE_SIZE]
    for _, kernel, pool, stride in CONV_BLOCKS:
        sizes.append((sizes[-1] - kernel + 1 - pool) // stride + 1)
    blocks = []
    for index in range(cut, 0, -1):
        filters, kernel, _, stride = CONV_BLOCKS[index - 1]
        convolved = sizes[index - 1] - kernel + 1
        blocks.append((filters, convolved - (sizes[index] - 1) * stride, stride))
        blocks.append((filters if index > 1 else 1, kernel, 1))
    return blocks


def decoder_layers(code_shape=CODE_SHAPE) -> list[keras.layers.Layer]:
    """Transposed convolutions from a code of any cut back to a 105 x 105 x 1 image.

    For the published cut's 1x1x32 code, the published decoder: four transposed
    convolutions with ReLU, 1 -> 9 -> 23 -> 51 -> 105. For a shallower cut
    (`CODE_SHAPES`: 33x33x32, 13x13x32, 4x4x32), the device's blocks mirrored:
    per block, from the last on the device to the first, a transposed conv with
    the pooling's stride (32 filters, ReLU) then one with the conv's kernel
    (ReLU; the last one has 1 filter and no activation, `reconstruct` clips to
    [0, 1]; a sigmoid there saturated on the white page and stalled at cut 2):
    33 -> 99 -> 105 after block 1; 13 -> 27 -> 33 -> 99 -> 105 after block 2.

    Args:
      code_shape: `[height, width, channels]`, one of `CODE_SHAPES`' values.

    Returns:
      Layers mapping codes `[batch, *code_shape]` to `[batch, 105, 105, 1]`.

    Raises:
      ValueError: a code shape no cut produces.
    """
    code_shape = tuple(int(d) for d in code_shape)
    cuts = {shape: cut for cut, shape in CODE_SHAPES.items()}
    if code_shape not in cuts:
        raise ValueError(
            f"no decoder for codes of shape {code_shape}; the cuts send "
            + ", ".join(f"{shape} (cut {cut})" for cut, shape in CODE_SHAPES.items())
            + "."
        )
    if code_shape == CODE_SHAPE:
        return [
            keras.layers.Conv2DTranspose(
                filters, kernel, strides=stride, activation="relu", name=f"deconv{index}"
            )
            for index, (filters, kernel, stride) in enumerate(_DECONV_BLOCKS, start=1)
        ]
    blocks = _mirror_blocks(cuts[code_shape])
    return [
        keras.layers.Conv2DTranspose(
            filters,
            kernel,
            strides=stride,
            activation=None if index == len(blocks) else "relu",
            name=f"deconv{index}",
        )
        for index, (filters, kernel, stride) in enumerate(blocks, start=1)
    ]


def surrogate_augmentation(seed: int | None = None) -> keras.Sequential:
    """Random shifts (10%), rotations (+-18 degrees) and zooms (10%) of surrogate images.

    Fills with 1 (white paper), so a shifted character stays on a blank page.
    Maps float32 `[batch, 105, 105, 1]` in [0, 1] to the same shape and range.
    """
    fill = dict(fill_mode="constant", fill_value=1.0, seed=seed)
    return keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1)),
            keras.layers.RandomTranslation(0.1, 0.1, **fill),
            keras.layers.RandomRotation(0.05, **fill),
            keras.layers.RandomZoom(0.1, **fill),
        ],
        name="augmentation",
    )


class AttackModel(keras.Model):
    """Decoder from the on-device code back to the image (the model-inversion attacker).

    Transposed convolutions that follow the code's shape (`decoder_layers`): for
    the published 1x1x32 code, four with ReLU, 1x1x32 -> 9x9x32 -> 23x23x32 ->
    51x51x1 -> 105x105x1; for a shallower cut, the device's blocks mirrored
    (33x33x32 -> 99x99x32 -> 105x105x1 after block 1). `train_step` queries the
    frozen on-device model (`training=False`) for each batch of surrogate images
    (augmented first, if asked), passes the codes through the device's defence, if any, and fits
    the decoder with the mean squared error between images and reconstructions.
    """

    def __init__(
        self,
        on_device: Callable | None = None,
        augment: bool = False,
        defense: Callable | None = None,
        code_shape=None,
        **kwargs,
    ):
        """Creates the decoder.

        Args:
          on_device: the target's on-device stage, a callable (a Keras model)
            from images `[batch, 105, 105, 1]` to codes `[batch, *code_shape]`;
            needed by `fit` / `evaluate`, not by `call`. Never trained here.
          augment: augment surrogate images while training
            (`surrogate_augmentation`).
          defense: what the device does to a code before sending it (e.g. a
            `tfleak.split.defenses.CodeNoise`), codes -> codes; None sends them
            as they are. The attacker sees only defended codes.
          code_shape: `[height, width, channels]` of the codes (a value of
            `CODE_SHAPES`); None reads it from `on_device`'s output (a Keras
            model), else the published 1x1x32.

        Raises:
          ValueError: a code shape no cut produces.
        """
        kwargs.setdefault("name", "attacker")
        super().__init__(**kwargs)
        self.on_device = on_device
        self.defense = defense
        self.augmentation = surrogate_augmentation() if augment else None
        if code_shape is None:
            code_shape = (
                on_device.compute_output_shape((1, IMAGE_SIZE, IMAGE_SIZE, 1))[1:]
                if isinstance(on_device, keras.Layer)
                else CODE_SHAPE
            )
        self.code_shape = tuple(int(d) for d in code_shape)
        self.decoder = keras.Sequential(
            [keras.Input(self.code_shape)] + decoder_layers(self.code_shape), name="decoder"
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = True  # The decoder starts from an Input: its variables exist.

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, codes, training: bool = False) -> tf.Tensor:
        """Codes float32 `[batch, *code_shape]` -> images `[batch, 105, 105, 1]`, unclipped."""
        return self.decoder(codes, training=training)

    def _images_and_codes(self, data, training: bool):
        if self.on_device is None:
            raise ValueError("AttackModel needs `on_device` (the target's stage one) to train.")
        images = data[0] if isinstance(data, (tuple, list)) else data
        if training and self.augmentation is not None:
            images = self.augmentation(images, training=True)
        codes = self.on_device(images, training=False)
        if self.defense is not None:
            codes = self.defense(codes)
        return images, tf.stop_gradient(codes)

    def train_step(self, data):
        images, codes = self._images_and_codes(data, training=True)
        with tf.GradientTape() as tape:
            reconstructions = self(codes, training=True)
            per_example = tf.reduce_mean(tf.square(images - reconstructions), axis=[1, 2, 3])
            # Mean over the global batch, so summing replicas' gradients is right.
            loss = tf.nn.compute_average_loss(per_example)
        variables = self.decoder.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        self.loss_tracker.update_state(per_example)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        images, codes = self._images_and_codes(data, training=False)
        reconstructions = self(codes, training=False)
        self.loss_tracker.update_state(
            tf.reduce_mean(tf.square(images - reconstructions), axis=[1, 2, 3])
        )
        return {m.name: m.result() for m in self.metrics}


def compile_attacker(model: AttackModel, learning_rate: float = 1e-3) -> AttackModel:
    """Compiles the attacker with Adam (its loss, the MSE, is in `train_step`).

    The optimizer is built on the decoder's variables alone: the on-device
    stage the attacker queries is never trained, so it has no Adam moments.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    model.optimizer.build(model.decoder.trainable_variables)
    return model


def reconstruct(attacker: AttackModel, on_device: Callable, images) -> np.ndarray:
    """Inverts images through the on-device stage, its defence and the decoder.

    Args:
      attacker: a trained `AttackModel` (its `defense` is applied to the codes).
      on_device: the target's stage one (images -> codes).
      images: float32 `[batch, 105, 105, 1]` in [0, 1].

    Returns:
      Reconstructions float32 `[batch, 105, 105, 1]`, clipped to [0, 1].
    """
    codes = on_device(images, training=False)
    if attacker.defense is not None:
        codes = attacker.defense(codes)
    return np.clip(attacker(codes, training=False).numpy(), 0.0, 1.0)


def evaluate_attack(
    attacker: AttackModel, on_device: Callable, dataset: tf.data.Dataset, batch_size: int = 64
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Mean MSE, PSNR (dB) and SSIM of the attacker's reconstructions of `dataset`.

    Args:
      attacker: a trained `AttackModel`.
      on_device: the target's stage one.
      dataset: unbatched `(image, label)` elements, images float32
        `[105, 105, 1]` in [0, 1].
      batch_size: images per forward pass.

    Returns:
      `(metrics, originals, reconstructions)`: metrics `{'mse', 'psnr',
      'ssim'}` averaged over all images, and the images and their
      reconstructions as float32 `[num_images, 105, 105, 1]` arrays.
    """
    originals, reconstructions = [], []
    for images, _ in dataset.batch(batch_size):
        originals.append(images.numpy())
        reconstructions.append(reconstruct(attacker, on_device, images))
    originals = np.concatenate(originals)
    reconstructions = np.concatenate(reconstructions)
    return image_metrics(originals, reconstructions), originals, reconstructions


def mean_image(dataset: tf.data.Dataset) -> np.ndarray:
    """The mean image of unbatched `(image, label)` elements, float32 `[105, 105, 1]`."""
    return np.mean(np.stack([image.numpy() for image, _ in dataset]), axis=0)


def mean_image_baseline_mse(train: tf.data.Dataset, test: tf.data.Dataset) -> float:
    """Test MSE of always answering the mean training image (what the attack must beat).

    Args:
      train, test: unbatched `(image, label)` datasets, images float32
        `[105, 105, 1]` in [0, 1].
    """
    test_images = np.stack([image.numpy() for image, _ in test])
    return float(np.mean((test_images - mean_image(train)[None]) ** 2))
