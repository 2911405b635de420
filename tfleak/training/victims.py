"""Trained victims: fit a CIFAR victim on CIFAR-10 (JPEG) once, resumably, then reuse its weights.

A gradient leaks differently from a trained network than from a freshly
initialised one (Geiping et al. 2020, section 5), so attacks are run on both.
`train_victim` trains a Keras victim on the CIFAR-10 training images with
Keras `fit`, reports its test accuracy, and keeps the weights as a
`.weights.h5` file (and the accuracy in a JSON file beside it) in a cache keyed
by the model's name, the seed, the number of epochs and a digest of the other
training settings; the next call with the same key loads them instead of
training.

Training is resumable: after every epoch the weights and the optimizer's
state (momentum, step count) go atomically to a `.partial.weights.h5` file
beside the cache entry. A run killed part way restarts from the last finished
epoch, and because epoch `e`'s order and augmentation depend only on
(seed, e) (`tfleak.data.cifar10.cifar10_dataset`), the resumed run takes the
same steps as an uninterrupted one.

Data: the image-folder layout `DATA_DIR/cifar10/{train,test}/<class>/*.jpg`
(CIFAR-10 re-encoded as JPEG; the sorted class names are the labels 0..9),
checked and read by `tfleak.data.cifar10`. Training uses the standard light
CIFAR augmentation (a random 32x32 crop of the image padded by 4 pixels, and a
random horizontal flip), SGD with Nesterov momentum 0.9, decoupled weight
decay and a cosine-decayed learning rate.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import keras
import tensorflow as tf

from tfleak.data.cifar10 import cifar10_arrays, cifar10_dataset
from tfleak.io import atomic_write, atomic_write_json, read_json

__all__ = [
    "CACHE_DIR_ENV",
    "default_cache_dir",
    "train_victim",
]

# The root of tfleak's caches; victims go to `$TFLEAK_CACHE_DIR/victims`.
CACHE_DIR_ENV = "TFLEAK_CACHE_DIR"
# Bumped when the training recipe changes, so old caches are not taken for new ones.
_RECIPE_VERSION = 2
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

ModelOrBuilder = Union[keras.Model, Callable[..., keras.Model]]


def default_cache_dir() -> Path:
    """`$TFLEAK_CACHE_DIR/victims` if that variable is set, else `~/.cache/tfleak/victims`."""
    root = os.environ.get(CACHE_DIR_ENV)
    root = Path(root).expanduser() if root else Path.home() / ".cache" / "tfleak"
    return root / "victims"


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class _Checkpoint(keras.callbacks.Callback):
    """Writes the weights and the optimizer's state atomically after every epoch."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        atomic_write(self.path, lambda path: self.model.save_weights(str(path), overwrite=True))


def _load(model: keras.Model, path: Path, name: str) -> None:
    try:
        model.load_weights(str(path))
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"the cached weights {path} do not fit model {name!r} ({error}); "
            "delete the file, or give this architecture another name."
        ) from error


def train_victim(
    model: ModelOrBuilder,
    name: Optional[str] = None,
    epochs: int = 1,
    data_dir=None,
    seed: int = 0,
    cache_dir=None,
    batch_size: int = 128,
    learning_rate: float = 0.1,
    weight_decay: float = 5e-4,
    augment: bool = True,
    limit: Optional[int] = None,
    verbose: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[keras.Model, Optional[float]]:
    """Trains a victim on CIFAR-10 (JPEG), or loads the weights an earlier call cached.

    Args:
      model: a Keras classifier returning logits for `[batch, 32, 32, 3]`
        float32 images in [0, 1] (trained, or loaded, in place), or a builder
        called as `model(seed=seed)` such as `tfleak.models.resnet.resnet20`.
      name: the cache key's model name (letters, digits, `_.-`); the model's
        own `name` if None. Two different architectures need two names.
      epochs: passes over the training set; 0 returns the untrained model.
      data_dir: folder holding `cifar10/{train,test}/<class>/*.jpg`.
      seed: seed of the builder, the data order and the augmentation.
      cache_dir: where the `.weights.h5` and `.json` files live; by default
        `default_cache_dir()` (`$TFLEAK_CACHE_DIR/victims` or
        `~/.cache/tfleak/victims`).
      batch_size: images per SGD step.
      learning_rate: peak SGD learning rate, cosine-decayed to 0 over training.
      weight_decay: decoupled weight decay, per unit learning rate.
      augment: random crops and flips of the training images.
      limit: train and test on a seeded random subset of this many images of
        each split (for quick runs and tests); None uses all 50,000 / 10,000.
      verbose: Keras `fit` verbosity (1: progress bar, 2: a line per epoch, 0: none).
      callbacks: more Keras callbacks for `fit` (called after the epoch's
        checkpoint is written).

    Returns:
      `(model, test_accuracy)`: the trained model and its top-1 accuracy in
      [0, 1] on the CIFAR-10 (JPEG) test images (a seeded random subset of
      `limit` of them if `limit` is set); `(model, None)` when `epochs` is 0.

    Raises:
      ValueError: if `epochs` is negative, `name` unusable as a file name,
        `data_dir` None or not CIFAR-10 (JPEG) (other classes, part of a
        split), or a cached file does not fit the model.
      FileNotFoundError: if the CIFAR-10 image folders are missing.
    """
    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be a whole number >= 0; got {epochs}.")
    epochs = int(epochs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    if not isinstance(model, keras.Model):
        if not callable(model):
            raise ValueError(f"model must be a keras.Model or a builder; got {type(model)}.")
        model = model(seed=seed)
    name = model.name if name is None else name
    if not _NAME.match(str(name)):
        raise ValueError(
            f"name {name!r} cannot key a cache file; use letters, digits, '_', '.' and '-'."
        )
    if epochs == 0:
        return model, None

    settings = {
        "recipe": _RECIPE_VERSION,
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "augment": bool(augment),
        "limit": None if limit is None else int(limit),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    stem = f"{name}_seed{int(seed)}_epochs{epochs}_{digest}"
    weights_path = cache_dir / f"{stem}.weights.h5"
    record_path = cache_dir / f"{stem}.json"
    checkpoint_path = cache_dir / f"{stem}.partial.weights.h5"

    record = read_json(record_path)
    if weights_path.is_file() and record is not None:
        _load(model, weights_path, name)
        if verbose:
            print(
                f"Loaded {name} ({epochs} epochs, seed {seed}) from {weights_path}: "
                f"test accuracy {record['test_accuracy']:.4f}"
            )
        return model, float(record["test_accuracy"])

    train_arrays = cifar10_arrays(data_dir, "train", limit, seed)
    test_arrays = cifar10_arrays(data_dir, "test", limit, seed)
    steps = len(train_arrays[0]) // int(batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(float(learning_rate), epochs * max(steps, 1))
    model.compile(
        optimizer=keras.optimizers.SGD(
            schedule, momentum=0.9, nesterov=True, weight_decay=float(weight_decay)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        # XLA made a ResNet-20 step 1.5x slower on a CPU (0.68 against 0.45 s at batch 128).
        jit_compile=False,
    )
    first_epoch = 0
    if checkpoint_path.is_file():
        model.optimizer.build(model.trainable_variables)
        _load(model, checkpoint_path, name)
        done = int(model.optimizer.iterations.numpy())
        if steps < 1 or done % steps or done > epochs * steps:
            raise ValueError(
                f"the checkpoint {checkpoint_path} holds {done} steps, not a whole number of "
                f"this run's {epochs} epochs of {steps} steps; delete it to train afresh."
            )
        first_epoch = done // steps
        if verbose:
            print(f"Resuming {name} from {checkpoint_path} after epoch {first_epoch}.")
    train = cifar10_dataset(
        None,
        "train",
        batch_size,
        seed,
        training=True,
        augment=augment,
        epochs=epochs,
        first_epoch=first_epoch,
        arrays=train_arrays,
    )
    test = cifar10_dataset(None, "test", 500, arrays=test_arrays)
    timer = _EpochTimer()
    if first_epoch < epochs:
        model.fit(
            train,
            epochs=epochs,
            initial_epoch=first_epoch,
            steps_per_epoch=steps,
            shuffle=False,  # the dataset's own per-epoch order
            callbacks=[_Checkpoint(checkpoint_path), timer, *callbacks],
            verbose=verbose,
        )
    _, accuracy = model.evaluate(test, verbose=0)
    accuracy = float(accuracy)
    if verbose:
        print(f"{name}: test accuracy {accuracy:.4f} after {epochs} epochs")

    atomic_write(weights_path, lambda path: model.save_weights(str(path), overwrite=True))
    record = {
        "model": name,
        "seed": int(seed),
        "epochs": epochs,
        "test_accuracy": accuracy,
        "seconds_per_epoch": [round(s, 2) for s in timer.seconds],
        "resumed_after_epoch": first_epoch,
        "steps_per_epoch": steps,
        "parameters": int(model.count_params()),
        "settings": settings,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    atomic_write_json(record_path, record)
    checkpoint_path.unlink(missing_ok=True)
    return model, accuracy
