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
- `cifar10` also reads the image-folder copy `DIR/cifar10/{train,test}/<class>/
  NNNN.jpg` (each image of the release re-encoded as a JPEG) when there are no
  release files (`tfleak.data.cifar10`, which checks it is the whole split);
  its `description` is then 'CIFAR-10 (JPEG)', because JPEG changes pixel
  values slightly and numbers on it are not numbers on the release.
- `folder`: any folder with one sub-folder of images per class
  (`tfleak.data.folders`).

Reading a few rows (`indices=`, `load_examples`) of an image folder decodes
only those files; the other sources read their (small, fast) files whole.
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfleak.data.cifar10 import CIFAR10_CLASSES, cifar10_jpeg_root, load_cifar10_jpeg
from tfleak.data.dataset import ImageDataset, check_indices
from tfleak.data.decode import load_image_file, resize_images
from tfleak.data.files import DATA_DIR_ENV, find_release_file, load_tfds, resolve_data_dir
from tfleak.data.folders import load_image_folder

__all__ = [
    "DATASETS",
    "CIFAR10_CLASSES",
    "ImageDataset",
    "load_dataset",
    "load_examples",
    "load_example",
    "load_image_file",
]

DATASETS = ("sample", "digits", "mnist", "cifar10", "cifar100", "folder")
_SPLITS = ("train", "test")
_DESCRIPTIONS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
_DIGIT_NAMES = [str(digit) for digit in range(10)]


def _sample(image_size: int) -> ImageDataset:
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    photos = [np.asarray(p, np.float32) / 255.0 for p in load_sample_images().images]
    images = [load_image_file(hopper, image_size)]
    images += [resize_images(p[np.newaxis], image_size)[0] for p in photos]
    return ImageDataset(
        "sample",
        np.stack(images),
        np.arange(3, dtype=np.int64),
        100,
        description="sample photographs (matplotlib, scikit-learn)",
        source="matplotlib grace_hopper.jpg; scikit-learn china.jpg, flower.jpg",
    )


def _digits() -> ImageDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    return ImageDataset(
        "digits",
        images,
        digits.target.astype(np.int64),
        10,
        class_names=list(_DIGIT_NAMES),
        description="scikit-learn digits (UCI)",
        source="scikit-learn",
    )


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
_CIFAR_NAME_FILES = {"cifar10": "batches.meta.txt", "cifar100": "fine_label_names.txt"}


def _read_cifar(path: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray, list]:
    """Reads CIFAR's binary release: per record, label byte(s) then 3x32x32 pixels.

    Returns:
      Images `[n, 32, 32, 3]` uint8, labels `[n]` uint8 and the class names
      the archive lists (None if it lists none).
    """
    _, _, label_bytes, members = _CIFAR[name]
    images, labels, class_names = [], [], None
    with tarfile.open(path) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            filename = Path(member.name).name
            if filename == _CIFAR_NAME_FILES[name]:
                text = archive.extractfile(member).read().decode("utf-8")
                class_names = [line.strip() for line in text.splitlines() if line.strip()]
            if members[split] not in filename:
                continue
            raw = np.frombuffer(archive.extractfile(member).read(), np.uint8)
            records = raw.reshape(-1, label_bytes + 3072)
            # CIFAR-100 stores (coarse, fine): the fine label is the last byte.
            labels.append(records[:, label_bytes - 1])
            images.append(records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    if not images:
        raise ValueError(f"{path} holds no {split} batches of {name}; download it again.")
    return np.concatenate(images), np.concatenate(labels), class_names


def _from_release_files(name: str, directory: Path, split: str) -> Optional[ImageDataset]:
    """MNIST's IDX files or CIFAR's binary archive in `directory`, or None if absent."""
    if name == "mnist":
        files = _mnist_files(directory, split)
        if files is None:
            return None
        images, labels = (_read_idx(path) for path in files)
        return ImageDataset(
            name,
            (images[..., np.newaxis] / 255.0).astype(np.float32),
            labels.astype(np.int64),
            10,
            class_names=list(_DIGIT_NAMES),
            description=_DESCRIPTIONS[name],
            source=str(files[0].parent),
        )
    archive = find_release_file(directory, _CIFAR[name][0], subdirs=(name,))
    if archive is None:
        return None
    images, labels, class_names = _read_cifar(archive, name, split)
    return ImageDataset(
        name,
        (images / 255.0).astype(np.float32),
        labels.astype(np.int64),
        _CIFAR[name][1],
        class_names=class_names,
        description=_DESCRIPTIONS[name],
        source=str(archive),
    )


def _from_tfds(name: str, split: str, directory: Optional[Path]) -> ImageDataset:
    try:
        dataset, info = load_tfds(
            name, split, directory, batch_size=-1, as_supervised=True, with_info=True
        )
    except ValueError as error:
        jpeg = " or CIFAR-10 JPEG folders (cifar10/test/<class>/*.jpg)" if name == "cifar10" else ""
        raise ValueError(
            f"{error} No {name} release files{jpeg} were found in "
            f"{str(directory) if directory else 'any data directory'} either "
            f"(--data_dir or ${DATA_DIR_ENV})."
        ) from error
    import tensorflow_datasets as tfds

    images, labels = tfds.as_numpy(dataset)
    return ImageDataset(
        name,
        (images / 255.0).astype(np.float32),
        labels.astype(np.int64),
        int(info.features["label"].num_classes),
        class_names=list(info.features["label"].names),
        description=_DESCRIPTIONS[name],
        source="tfds",
    )


def load_dataset(
    name: str,
    split: str = "test",
    data_dir: Optional[str] = None,
    image_size: int = 32,
    indices: Optional[Sequence[int]] = None,
    channels: Optional[int] = None,
) -> ImageDataset:
    """Loads a dataset of private examples by name.

    Args:
      name: one of `DATASETS`.
      split: 'train' or 'test' (ignored by 'sample' and 'digits', and by
        'folder' unless its folder holds `train/` and `test/`).
      data_dir: a directory with the original release files (MNIST's
        `t10k-images-idx3-ubyte.gz` ..., CIFAR's `cifar-10-binary.tar.gz`) or
        CIFAR-10's JPEG folders (`cifar10/test/<class>/NNNN.jpg`), directly or
        in a `mnist/`, `cifar10/` ... subfolder; defaults to
        `$TFLEAK_DATA_DIR`. Without files, `tfds.load` (needs a network once).
        For 'folder' (required): the folder with one sub-folder per class.
      image_size: side in pixels of the square 'sample' and 'folder' images
        (the named datasets keep their own size: 28 for MNIST, 32 for CIFAR).
      indices: rows to return, in this order (None: all). An image folder
        (and CIFAR-10 JPEG) decodes only these files.
      channels: for 'folder': 3 (RGB, default) or 1 (greyscale). The named
        datasets have their own (1 for MNIST and digits, 3 otherwise).

    Returns:
      An `ImageDataset`; CIFAR-10 read from JPEGs says 'CIFAR-10 (JPEG)' in
      its `description`.

    Raises:
      ValueError: an unknown name or split, an index out of range, no local
        files and no network, or an unreadable image (named).
      FileNotFoundError: `data_dir` does not exist.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(_SPLITS)}.")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ValueError(f"image_size must be an integer number of pixels; got {image_size!r}.")
    if image_size < 1:
        raise ValueError(f"image_size must be at least 1 pixel; got {image_size}.")
    if name == "folder":
        if not data_dir:
            raise ValueError(
                "dataset 'folder' needs data_dir (--data_dir): a folder with one sub-folder "
                "of images per class."
            )
        return load_image_folder(data_dir, split, image_size, channels or 3, indices)
    if channels is not None:
        raise ValueError(
            f"channels is for dataset 'folder'; {name} has its own number of channels, so "
            "leave channels unset."
        )
    if name == "sample":
        dataset = _sample(image_size)
    elif name == "digits":
        dataset = _digits()
    else:
        directory = resolve_data_dir(data_dir)
        dataset = None if directory is None else _from_release_files(name, directory, split)
        if dataset is None and directory is not None and name == "cifar10":
            root = cifar10_jpeg_root(directory, split)
            if root is not None:
                return load_cifar10_jpeg(root, split, indices)
        if dataset is None:
            dataset = _from_tfds(name, split, directory)
    if indices is not None:
        where = name if name in ("sample", "digits") else f"{name} ({split})"
        dataset = dataset.subset(check_indices(indices, len(dataset), where))
    return dataset


def load_examples(
    name: str,
    indices: Sequence[int],
    split: str = "test",
    data_dir: Optional[str] = None,
    image_size: int = 32,
    channels: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Some private examples: `(images [k, h, w, c] in [0, 1], labels [k] int64, num_classes)`.

    Decodes only the `k` files asked for when the dataset is an image folder
    (or CIFAR-10 JPEG), so a few rows of a large folder load in milliseconds.

    Args:
      name, split, data_dir, image_size, channels: as `load_dataset`.
      indices: rows of the split, in the order wanted.

    Raises:
      ValueError: an index is out of range, or as `load_dataset`.
    """
    dataset = load_dataset(name, split, data_dir, image_size, indices=indices, channels=channels)
    return dataset.images, dataset.labels, dataset.num_classes


def load_example(
    name: str,
    index: int,
    split: str = "test",
    data_dir: Optional[str] = None,
    image_size: int = 32,
    channels: Optional[int] = None,
) -> tuple[np.ndarray, int, int]:
    """One private example: `(image [h, w, c] in [0, 1], label, num_classes)`.

    Raises:
      ValueError: `index` is outside the dataset, or as `load_dataset`.
    """
    images, labels, num_classes = load_examples(
        name, [index], split, data_dir, image_size, channels
    )
    return images[0], int(labels[0]), num_classes
