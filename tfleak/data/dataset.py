"""`ImageDataset`: images, labels, and what they are, as every loader returns them."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

__all__ = ["ImageDataset", "check_indices"]


@dataclasses.dataclass(repr=False)
class ImageDataset:
    """A split of an image dataset, or some of its rows.

    Attributes:
      name: the name `load_dataset` was called with ('mnist', 'cifar10',
        'folder' ...).
      images: `[n, height, width, channels]` float32 in [0, 1].
      labels: `[n]` int64 in 0..num_classes - 1.
      num_classes: classes of the whole dataset (not only those in `labels`).
      class_names: the name of each class (index = label), where known.
      description: what numbers measured on it are reported as, e.g.
        'CIFAR-10' for the original release and 'CIFAR-10 (JPEG)' for the
        re-encoded image-folder copy, whose pixels differ slightly.
      source: where it was read from: a path, or 'tfds'.
      files: per row, the image file it was decoded from (image folders).
      indices: per row, its index in the full split; None when the rows are
        the whole split in order.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: Optional[list] = None
    description: str = ""
    source: str = ""
    files: Optional[list] = None
    indices: Optional[np.ndarray] = None

    def __post_init__(self):
        self.description = self.description or self.name

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, description={self.description!r}, "
            f"images={tuple(self.images.shape)}, num_classes={self.num_classes}, "
            f"source={self.source!r})"
        )

    def subset(self, indices: Sequence[int]) -> ImageDataset:
        """The rows `indices` (of this dataset), in that order.

        Raises:
          ValueError: an index is outside 0..len(self) - 1.
        """
        rows = check_indices(indices, len(self), self.name)
        original = rows if self.indices is None else self.indices[rows]
        return dataclasses.replace(
            self,
            images=self.images[rows],
            labels=self.labels[rows],
            files=None if self.files is None else [self.files[i] for i in rows],
            indices=original,
        )


def check_indices(indices: Sequence[int], size: int, what: str = "the dataset") -> np.ndarray:
    """`indices` as a `[k]` int64 array, each checked to be in 0..size - 1.

    Raises:
      ValueError: `indices` is not a flat list of integers, or one is out of
        range (the message names it and the valid range).
    """
    array = np.asarray(indices)
    if array.ndim == 0:
        array = array[np.newaxis]
    if array.size == 0:
        return np.zeros([0], np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"indices must be a flat list of integers; got {indices!r}.")
    bad = array[(array < 0) | (array >= size)]
    if bad.size:
        raise ValueError(
            f"index {int(bad[0])} is out of range for {what}, which has {size} images; "
            f"pass an index (--index) in 0..{size - 1}."
        )
    return array.astype(np.int64)
