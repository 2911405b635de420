"""A model split between a device and a server, and the attacker that inverts it.

The on-device part turns an image into a small code that is sent to the server,
which finishes the prediction. An attacker who can query the on-device part
learns a decoder from code back to image: model inversion in the sense of
Fredrikson, Jha, Ristenpart, "Model Inversion Attacks that Exploit Confidence
Information and Basic Countermeasures" (CCS 2015), as in PySyft's split-network
Omniglot example. Shapes below are for Omniglot's 105 x 105 grey images.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from tensorflow import keras

from tfleak.data.omniglot import IMAGE_SIZE, NUM_ALPHABETS
from tfleak.metrics import image_metrics

__all__ = [
    "CODE_SHAPE",
    "on_device_layers",
    "server_layers",
    "TargetModel",
    "AttackModel",
    "compile_target",
    "compile_attacker",
    "reconstruct",
    "evaluate_attack",
    "mean_image_baseline_mse",
    "TrainingRun",
    "train_resumable",
]

CODE_SHAPE = (1, 1, 32)
# (filters, kernel, pool size, pool stride) of the four on-device conv blocks:
# 105 -conv7-> 99 -pool3/3-> 33 -conv7-> 27 -pool3/2-> 13 -conv5-> 9 -pool2/2-> 4
# -conv3-> 2 -pool2/2-> 1, so the code is 1 x 1 x 32.
_CONV_BLOCKS = ((32, 7, 3, 3), (32, 7, 3, 2), (32, 5, 2, 2), (32, 3, 2, 2))
# (filters, kernel, stride) of the attacker's transposed convolutions:
# 1 -> 9 -> 23 -> 51 -> 105 (valid padding: out = (in - 1) * stride + kernel).
_DECONV_BLOCKS = ((32, 9, 1), (32, 7, 2), (1, 7, 2), (1, 5, 2))


def on_device_layers(
    dropout_rate: float = 0.2, output_name: str = "mobile_output"
) -> list[keras.layers.Layer]:
    """The on-device stage: four blocks of conv, ReLU, batch norm, max pooling, dropout.

    Args:
      dropout_rate: fraction of activations dropped after each block while
        training, in [0, 1); 0 leaves the dropout layers out (the DP target).
      output_name: name of the stage's last layer, whose output is the code.

    Returns:
      Layers mapping float32 `[batch, 105, 105, 1]` images in [0, 1] to codes
      float32 `[batch, 1, 1, 32]`.
    """
    layers = []
    for index, (filters, kernel, pool, stride) in enumerate(_CONV_BLOCKS, start=1):
        last = index == len(_CONV_BLOCKS)
        pool_name = output_name if last and dropout_rate == 0 else f"pool{index}"
        layers += [
            keras.layers.Conv2D(filters, kernel, activation="relu", name=f"conv{index}"),
            keras.layers.BatchNormalization(name=f"batch_norm{index}"),
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

    def __init__(self, num_classes: int = NUM_ALPHABETS, dropout_rate: float = 0.2, **kwargs):
        """Builds both stages.

        Args:
          num_classes: number of classes (Omniglot alphabets: 50).
          dropout_rate: dropout after every on-device block and in the server
            stage, in [0, 1).
        """
        kwargs.setdefault("name", "target")
        super().__init__(**kwargs)
        if num_classes < 2 or not 0 <= dropout_rate < 1:
            raise ValueError(
                f"need num_classes >= 2 and dropout_rate in [0, 1); got {num_classes}, "
                f"{dropout_rate}."
            )
        self.on_device_model = keras.Sequential(on_device_layers(dropout_rate), name="on_device")
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


class AttackModel(keras.Model):
    """Decoder from the on-device code back to the image (the model-inversion attacker).

    Four transposed convolutions with ReLU, 1x1x32 -> 9x9x32 -> 23x23x32 ->
    51x51x1 -> 105x105x1. `train_step` queries the frozen on-device model
    (`training=False`) for each batch of surrogate images and fits the decoder
    with the mean squared error between the images and their reconstructions.
    """

    def __init__(self, on_device: Callable | None = None, **kwargs):
        """Creates the decoder.

        Args:
          on_device: the target's on-device stage, a callable (a Keras model)
            from images `[batch, 105, 105, 1]` to codes `[batch, 1, 1, 32]`;
            needed by `fit` / `evaluate`, not by `call`. Never trained here.
        """
        kwargs.setdefault("name", "attacker")
        super().__init__(**kwargs)
        self.on_device = on_device
        self.decoder = keras.Sequential(
            [keras.Input(CODE_SHAPE)]
            + [
                keras.layers.Conv2DTranspose(
                    filters, kernel, strides=stride, activation="relu", name=f"deconv{index}"
                )
                for index, (filters, kernel, stride) in enumerate(_DECONV_BLOCKS, start=1)
            ],
            name="decoder",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, codes, training: bool = False) -> tf.Tensor:
        """Codes float32 `[batch, 1, 1, 32]` -> images float32 `[batch, 105, 105, 1]` (>= 0)."""
        return self.decoder(codes, training=training)

    def _images_and_codes(self, data):
        if self.on_device is None:
            raise ValueError("AttackModel needs `on_device` (the target's stage one) to train.")
        images = data[0] if isinstance(data, (tuple, list)) else data
        return images, tf.stop_gradient(self.on_device(images, training=False))

    def train_step(self, data):
        images, codes = self._images_and_codes(data)
        with tf.GradientTape() as tape:
            reconstructions = self(codes, training=True)
            per_example = tf.reduce_mean(tf.square(images - reconstructions), axis=[1, 2, 3])
            # Mean over the global batch, so summing replicas' gradients is right.
            loss = tf.nn.compute_average_loss(per_example)
        variables = self.decoder.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss_tracker.update_state(per_example)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        images, codes = self._images_and_codes(data)
        reconstructions = self(codes, training=False)
        self.loss_tracker.update_state(
            tf.reduce_mean(tf.square(images - reconstructions), axis=[1, 2, 3])
        )
        return {m.name: m.result() for m in self.metrics}


def compile_target(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    """Compiles a target with Adam and sparse categorical cross-entropy (probabilities)."""
    model.compile(
        optimizer=keras.optimizers.legacy.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def compile_attacker(model: AttackModel, learning_rate: float = 1e-3) -> AttackModel:
    """Compiles the attacker with Adam (its loss, the MSE, is in `train_step`)."""
    model.compile(optimizer=keras.optimizers.legacy.Adam(learning_rate))
    return model


def reconstruct(attacker: AttackModel, on_device: Callable, images) -> np.ndarray:
    """Inverts images through the on-device stage and the decoder.

    Args:
      attacker: a trained `AttackModel`.
      on_device: the target's stage one (images -> codes).
      images: float32 `[batch, 105, 105, 1]` in [0, 1].

    Returns:
      Reconstructions float32 `[batch, 105, 105, 1]`, clipped to [0, 1].
    """
    codes = on_device(images, training=False)
    return np.clip(attacker(codes, training=False).numpy(), 0.0, 1.0)


def evaluate_attack(
    attacker: AttackModel, on_device: Callable, dataset: tf.data.Dataset, batch_size: int = 64
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Mean MSE, PSNR (dB) and SSIM of the attacker's reconstructions of `dataset`.

    Args:
      attacker: a trained `AttackModel`.
      on_device: the target's stage one.
      dataset: unbatched `(image, label)` elements, images float32
        `[105, 105, 1]` in [0, 1] that the attacker did not train on.
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


def mean_image_baseline_mse(train: tf.data.Dataset, test: tf.data.Dataset) -> float:
    """Test MSE of always answering the mean training image (what the attack must beat).

    Args:
      train, test: unbatched `(image, label)` datasets, images float32
        `[105, 105, 1]` in [0, 1].
    """
    train_images = np.stack([image.numpy() for image, _ in train])
    test_images = np.stack([image.numpy() for image, _ in test])
    mean_image = train_images.mean(axis=0, keepdims=True)
    return float(np.mean((test_images - mean_image) ** 2))


@dataclass
class TrainingRun:
    """What `train_resumable` did.

    Attributes:
      history: one dict per epoch (all epochs, also those of an earlier,
        interrupted run): Keras' metrics, `epoch` (1-based) and `seconds`.
      resumed_from_epoch: epochs already done when this call started.
    """

    history: list = field(default_factory=list)
    resumed_from_epoch: int = 0

    @property
    def final(self) -> dict:
        """The last epoch's metrics."""
        return self.history[-1] if self.history else {}

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall-clock seconds of the epochs this call ran (first epoch excluded
        when there are more, as it includes tracing)."""
        seconds = [h["seconds"] for h in self.history[self.resumed_from_epoch :]]
        return float(np.mean(seconds[1:] if len(seconds) > 1 else seconds)) if seconds else 0.0


class _Progress(keras.callbacks.Callback):
    """Logs the step within an epoch at most every `seconds`, for slow (DP) epochs."""

    def __init__(self, log: Callable[[str], None], prefix: str, steps: int, seconds: float = 30):
        super().__init__()
        self.log, self.prefix, self.steps, self.seconds = log, prefix, steps, seconds
        self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.last >= self.seconds:
            self.last = time.perf_counter()
            self.log(f"{self.prefix}: step {batch + 1}/{self.steps}")


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def train_resumable(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    checkpoint_dir=None,
    validation_data: tf.data.Dataset | None = None,
    drop_remainder: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    log: Callable[[str], None] | None = print,
    name: str = "model",
) -> TrainingRun:
    """Trains a compiled model epoch by epoch, checkpointing so a killed run resumes.

    After every epoch the model, its optimizer (Adam moments, step count) and
    the epoch count are saved with a `tf.train.CheckpointManager` in
    `checkpoint_dir`; a later call with the same directory restores them and
    continues with the next epoch. A resumed run ends with the same weights
    as an uninterrupted one because everything random in an epoch is a
    function of `(seed, epoch)`: the shuffle order, and the stateful random ops
    (dropout, DP noise), whose kernels are re-created from the global seed
    `(seed, epoch)` by retracing the train function at the start of each epoch.

    Args:
      model: a compiled, built Keras model (built under the strategy scope
        it is to train under).
      dataset: unbatched, finite training elements `(x, y)`; cache it, it is
        iterated once per epoch.
      epochs: total number of epochs, >= 1.
      batch_size: global batch size (split across replicas by Keras).
      seed: integer seed of shuffling and of the random ops.
      checkpoint_dir: where to keep the checkpoint; None trains without one.
      validation_data: unbatched elements evaluated after every epoch.
      drop_remainder: drop the last, smaller batch (DP microbatching needs it).
      callbacks: extra Keras callbacks for every epoch's `fit`.
      log: called with one progress line per epoch; None is silent.
      name: what the progress lines call the model.

    Returns:
      A `TrainingRun` with the history of all `epochs` epochs.

    Raises:
      ValueError: `epochs` or `batch_size` < 1, or fewer than one batch of data.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; got {epochs}, {batch_size}.")
    size = int(dataset.cardinality())
    if size < 0:
        size = int(dataset.reduce(0, lambda count, _: count + 1))
    if size < batch_size and drop_remainder:
        raise ValueError(f"{size} training examples make no whole batch of {batch_size}.")
    run = TrainingRun()
    checkpoint = manager = None
    history_path = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epochs_done=done)
        manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=1)
        history_path = checkpoint_dir / "history.json"
        if manager.latest_checkpoint:
            # Partial: an optimizer restored after its last epoch never creates its slots.
            checkpoint.restore(manager.latest_checkpoint).expect_partial()
            run.resumed_from_epoch = int(done.numpy())
            run.history = json.loads(history_path.read_text())[: run.resumed_from_epoch]
            if log:
                log(f"{name}: resumed from {manager.latest_checkpoint} after epoch "
                    f"{run.resumed_from_epoch}/{epochs}")  # fmt: skip
    steps = size // batch_size if drop_remainder else -(-size // batch_size)
    validation = None if validation_data is None else validation_data.batch(batch_size)
    for epoch in range(run.resumed_from_epoch, epochs):
        epoch_seed = _epoch_seed(seed, epoch)
        tf.random.set_seed(epoch_seed)
        model.train_function = None  # Retrace: random kernels restart from epoch_seed.
        batches = dataset.shuffle(size, seed=epoch_seed, reshuffle_each_iteration=False)
        batches = batches.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)
        start = time.perf_counter()
        fitted = model.fit(
            batches,
            initial_epoch=epoch,
            epochs=epoch + 1,
            validation_data=validation,
            callbacks=list(callbacks)
            + ([_Progress(log, f"{name} epoch {epoch + 1}/{epochs}", steps)] if log else []),
            verbose=0,
        )
        record = {key: float(values[-1]) for key, values in fitted.history.items()}
        record.update(epoch=epoch + 1, seconds=time.perf_counter() - start)
        run.history.append(record)
        if manager is not None:
            checkpoint.epochs_done.assign(epoch + 1)
            manager.save()
            history_path.write_text(json.dumps(run.history, indent=1))
        if log:
            metrics = ", ".join(
                f"{key} {value:.4f}"
                for key, value in record.items()
                if key not in ("epoch", "seconds")
            )
            log(f"{name} epoch {epoch + 1}/{epochs}: {metrics} ({record['seconds']:.1f} s)")
    return run
