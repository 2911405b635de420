"""CIFAR-10 (JPEG), the image-folder copy of CIFAR-10: checked, as arrays or as `tf.data`.

The layout is `DIR/cifar10/{train,test}/<class>/NNNN.jpg` (or `DIR/{train,test}/
<class>/...`): every image of the release re-encoded as a 32 x 32 JPEG, one
folder per class; the sorted class names are the labels 0..9. JPEG changes
pixel values slightly, so numbers measured on it are reported as
'CIFAR-10 (JPEG)', not 'CIFAR-10'. A folder is only taken for CIFAR-10 when it
holds exactly CIFAR-10's ten classes and the whole split (50,000 train,
10,000 test): numbers on part of it would be reported for a different set.

Two ways to read it, with the same pixels:

- `load_cifar10_jpeg`: an `ImageDataset` of float32 images decoded with PIL
  (what attacks and `tfleak.data.load_dataset('cifar10')` read), decoding only
  the rows asked for;
- `cifar10_dataset`: batches for training and evaluating a classifier. JPEGs
  are decoded once with `tf.io.decode_jpeg(dct_method='INTEGER_ACCURATE')`,
  which gives PIL's pixels exactly (TF's default fast DCT is off by up to
  5/255). Training batches follow a seeded permutation per epoch and, with
  augmentation, the standard light CIFAR augmentation (a random 32 x 32 crop
  of the image zero-padded by 4 pixels and a random horizontal flip,
  He et al. 2016, section 4.2), drawn from stateless seeds of (seed, epoch,
  position): epoch `e` is the same whether a run starts at epoch 0 or resumes
  at `e`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfleak.data.dataset import ImageDataset, check_indices
from tfleak.data.folders import FolderIndex, index_image_folder, read_image_files

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_SPLIT_SIZES",
    "cifar10_jpeg_root",
    "index_cifar10_jpeg",
    "load_cifar10_jpeg",
    "cifar10_arrays",
    "cifar10_dataset",
]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_SPLIT_SIZES = {"train": 50_000, "test": 10_000}
_SIDE = 32
_PAD = 4


def _check_split(split: str) -> None:
    if split not in CIFAR10_SPLIT_SIZES:
        raise ValueError(
            f"unknown split {split!r}; choose one of {', '.join(CIFAR10_SPLIT_SIZES)}."
        )


def cifar10_jpeg_root(directory, split: str) -> Optional[Path]:
    """`directory/cifar10/<split>` (or `directory/<split>`) if it holds CIFAR-10's classes.

    Args:
      directory: a data directory.
      split: 'train' or 'test'.

    Returns:
      The split's folder, or None when neither candidate exists (or
      `directory/<split>` holds other classes: a different dataset).

    Raises:
      ValueError: `directory/cifar10/<split>` holds other class folders.
    """
    _check_split(split)
    directory = Path(directory).expanduser()
    for candidate in (directory / "cifar10" / split, directory / split):
        if not candidate.is_dir():
            continue
        names = sorted(p.name for p in candidate.iterdir() if p.is_dir())
        if names != list(CIFAR10_CLASSES):
            if candidate.parent.name == "cifar10":
                raise ValueError(
                    f"{candidate} holds the class folders {names[:12]}, not CIFAR-10's "
                    f"{list(CIFAR10_CLASSES)}; copy the image-folder release again, or read it "
                    "with --dataset=folder."
                )
            continue
        return candidate
    return None


def _check_whole_split(index: FolderIndex, split: str) -> FolderIndex:
    expected = CIFAR10_SPLIT_SIZES[split]
    if len(index) != expected:
        raise ValueError(
            f"{index.root} holds {len(index):,} images, but CIFAR-10's {split} split has "
            f"{expected:,}; copy the image folders again (numbers on part of it would be "
            "reported as CIFAR-10)."
        )
    return index


def index_cifar10_jpeg(data_dir, split: str) -> FolderIndex:
    """The checked file index of a CIFAR-10 (JPEG) split, without decoding any image.

    Args:
      data_dir: folder holding `cifar10/<split>/<class>/*.jpg` (or
        `<split>/<class>/*.jpg`).
      split: 'train' or 'test'.

    Returns:
      A `FolderIndex`: `files` sorted by class then name, `labels` `[n]` int64
      in 0..9, `class_names` = `CIFAR10_CLASSES`.

    Raises:
      ValueError: `data_dir` is None, an unknown split, other class folders,
        or not the whole split.
      FileNotFoundError: no CIFAR-10 folder for the split under `data_dir`.
    """
    _check_split(split)
    if data_dir is None:
        raise ValueError(
            "data_dir is required for CIFAR-10 (JPEG): pass the folder that holds "
            "cifar10/train/<class>/*.jpg and cifar10/test/<class>/*.jpg."
        )
    data_dir = Path(data_dir).expanduser()
    root = cifar10_jpeg_root(data_dir, split)
    if root is None:
        raise FileNotFoundError(
            f"no CIFAR-10 {split} images under {str(data_dir)!r}: expected the image-folder "
            f"layout {data_dir / 'cifar10' / split}/<class>/*.jpg (ten class folders, sorted "
            "names are labels 0..9)."
        )
    return _check_whole_split(index_image_folder(root), split)


def load_cifar10_jpeg(root, split: str, indices: Optional[Sequence[int]] = None) -> ImageDataset:
    """Reads a CIFAR-10 (JPEG) split's folder (from `cifar10_jpeg_root`) with PIL.

    Args:
      root: the split's folder, holding the ten class folders.
      split: 'train' or 'test' (the size the folder must have).
      indices: rows to read, in this order; None reads all. Only these files
        are decoded.

    Returns:
      An `ImageDataset` named 'cifar10', described as 'CIFAR-10 (JPEG)':
      images `[n, 32, 32, 3]` float32 in [0, 1].

    Raises:
      ValueError: not the whole split, or an index out of range.
    """
    _check_split(split)
    index = _check_whole_split(index_image_folder(root), split)
    expected = CIFAR10_SPLIT_SIZES[split]
    rows = None if indices is None else check_indices(indices, expected, f"cifar10 ({split})")
    files = index.files if rows is None else [index.files[i] for i in rows]
    return ImageDataset(
        name="cifar10",
        images=read_image_files(files, None, 3),
        labels=index.labels if rows is None else index.labels[rows],
        num_classes=10,
        class_names=list(CIFAR10_CLASSES),
        description="CIFAR-10 (JPEG)",
        source=str(index.root),
        files=[str(path) for path in files],
        indices=rows,
    )


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def cifar10_arrays(
    data_dir, split: str, limit: Optional[int] = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 (JPEG) split decoded into memory as uint8 (150 MB for 'train').

    Args:
      data_dir: folder holding `cifar10/<split>/<class>/*.jpg`.
      split: 'train' or 'test'.
      limit: keep a seeded random subset of this many images (in index
        order, so every class is likely present); None keeps the split.
      seed: seed of that subset.

    Returns:
      `(images, labels)`: `[n, 32, 32, 3]` uint8 in 0..255 (PIL's pixels)
      and `[n]` int32 in 0..9.

    Raises:
      ValueError, FileNotFoundError: as `index_cifar10_jpeg`; `limit` not a
        positive integer; a file that is not a 32 x 32 JPEG (named).
    """
    import tensorflow as tf

    index = index_cifar10_jpeg(data_dir, split)
    rows = np.arange(len(index))
    if limit is not None:
        limit = _check_positive("limit", limit)
        rows = np.sort(np.random.default_rng(seed).permutation(len(index))[:limit])
    files = [str(index.files[i]) for i in rows]

    def decode(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE")
        return tf.ensure_shape(image, [_SIDE, _SIDE, 3])

    decoded = tf.data.Dataset.from_tensor_slices(files).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    try:
        images = np.concatenate([batch.numpy() for batch in decoded.batch(4096)])
    except tf.errors.OpError as error:
        raise ValueError(
            f"a file of {index.root} is not a 32 x 32 JPEG ({error.message.splitlines()[0]}); "
            "copy the CIFAR-10 image folders again."
        ) from error
    return images, index.labels[rows].astype(np.int32)


def _augment(image, seed):
    """Random 32 x 32 crop of the 4-pixel zero-padded image, then a random horizontal flip."""
    import tensorflow as tf

    padded = tf.pad(image, [[_PAD, _PAD], [_PAD, _PAD], [0, 0]])
    image = tf.image.stateless_random_crop(padded, [_SIDE, _SIDE, 3], seed=seed)
    return tf.image.stateless_random_flip_left_right(image, seed=seed[::-1])


def cifar10_dataset(
    data_dir,
    split: str,
    batch_size: int = 128,
    seed: int = 0,
    training: bool = False,
    limit: Optional[int] = None,
    augment: bool = True,
    epochs: int = 1,
    first_epoch: int = 0,
    arrays: Optional[tuple[np.ndarray, np.ndarray]] = None,
):
    """CIFAR-10 (JPEG) as a `tf.data.Dataset` of batches of float32 images in [0, 1].

    Args:
      data_dir: folder holding `cifar10/<split>/<class>/*.jpg`.
      split: 'train' or 'test'.
      batch_size: images per batch.
      seed: seed of `limit`'s subset, the per-epoch order and the augmentation.
      training: False: one pass in index order, the last batch possibly
        smaller. True: epochs `first_epoch`..`epochs - 1` back to back, each a
        permutation drawn from (seed, epoch) cut into `len // batch_size` full
        batches (the remainder, different in every epoch, is left out), so
        one epoch is `len // batch_size` steps.
      limit: use a seeded random subset of this many images (quick runs).
      augment: with `training`, random crops of the 4-pixel zero-padded image
        and random horizontal flips.
      epochs: with `training`, the epoch to end before.
      first_epoch: with `training`, the epoch to start at (a resumed run).
      arrays: `cifar10_arrays(data_dir, split, limit, seed)`'s result, if
        already decoded (then `data_dir` and `limit` are not read).

    Returns:
      A `tf.data.Dataset` of `(images, labels)`: `[batch, 32, 32, 3]` float32
      in [0, 1] and `[batch]` int32 in 0..9; finite.

    Raises:
      ValueError, FileNotFoundError: as `cifar10_arrays`; `batch_size` not a
        positive integer, larger than the training images, or epochs out of
        order.
    """
    import tensorflow as tf

    _check_split(split)
    batch_size = _check_positive("batch_size", batch_size)
    images, labels = arrays if arrays is not None else cifar10_arrays(data_dir, split, limit, seed)
    if not training:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
        return dataset.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y)).prefetch(
            tf.data.AUTOTUNE
        )
    if int(first_epoch) < 0 or int(epochs) < int(first_epoch):
        raise ValueError(
            f"need 0 <= first_epoch <= epochs; got first_epoch={first_epoch}, epochs={epochs}."
        )
    steps = len(images) // batch_size
    if steps < 1:
        raise ValueError(
            f"batch_size {batch_size} is more than the {len(images)} training images; pass a "
            f"batch_size of at most {len(images)} (or a larger limit)."
        )
    # Per epoch, the first `steps * batch_size` of a permutation seeded by (seed, epoch).
    order = np.concatenate(
        [
            np.random.default_rng([int(seed), epoch]).permutation(len(images))[: steps * batch_size]
            for epoch in range(int(first_epoch), int(epochs))
        ]
        or [np.zeros([0], np.int64)]
    ).astype(np.int32)
    first_position = int(first_epoch) * steps * batch_size
    positions = np.arange(first_position, first_position + len(order), dtype=np.int64)
    images = tf.constant(images)
    labels = tf.constant(labels)

    def example(index, position):
        image = tf.gather(images, index)
        if augment:
            image = _augment(image, tf.stack([tf.constant(int(seed), tf.int64), position]))
        return image, tf.gather(labels, index)

    dataset = tf.data.Dataset.from_tensor_slices((order, positions))
    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    return dataset.prefetch(tf.data.AUTOTUNE)
