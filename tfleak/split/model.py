"""The split target: an on-device stage that sends a code, a server stage that classifies.

The on-device part turns an image into a code that is sent to the server, which
finishes the prediction (PySyft's split-network Omniglot example; the split
learning of Vepakomma et al. 2018). The network is four blocks of conv, ReLU,
normalization, max pooling (and dropout), then Dense 256 and a softmax; the
split ("cut") falls after block `cut`, 1 to 4 (4 as published). Shapes for
Omniglot's 105 x 105 grey images:

    block  conv  pool (size/stride)  output = the code when cut there
      1    7x7       3/3             105 -> 99 -> 33:  33 x 33 x 32
      2    7x7       3/2              33 -> 27 -> 13:  13 x 13 x 32
      3    5x5       2/2              13 ->  9 ->  4:   4 x  4 x 32
      4    3x3       2/2               4 ->  2 ->  1:   1 x  1 x 32
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfleak.data.omniglot import IMAGE_SIZE, NUM_ALPHABETS

__all__ = [
    "BLOCKS",
    "CONV_BLOCKS",
    "CODE_SHAPE",
    "CODE_SHAPES",
    "NORMALIZATIONS",
    "on_device_layers",
    "server_layers",
    "TargetModel",
    "compile_target",
    "device_stage",
    "server_stage",
]

# (filters, kernel, pool size, pool stride) of the four conv blocks (table above).
CONV_BLOCKS = ((32, 7, 3, 3), (32, 7, 3, 2), (32, 5, 2, 2), (32, 3, 2, 2))
BLOCKS = len(CONV_BLOCKS)
# cut (blocks on the device) -> the code's [height, width, channels].
CODE_SHAPES = {1: (33, 33, 32), 2: (13, 13, 32), 3: (4, 4, 32), 4: (1, 1, 32)}
CODE_SHAPE = CODE_SHAPES[BLOCKS]  # The published cut, after the last block.
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


def _check_cut(cut: int) -> None:
    if cut not in CODE_SHAPES:
        raise ValueError(
            f"cut must be one of {', '.join(map(str, CODE_SHAPES))} (blocks on the device); "
            f"got {cut!r}."
        )


def _blocks(first: int, last: int, dropout_rate: float, norm: str, output_name: str | None):
    """Conv blocks `first..last` (1-based); the last layer of block `last` is `output_name`."""
    if norm not in NORMALIZATIONS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMALIZATIONS)}.")
    layers = []
    for index in range(first, last + 1):
        filters, kernel, pool, stride = CONV_BLOCKS[index - 1]
        final = output_name if index == last else None
        layers += [
            keras.layers.Conv2D(filters, kernel, activation="relu", name=f"conv{index}"),
            NORMALIZATIONS[norm](f"{norm}_norm{index}"),
            keras.layers.MaxPooling2D(
                pool, strides=stride, name=final if final and dropout_rate == 0 else f"pool{index}"
            ),
        ]
        if dropout_rate > 0:
            layers.append(keras.layers.Dropout(dropout_rate, name=final or f"dropout{index}"))
    return layers


def on_device_layers(
    dropout_rate: float = 0.2,
    output_name: str = "mobile_output",
    norm: str = "batch",
    cut: int = BLOCKS,
) -> list[keras.layers.Layer]:
    """The on-device stage: blocks 1..`cut` of conv, ReLU, normalization, max pooling, dropout.

    Args:
      dropout_rate: fraction of activations dropped after each block while
        training, in [0, 1); 0 leaves the dropout layers out (the DP target).
      output_name: name of the stage's last layer, whose output is the code.
      norm: 'batch' (as published) or 'group'; see `NORMALIZATIONS`.
      cut: blocks on the device, 1 to 4 (4 as published).

    Returns:
      Layers mapping float32 `[batch, 105, 105, 1]` images in [0, 1] to codes
      float32 `[batch, *CODE_SHAPES[cut]]` (`[batch, 1, 1, 32]` for cut 4).

    Raises:
      ValueError: an unknown norm or cut.
    """
    _check_cut(cut)
    return _blocks(1, cut, dropout_rate, norm, output_name)


def server_layers(
    num_classes: int = NUM_ALPHABETS,
    dropout_rate: float = 0.2,
    norm: str = "batch",
    cut: int = BLOCKS,
) -> list[keras.layers.Layer]:
    """The server stage: blocks `cut`+1..4, then Dense 256 ReLU, flatten, dropout, softmax.

    Maps codes `[batch, *CODE_SHAPES[cut]]` to class probabilities
    `[batch, num_classes]`; for the published cut (4) it is the dense head alone.

    Raises:
      ValueError: an unknown norm or cut.
    """
    _check_cut(cut)
    layers = _blocks(cut + 1, BLOCKS, dropout_rate, norm, None)
    layers += [
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
      >>> TargetModel(cut=1).mobile_step(images).shape   # [batch, 33, 33, 32]
    """

    def __init__(
        self,
        num_classes: int = NUM_ALPHABETS,
        dropout_rate: float = 0.2,
        norm: str = "batch",
        cut: int = BLOCKS,
        **kwargs,
    ):
        """Builds both stages.

        Args:
          num_classes: number of classes (Omniglot alphabets: 50).
          dropout_rate: dropout after every conv block and in the server
            stage, in [0, 1).
          norm: the normalization of the conv blocks, 'batch' (as published)
            or 'group'.
          cut: conv blocks on the device, 1 to 4 (4 as published); the code
            has shape `CODE_SHAPES[cut]`.

        Raises:
          ValueError: a value out of range, or an unknown norm or cut.
        """
        kwargs.setdefault("name", "target")
        super().__init__(**kwargs)
        if num_classes < 2 or not 0 <= dropout_rate < 1:
            raise ValueError(
                f"need num_classes >= 2 and dropout_rate in [0, 1); got {num_classes}, "
                f"{dropout_rate}."
            )
        self.cut = cut
        self.on_device_model = keras.Sequential(
            [keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1))]
            + on_device_layers(dropout_rate, norm=norm, cut=cut),
            name="on_device",
        )
        self.server_model = keras.Sequential(
            [keras.Input(CODE_SHAPES[cut])] + server_layers(num_classes, dropout_rate, norm, cut),
            name="server",
        )
        # Both stages start from an Input, so every variable exists now. Marking the
        # model built (instead of tracing `build`) leaves it open to a subclass's own
        # trackers, such as `NoPeekTarget`'s.
        self.built = True

    @property
    def code_shape(self) -> tuple[int, int, int]:
        """`[height, width, channels]` of the code the device sends."""
        return CODE_SHAPES[self.cut]

    def mobile_step(self, images, training: bool = False) -> tf.Tensor:
        """Images float32 `[batch, 105, 105, 1]` in [0, 1] -> codes `[batch, *code_shape]`."""
        return self.on_device_model(images, training=training)

    def server_step(self, codes, training: bool = False) -> tf.Tensor:
        """Codes `[batch, *code_shape]` -> class probabilities `[batch, num_classes]`."""
        return self.server_model(codes, training=training)

    def call(self, images, training: bool = False) -> tf.Tensor:
        return self.server_step(self.mobile_step(images, training), training)


def compile_target(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Compiles a target with Adam and sparse categorical cross-entropy (probabilities)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def _stage_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of a whole target, images to probabilities, in order."""
    if isinstance(model, TargetModel):
        return model.on_device_model.layers + model.server_model.layers
    inner = getattr(model, "model", None)  # A wrapper such as tfleak.privacy.DPModel.
    if isinstance(inner, keras.Model):
        model = inner
    return list(model.layers)


def device_stage(model: keras.Model, cut: int) -> keras.Sequential:
    """The on-device stage of a trained target cut after block `cut`, sharing its weights.

    The network is the same whatever the cut (only where the code leaves the
    device moves), so one trained target serves every cut: the stage is the
    target's own layers from the input through block `cut`'s pooling (and its
    dropout, if any), no copy. Works for a `TargetModel` of any cut, a
    Sequential target (`tfleak.privacy.dp_target_model`) and a wrapper of one
    (`tfleak.privacy.DPModel`).

    Args:
      model: a built target.
      cut: conv blocks on the device, 1 to 4.

    Returns:
      A Sequential model, images float32 `[batch, 105, 105, 1]` in [0, 1] ->
      codes `[batch, *CODE_SHAPES[cut]]`.

    Raises:
      ValueError: an unknown cut, or a model with fewer than `cut` pooling layers.
    """
    return keras.Sequential(
        [keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1))] + _split_layers(model, cut)[0],
        name=f"on_device_cut{cut}",
    )


def server_stage(model: keras.Model, cut: int) -> keras.Sequential:
    """The server's part of a trained target cut after block `cut`, sharing its weights.

    The counterpart of `device_stage`: codes `[batch, *CODE_SHAPES[cut]]` ->
    class probabilities; `server_stage(m, k)(device_stage(m, k)(x))` is `m(x)`.

    Raises:
      ValueError: an unknown cut, or a model with fewer than `cut` pooling layers.
    """
    return keras.Sequential(
        [keras.Input(CODE_SHAPES[cut])] + _split_layers(model, cut)[1], name=f"server_cut{cut}"
    )


def _split_layers(model: keras.Model, cut: int):
    _check_cut(cut)
    layers, pools = _stage_layers(model), 0
    for index, layer in enumerate(layers):
        if pools == cut and not isinstance(layer, keras.layers.Dropout):
            return layers[:index], layers[index:]
        pools += isinstance(layer, keras.layers.MaxPooling2D)
    raise ValueError(
        f"model {model.name!r} has {pools} pooling layers and a server part; cut {cut} "
        f"needs {cut} blocks on the device."
    )
