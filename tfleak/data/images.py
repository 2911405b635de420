"""Private examples for gradient leakage: embedded samples, digits, MNIST, CIFAR.

Every loader returns images as float32 in [0, 1] shaped
`[num_images, height, width, channels]` with integer labels `[num_images]`.

- `sample`: three natural photographs that the dependencies ship (matplotlib's
  `grace_hopper.jpg`, scikit-learn's `china.jpg` and `flower.jpg`), resized to
  `image_size`, labelled 0, 1, 2 among 100 classes (as CIFAR-100, the DLG
  paper's setting). Needs no network.
- `digits`: scikit-learn's 1,797 8x8 handwritten digits (UCI), 10 classes.
- `mnist`, `cifar10`, `cifar100`: the original release files in a local data
  directory (MNIST's IDX `.gz` files; CIFAR's binary `.tar.gz`), else
  `tfds.load`, which needs a network the first time.
"""

from __future__ import annotations

import dataclasses
import gzip
import tarfile
from pathlib import Path
from typing import Optional

import numpy as np

from tfleak.data.files import DATA_DIR_ENV, find_release_file, load_tfds, resolve_data_dir

__all__ = ["DATASETS", "ImageDataset", "load_dataset", "load_example", "load_image_file"]

DATASETS = ("sample", "digits", "mnist", "cifar10", "cifar100")
_SPLITS = ("train", "test")


@dataclasses.dataclass
class ImageDataset:
    """Images `[n, h, w, c]` float32 in [0, 1], labels `[n]` int64, class count."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)


def _resize(images: np.ndarray, image_size: int) -> np.ndarray:
    import tensorflow as tf

    resized = tf.image.resize(images, (image_size, image_size), antialias=True)
    return np.clip(resized.numpy(), 0.0, 1.0).astype(np.float32)


def load_image_file(path, image_size: int = 32) -> np.ndarray:
    """Reads a PNG/JPEG file as an RGB image `[image_size, image_size, 3]` in [0, 1].

    Raises:
      ValueError: the file does not exist or is not an image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file {str(path)!r} does not exist; pass a PNG or JPEG path.")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{str(path)!r} is not an image PIL can read ({error}).") from error
    return _resize(pixels[np.newaxis], image_size)[0]


def _sample(image_size: int) -> ImageDataset:
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    hopper = load_image_file(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    photos = [np.asarray(p, np.float32) / 255.0 for p in load_sample_images().images]
    images = [_resize(hopper[np.newaxis], image_size)[0]]
    images += [_resize(p[np.newaxis], image_size)[0] for p in photos]
    return ImageDataset("sample", np.stack(images), np.arange(3, dtype=np.int64), 100)


def _digits() -> ImageDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    return ImageDataset("digits", images, digits.target.astype(np.int64), 10)


def _read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (gzipped or not): magic, dimension sizes, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        raw = file.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes; download it again.")
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {data.size} bytes for shape {shape}.")
    return data.reshape(shape)


def _mnist_files(data_dir: Path, split: str) -> Optional[tuple[Path, Path]]:
    prefix = "train" if split == "train" else "t10k"
    found = []
    for kind in ("images-idx3", "labels-idx1"):
        for name in (f"{prefix}-{kind}-ubyte.gz", f"{prefix}-{kind}-ubyte"):
            path = find_release_file(data_dir, name, subdirs=("mnist",))
            if path is not None:
                found.append(path)
                break
    return tuple(found) if len(found) == 2 else None


_CIFAR = {
    "cifar10": ("cifar-10-binary.tar.gz", 10, 1, {"train": "data_batch_", "test": "test_batch"}),
    "cifar100": ("cifar-100-binary.tar.gz", 100, 2, {"train": "train.bin", "test": "test.bin"}),
}


def _read_cifar(path: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads CIFAR's binary release: per record, label byte(s) then 3x32x32 pixels."""
    _, _, label_bytes, members = _CIFAR[name]
    images, labels = [], []
    with tarfile.open(path) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if members[split] not in Path(member.name).name:
                continue
            raw = np.frombuffer(archive.extractfile(member).read(), np.uint8)
            records = raw.reshape(-1, label_bytes + 3072)
            # CIFAR-100 stores (coarse, fine): the fine label is the last byte.
            labels.append(records[:, label_bytes - 1])
            images.append(records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    if not images:
        raise ValueError(f"{path} holds no {split} batches of {name}; download it again.")
    return np.concatenate(images), np.concatenate(labels)


def load_dataset(
    name: str, split: str = "test", data_dir: Optional[str] = None, image_size: int = 32
) -> ImageDataset:
    """Loads a dataset of private examples by name.

    Args:
      name: one of `DATASETS`.
      split: 'train' or 'test' (ignored by 'sample' and 'digits').
      data_dir: a directory with the original release files (MNIST's
        `t10k-images-idx3-ubyte.gz` ..., CIFAR's `cifar-10-binary.tar.gz`),
        directly or in a `mnist/`, `cifar10/` ... subfolder; defaults to
        `$TFLEAK_DATA_DIR`. Without one, `tfds.load` (needs a network once).
      image_size: side of the square 'sample' images, in pixels.

    Returns:
      An `ImageDataset`.

    Raises:
      ValueError: an unknown name or split, or no local files and no network.
      FileNotFoundError: `data_dir` does not exist.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(_SPLITS)}.")
    if name == "sample":
        return _sample(image_size)
    if name == "digits":
        return _digits()
    directory = resolve_data_dir(data_dir)
    num_classes = 10 if name in ("mnist", "cifar10") else 100
    if directory is not None:
        if name == "mnist":
            files = _mnist_files(directory, split)
            if files is not None:
                images, labels = (_read_idx(path) for path in files)
                return ImageDataset(
                    name,
                    (images[..., np.newaxis] / 255.0).astype(np.float32),
                    labels.astype(np.int64),
                    num_classes,
                )
        else:
            archive = find_release_file(directory, _CIFAR[name][0], subdirs=(name,))
            if archive is not None:
                images, labels = _read_cifar(archive, name, split)
                return ImageDataset(
                    name, (images / 255.0).astype(np.float32), labels.astype(np.int64), num_classes
                )
    try:
        dataset = load_tfds(name, split, directory, batch_size=-1, as_supervised=True)
    except ValueError as error:
        raise ValueError(
            f"{error} No {name} release files were found in "
            f"{str(directory) if directory else 'any data directory'} either "
            f"(--data_dir or ${DATA_DIR_ENV})."
        ) from error
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(dataset)
    return ImageDataset(
        name, (images / 255.0).astype(np.float32), labels.astype(np.int64), num_classes
    )


def load_example(
    name: str,
    index: int,
    split: str = "test",
    data_dir: Optional[str] = None,
    image_size: int = 32,
) -> tuple[np.ndarray, int, int]:
    """One private example: `(image [h, w, c] in [0, 1], label, num_classes)`.

    Raises:
      ValueError: `index` is outside the dataset, or as `load_dataset`.
    """
    dataset = load_dataset(name, split, data_dir, image_size)
    if not 0 <= index < len(dataset):
        raise ValueError(
            f"index {index} is out of range for {name} ({split}), which has "
            f"{len(dataset)} images; pass --index in 0..{len(dataset) - 1}."
        )
    return dataset.images[index], int(dataset.labels[index]), dataset.num_classes
