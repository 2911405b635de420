"""The split target: an on-device stage that sends a code, a server stage that classifies.

The on-device part turns an image into a small code that is sent to the server,
which finishes the prediction (PySyft's split-network Omniglot example). Shapes
below are for Omniglot's 105 x 105 grey images.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow import keras

from tfleak.data.omniglot import IMAGE_SIZE, NUM_ALPHABETS

__all__ = [
    "CODE_SHAPE",
    "NORMALIZATIONS",
    "on_device_layers",
    "server_layers",
    "TargetModel",
    "compile_target",
]

CODE_SHAPE = (1, 1, 32)
# (filters, kernel, pool size, pool stride) of the four on-device conv blocks:
# 105 -conv7-> 99 -pool3/3-> 33 -conv7-> 27 -pool3/2-> 13 -conv5-> 9 -pool2/2-> 4
# -conv3-> 2 -pool2/2-> 1, so the code is 1 x 1 x 32.
_CONV_BLOCKS = ((32, 7, 3, 3), (32, 7, 3, 2), (32, 5, 2, 2), (32, 3, 2, 2))
# (filters, kernel, stride) of the attacker's transposed convolutions:
# 1 -> 9 -> 23 -> 51 -> 105 (valid padding: out = (in - 1) * stride + kernel).
# Groups of the group-normalization variant: 8 groups of 4 of the 32 channels.
GROUPS = 8


def _batch_norm(name):
    return keras.layers.BatchNormalization(name=name)


def _group_norm(name):
    return keras.layers.GroupNormalization(GROUPS, name=name)


# name -> normalization layer factory. 'batch' (as published) normalizes with
# statistics of the whole batch while training, mixing its examples; 'group'
# (Wu and He, ECCV 2018) normalizes each example by its own statistics, so an
# example's gradient depends on it alone, as DP-SGD's per-example clipping needs.
NORMALIZATIONS = {"batch": _batch_norm, "group": _group_norm}


def on_device_layers(
    dropout_rate: float = 0.2, output_name: str = "mobile_output", norm: str = "batch"
) -> list[keras.layers.Layer]:
    """The on-device stage: four blocks of conv, ReLU, normalization, max pooling, dropout.

    Args:
      dropout_rate: fraction of activations dropped after each block while
        training, in [0, 1); 0 leaves the dropout layers out (the DP target).
      output_name: name of the stage's last layer, whose output is the code.
      norm: 'batch' (as published) or 'group'; see `NORMALIZATIONS`.

    Returns:
      Layers mapping float32 `[batch, 105, 105, 1]` images in [0, 1] to codes
      float32 `[batch, 1, 1, 32]`.
    """
    if norm not in NORMALIZATIONS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMALIZATIONS)}.")
    layers = []
    for index, (filters, kernel, pool, stride) in enumerate(_CONV_BLOCKS, start=1):
        last = index == len(_CONV_BLOCKS)
        pool_name = output_name if last and dropout_rate == 0 else f"pool{index}"
        layers += [
            keras.layers.Conv2D(filters, kernel, activation="relu", name=f"conv{index}"),
            NORMALIZATIONS[norm](f"{norm}_norm{index}"),
            keras.layers.MaxPooling2D(pool, strides=stride, name=pool_name),
        ]
        if dropout_rate > 0:
            dropout_name = output_name if last else f"dropout{index}"
            layers.append(keras.layers.Dropout(dropout_rate, name=dropout_name))
    return layers


def server_layers(
    num_classes: int = NUM_ALPHABETS, dropout_rate: float = 0.2
) -> list[keras.layers.Layer]:
    """The server stage: Dense 256 ReLU, flatten, dropout, softmax over the classes.

    Maps codes `[batch, 1, 1, 32]` to class probabilities `[batch, num_classes]`.
    """
    layers = [
        keras.layers.Dense(256, activation="relu", name="server_dense"),
        keras.layers.Flatten(name="server_flatten"),
    ]
    if dropout_rate > 0:
        layers.append(keras.layers.Dropout(dropout_rate, name="server_dropout"))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="server_output"))
    return layers


class TargetModel(keras.Model):
    """The split classifier: `on_device_model` on the phone, `server_model` on the server.

    Example:
      >>> model = TargetModel()
      >>> code = model.mobile_step(images)          # [batch, 1, 1, 32], sent to the server
      >>> probabilities = model.server_step(code)   # [batch, 50]
    """

    def __init__(
        self,
        num_classes: int = NUM_ALPHABETS,
        dropout_rate: float = 0.2,
        norm: str = "batch",
        **kwargs,
    ):
        """Builds both stages.

        Args:
          num_classes: number of classes (Omniglot alphabets: 50).
          dropout_rate: dropout after every on-device block and in the server
            stage, in [0, 1).
          norm: the on-device normalization, 'batch' (as published) or 'group'.
        """
        kwargs.setdefault("name", "target")
        super().__init__(**kwargs)
        if num_classes < 2 or not 0 <= dropout_rate < 1:
            raise ValueError(
                f"need num_classes >= 2 and dropout_rate in [0, 1); got {num_classes}, "
                f"{dropout_rate}."
            )
        self.on_device_model = keras.Sequential(
            on_device_layers(dropout_rate, norm=norm), name="on_device"
        )
        self.server_model = keras.Sequential(
            server_layers(num_classes, dropout_rate), name="server"
        )
        self.build((None, IMAGE_SIZE, IMAGE_SIZE, 1))

    def mobile_step(self, images, training: bool = False) -> tf.Tensor:
        """Images float32 `[batch, 105, 105, 1]` in [0, 1] -> codes `[batch, 1, 1, 32]`."""
        return self.on_device_model(images, training=training)

    def server_step(self, codes, training: bool = False) -> tf.Tensor:
        """Codes `[batch, 1, 1, 32]` -> class probabilities `[batch, num_classes]`."""
        return self.server_model(codes, training=training)

    def call(self, images, training: bool = False) -> tf.Tensor:
        return self.server_step(self.mobile_step(images, training), training)


def compile_target(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Compiles a target with Adam and sparse categorical cross-entropy (probabilities)."""
    model.compile(
        optimizer=keras.optimizers.legacy.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model
