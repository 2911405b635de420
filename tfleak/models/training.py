"""Trained victims: fit a CIFAR victim on CIFAR-10 once, then reuse its weights.

A gradient leaks differently from a trained network than from a freshly
initialised one (Geiping et al. 2020, section 5), so attacks are run on both.
`train_victim` trains a Keras victim on the CIFAR-10 training images with
Keras `fit`, reports its test accuracy, and keeps the weights as a `.keras`
file (and the accuracy in a JSON file beside it) in a cache keyed by the model's
name, the seed, the number of epochs and a digest of the other training
settings; the next call with the same key loads them instead of training.

Data: the image-folder layout `DATA_DIR/cifar10/{train,test}/<class>/*.jpg`
(CIFAR-10 re-encoded as JPEG; the sorted class names are the labels 0..9),
read with `keras.utils.image_dataset_from_directory` and scaled to [0, 1].
Training uses the standard light CIFAR augmentation (a random 32x32 crop of the
image padded by 4 pixels, and a random horizontal flip), SGD with Nesterov
momentum 0.9, weight decay and a cosine-decayed learning rate.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Union

import tensorflow as tf
from tensorflow import keras

__all__ = [
    "CACHE_DIR_ENV",
    "cifar10_dataset",
    "default_cache_dir",
    "train_victim",
]

# The root of tfleak's caches; victims go to `$TFLEAK_CACHE_DIR/victims`.
CACHE_DIR_ENV = "TFLEAK_CACHE_DIR"
# Bumped when the training recipe changes, so old caches are not taken for new ones.
_RECIPE_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

ModelOrBuilder = Union[keras.Model, Callable[..., keras.Model]]


def default_cache_dir() -> Path:
    """`$TFLEAK_CACHE_DIR/victims` if that variable is set, else `~/.cache/tfleak/victims`."""
    root = os.environ.get(CACHE_DIR_ENV)
    root = Path(root).expanduser() if root else Path.home() / ".cache" / "tfleak"
    return root / "victims"


def _cifar10_split_dir(data_dir, split: str) -> Path:
    if data_dir is None:
        raise ValueError(
            "data_dir is required to train a victim: pass the folder that holds "
            "cifar10/train/<class>/*.jpg and cifar10/test/<class>/*.jpg."
        )
    data_dir = Path(data_dir).expanduser()
    for candidate in (data_dir / "cifar10" / split, data_dir / split):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no CIFAR-10 {split} images under {str(data_dir)!r}: expected the image-folder "
        f"layout {data_dir / 'cifar10' / split}/<class>/*.jpg (ten class folders, sorted "
        "names are labels 0..9)."
    )


def cifar10_dataset(
    data_dir,
    split: str,
    batch_size: int = 128,
    seed: int = 0,
    training: bool = False,
    limit: Optional[int] = None,
) -> tf.data.Dataset:
    """CIFAR-10 (JPEG) from an image folder as batches of float32 images in [0, 1].

    Args:
      data_dir: folder holding `cifar10/<split>/<class>/*.jpg`.
      split: 'train' or 'test'.
      batch_size: images per batch.
      seed: seed of the file order, the per-epoch shuffle and the augmentation.
      training: shuffle every epoch and augment (random crop of the 4-pixel
        zero-padded image, random horizontal flip); otherwise a fixed order.
      limit: keep only this many images (a seeded random subset), for quick runs.

    Returns:
      A `tf.data.Dataset` of `(images, labels)`: `[batch, 32, 32, 3]` float32 in
      [0, 1] and `[batch]` int32 class indices. The decoded images are cached in
      memory as uint8 (150 MB for the training split).

    Raises:
      FileNotFoundError: if the split's folder is missing.
      ValueError: if `split`, `batch_size` or `limit` is invalid.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be a positive number of images or None; got {limit}.")
    directory = _cifar10_split_dir(data_dir, split)
    images = keras.utils.image_dataset_from_directory(
        directory,
        labels="inferred",
        label_mode="int",
        image_size=(32, 32),
        batch_size=None,
        shuffle=True,  # the seeded file order, so `limit` keeps every class
        seed=seed,
    )
    if limit is not None:
        images = images.take(int(limit))
    images = images.map(lambda x, y: (tf.cast(tf.round(x), tf.uint8), tf.cast(y, tf.int32)))
    images = images.cache()
    if training:
        images = images.shuffle(
            50_000 if limit is None else int(limit), seed=seed, reshuffle_each_iteration=True
        )
        randomness = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        images = tf.data.Dataset.zip((images, randomness.batch(2)))
        images = images.map(_augment, num_parallel_calls=tf.data.AUTOTUNE)
    images = images.batch(int(batch_size))
    images = images.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    return images.prefetch(tf.data.AUTOTUNE)


def _augment(example, seed):
    image, label = example
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.stateless_random_crop(padded, [32, 32, 3], seed=seed)
    image = tf.image.stateless_random_flip_left_right(image, seed=seed[::-1])
    return image, label


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Calls `write(temporary)` for a temporary file beside `path`, then renames it over `path`."""
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent
    )
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


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
      cache_dir: where the `.keras` and `.json` files live; by default
        `default_cache_dir()` (`$TFLEAK_CACHE_DIR/victims` or
        `~/.cache/tfleak/victims`).
      batch_size: images per SGD step.
      learning_rate: peak SGD learning rate, cosine-decayed to 0 over training.
      weight_decay: decoupled weight decay, per unit learning rate.
      augment: random crops and flips of the training images.
      limit: train and test on a seeded random subset of this many images of
        each split (for quick runs and tests); None uses all 50,000 / 10,000.
      verbose: Keras `fit` verbosity (1: progress bar, 2: a line per epoch, 0: none).

    Returns:
      `(model, test_accuracy)`: the trained model and its top-1 accuracy in
      [0, 1] on the CIFAR-10 (JPEG) test images (the first `limit` of them if
      `limit` is set); `(model, None)` when `epochs` is 0.

    Raises:
      ValueError: if `epochs` is negative, `name` unusable as a file name, or
        a cached file does not fit the model.
      FileNotFoundError: if the CIFAR-10 image folders are missing.
    """
    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be a whole number >= 0; got {epochs}.")
    epochs = int(epochs)
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
    weights_path, record_path = cache_dir / f"{stem}.keras", cache_dir / f"{stem}.json"

    if weights_path.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        try:
            model.load_weights(str(weights_path))
        except (ValueError, KeyError) as error:
            raise ValueError(
                f"the cached weights {weights_path} do not fit model {name!r} ({error}); "
                "delete the file, or give this architecture another name."
            ) from error
        if verbose:
            print(
                f"Loaded {name} ({epochs} epochs, seed {seed}) from {weights_path}: "
                f"test accuracy {record['test_accuracy']:.4f}"
            )
        return model, float(record["test_accuracy"])

    train = cifar10_dataset(data_dir, "train", batch_size, seed, training=augment, limit=limit)
    test = cifar10_dataset(data_dir, "test", 500, seed, training=False, limit=limit)
    steps = int(train.cardinality())
    if steps < 1:  # cardinality is unknown after `take`; count once (the data is cached).
        steps = sum(1 for _ in train)
    schedule = keras.optimizers.schedules.CosineDecay(float(learning_rate), epochs * steps)
    model.compile(
        optimizer=keras.optimizers.SGD(
            schedule, momentum=0.9, nesterov=True, weight_decay=float(weight_decay)
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = _EpochTimer()
    model.fit(train, epochs=epochs, callbacks=[timer], verbose=verbose)
    _, accuracy = model.evaluate(test, verbose=0)
    accuracy = float(accuracy)
    if verbose:
        print(f"{name}: test accuracy {accuracy:.4f} after {epochs} epochs")

    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(weights_path, lambda path: model.save(str(path), overwrite=True))
    record = {
        "model": name,
        "seed": int(seed),
        "epochs": epochs,
        "test_accuracy": accuracy,
        "seconds_per_epoch": [round(s, 2) for s in timer.seconds],
        "parameters": int(model.count_params()),
        "settings": settings,
        "tensorflow": tf.__version__,
    }
    _write_atomically(record_path, lambda path: path.write_text(json.dumps(record, indent=2)))
    return model, accuracy
