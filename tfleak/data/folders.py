"""Image folders: one sub-folder of images per class, the layout Keras and tfds read.

    DIR/
      cat/0001.jpg, 0002.png, ...
      dog/...

Sorted sub-folder names are the labels 0..n-1 and the order is deterministic:
sorted class, then sorted file path within the class (as strings, so name
files `0002.jpg`, not `2.jpg`, for numeric order). Files in nested folders of
a class count for it (as in Keras' `image_dataset_from_directory`). A folder
that holds only `train/` and `test/` is read at the split asked for
(`DIR/<split>/<class>/...`, as tfds' `ImageFolder`).

The index is built from file names alone, so reading a few images of a large
folder decodes only those. Images are read with PIL (`tfleak.data.decode`),
not with Keras' loader, which decodes only JPEG/PNG/GIF/BMP, drops 16-bit
precision and alpha, and would decode every file to return a few.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tfleak.data.dataset import ImageDataset, check_indices
from tfleak.data.decode import decode_image, readable_extensions, resize_images

__all__ = ["FolderIndex", "index_image_folder", "load_image_folder", "read_image_files"]


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


_SPLIT_FOLDERS = ("train", "test")


class FolderIndex:
    """The image files of a class-per-folder directory, their labels and class names."""

    def __init__(self, root: Path, files: list, labels: np.ndarray, class_names: list):
        self.root = root
        self.files = files
        self.labels = labels
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.files)


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def _images_under(folder: Path, extensions: frozenset) -> tuple[list, list]:
    """Image files under `folder` (recursively, sorted by relative path), and the others."""
    images, others = [], []
    for parent, subfolders, names in os.walk(folder):
        subfolders[:] = [d for d in subfolders if _visible(d)]
        for name in names:
            if not _visible(name):
                continue
            path = Path(parent) / name
            (images if path.suffix.lower() in extensions else others).append(path)
    images.sort(key=lambda p: p.relative_to(folder).as_posix())
    return images, others


def index_image_folder(directory, split: Optional[str] = None) -> FolderIndex:
    """Lists a class-per-folder directory without decoding any image.

    Args:
      directory: the folder with one sub-folder per class (or with `train/`
        and `test/` folders that each hold them).
      split: which of `train/` and `test/` to read when `directory` holds
        only those; ignored otherwise.

    Returns:
      A `FolderIndex` with `files` (sorted class, then path), `labels` `[n]`
      int64 and `class_names`.

    Raises:
      FileNotFoundError: `directory` does not exist.
      ValueError: it is a file, has fewer than 2 class folders, has images
        outside any class folder, or a class folder holds no image.
    """
    root = Path(directory).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"image folder {str(root)!r} does not exist; pass --data_dir, a folder with one "
            "sub-folder of images per class."
        )
    if not root.is_dir():
        raise ValueError(
            f"image folder {str(root)!r} is a file, not a folder; pass a folder with one "
            "sub-folder of images per class."
        )
    extensions = readable_extensions()
    subfolders = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p.name))
    if subfolders and set(subfolders) <= set(_SPLIT_FOLDERS):
        if split not in subfolders:
            raise ValueError(
                f"image folder {str(root)!r} holds the splits {', '.join(subfolders)} but no "
                f"{split!r}; pass --split={subfolders[0]}."
            )
        root = root / split
        subfolders = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p.name))
    loose = sorted(
        p.name
        for p in root.iterdir()
        if p.is_file() and _visible(p.name) and p.suffix.lower() in extensions
    )
    if not subfolders:
        found = (
            f" (it holds {_count(len(loose), 'image')} directly, e.g. {loose[0]!r})"
            if loose
            else ""
        )
        raise ValueError(
            f"image folder {str(root)!r} has no class sub-folders{found}; put the images of "
            "each class in a sub-folder named after it (sorted names are labels 0, 1, ...), "
            "or attack a single image with --image."
        )
    if loose:
        raise ValueError(
            f"image folder {str(root)!r} holds {_count(len(loose), 'image')} outside its class "
            f"folders (e.g. {loose[0]!r}), which would have no label; move them into a class "
            "folder or out of the dataset."
        )
    if len(subfolders) < 2:
        raise ValueError(
            f"image folder {str(root)!r} has one class folder ({subfolders[0]!r}); a "
            "classifier needs at least 2 classes (with one, every gradient of the "
            "cross-entropy is zero), so add a folder per class, or attack a single image "
            "with --image and --num_classes."
        )
    files, labels = [], []
    for label, name in enumerate(subfolders):
        images, others = _images_under(root / name, extensions)
        if not images:
            other = (
                f" (only {_count(len(others), 'other file')}, e.g. {others[0].name!r})"
                if others
                else ""
            )
            raise ValueError(
                f"class folder {str(root / name)!r} holds no image files{other}; add images "
                "(any format PIL reads, recognised by extension such as .png, .jpg, .tif, "
                ".webp) or remove the folder."
            )
        files += images
        labels += [label] * len(images)
    return FolderIndex(root, files, np.asarray(labels, np.int64), subfolders)


def read_image_files(files: Sequence, image_size: Optional[int], channels: int) -> np.ndarray:
    """Decodes `files` into `[n, image_size, image_size, channels]` float32 in [0, 1].

    Args:
      files: image paths.
      image_size: side of the square output; None keeps the images' own size
        (which must then be the same for all).
      channels: 3 for RGB, 1 for greyscale.

    Raises:
      ValueError: a file cannot be read (the message names it), or the sizes
        differ and `image_size` is None.
    """
    decoded = [decode_image(path, channels) for path in files]
    if not decoded:
        side = image_size or 0
        return np.zeros([0, side, side, channels], np.float32)
    if image_size is None:
        shapes = sorted({image.shape for image in decoded})
        if len(shapes) > 1:
            raise ValueError(f"images differ in size ({shapes[0]} and {shapes[1]}); resize them.")
        return np.stack(decoded)
    output = np.empty([len(decoded), image_size, image_size, channels], np.float32)
    by_shape: dict = {}
    for i, image in enumerate(decoded):
        by_shape.setdefault(image.shape, []).append(i)
    for rows in by_shape.values():
        output[rows] = resize_images(np.stack([decoded[i] for i in rows]), image_size)
    return output


def load_image_folder(
    directory,
    split: Optional[str] = "test",
    image_size: int = 32,
    channels: int = 3,
    indices: Optional[Sequence[int]] = None,
) -> ImageDataset:
    """Reads a class-per-folder directory (see the module docstring).

    Args:
      directory: the folder.
      split: 'train' or 'test' when the folder holds those two folders.
      image_size: side of the square images in pixels (resized, stretched if
        not square).
      channels: 3 for RGB (greyscale repeated), 1 for greyscale.
      indices: rows to read (in the sorted order); None reads all. Only these
        files are decoded.

    Returns:
      An `ImageDataset` named 'folder', with `class_names` and `files`.

    Raises:
      FileNotFoundError, ValueError: as `index_image_folder` and
        `tfleak.data.decode_image` (unreadable files are named), or an index
        out of range.
    """
    index = index_image_folder(directory, split)
    rows = None if indices is None else check_indices(indices, len(index), f"{index.root}")
    files = index.files if rows is None else [index.files[i] for i in rows]
    return ImageDataset(
        name="folder",
        images=read_image_files(files, image_size, channels),
        labels=index.labels if rows is None else index.labels[rows],
        num_classes=len(index.class_names),
        class_names=list(index.class_names),
        description=f"image folder {index.root}",
        source=str(index.root),
        files=[str(path) for path in files],
        indices=rows,
    )
