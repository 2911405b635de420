"""Drawing the private batch an attack reconstructs.

Gradient inversion is easier when the labels of a batch are distinct: label
restoration from the last layer's gradient (Yin et al. 2021, "See through
Gradients", Sec. 3.1) picks the classes whose rows of the weight gradient are
most negative, and a repeated label hides one example behind another.
`sample_batch` draws either kind.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["LABEL_MODES", "sample_batch"]

LABEL_MODES = ("unique", "random")


def sample_batch(
    labels: Sequence[int],
    batch_size: int,
    label_mode: str = "unique",
    seed: Optional[int] = None,
) -> np.ndarray:
    """Indices of a batch of distinct examples of a dataset.

    Args:
      labels: `[n]` integer labels of the dataset (e.g. `ImageDataset.labels`).
      batch_size: examples in the batch, at least 1.
      label_mode: 'unique': `batch_size` distinct classes (each drawn at
        random, then one random example of it); 'random': `batch_size`
        distinct examples drawn uniformly, so labels may repeat.
      seed: seed of the draw; the same seed gives the same batch.

    Returns:
      `[batch_size]` int64 indices into `labels`, no index twice, in the order
      drawn.

    Raises:
      ValueError: an unknown `label_mode`; `batch_size` below 1, above the
        number of examples, or (for 'unique') above the number of classes
        present in `labels`; `labels` not a flat list of integers.
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(
            f"unknown label_mode {label_mode!r}; choose one of {', '.join(LABEL_MODES)}."
        )
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"labels must be a flat array of integers; got shape {labels.shape}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size must be an integer; got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    if batch_size > len(labels):
        raise ValueError(
            f"batch_size {batch_size} is more than the {len(labels)} examples there are; "
            f"pass a batch_size of at most {len(labels)}."
        )
    rng = np.random.default_rng(seed)
    if label_mode == "random":
        return rng.choice(len(labels), size=batch_size, replace=False).astype(np.int64)
    classes = np.unique(labels)
    if batch_size > len(classes):
        raise ValueError(
            f"label_mode='unique' needs {batch_size} distinct classes but the labels hold "
            f"only {len(classes)}; pass a batch_size of at most {len(classes)}, or "
            "label_mode='random' to allow repeated labels."
        )
    chosen = rng.choice(classes, size=batch_size, replace=False)
    return np.array([rng.choice(np.flatnonzero(labels == c)) for c in chosen], np.int64)
