"""Re-identification: does a reconstruction point back at its own original?

MSE against the mean image says little about privacy. The question a user
asks is whether a reconstruction identifies its input. Here: among a gallery
of candidate originals (the whole test set), rank them by distance (MSE) to
the reconstruction; the reconstruction re-identifies its input at top-k when
its own original is among the k nearest. Ties count against the attacker (an
original tied with others is ranked after all of them), so a constant
reconstruction scores exactly chance, k / gallery size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Reidentification", "best_median_worst", "pairwise_mse", "reidentify"]


def pairwise_mse(reconstructions, originals) -> np.ndarray:
    """MSE between every reconstruction and every original, float64 `[m, n]`.

    Args:
      reconstructions: float `[m, height, width, channels]` in [0, 1].
      originals: float `[n, height, width, channels]` in [0, 1].
    """
    a = np.asarray(reconstructions, np.float64).reshape(len(reconstructions), -1)
    b = np.asarray(originals, np.float64).reshape(len(originals), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"reconstructions {a.shape} and originals {b.shape} differ in size.")
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(squared, 0.0) / a.shape[1]


@dataclass
class Reidentification:
    """Re-identification of `m` reconstructions among `n` originals.

    Attributes:
      top1, top5: fraction of reconstructions whose own original is the
        nearest / among the 5 nearest.
      chance_top1, chance_top5: the same for a guess: 1 / n and min(5, n) / n.
      ranks: `[m]` 1-based rank of each reconstruction's own original.
      own_mse: `[m]` MSE between each reconstruction and its own original.
    """

    top1: float
    top5: float
    chance_top1: float
    chance_top5: float
    ranks: np.ndarray
    own_mse: np.ndarray

    def as_dict(self) -> dict:
        return {
            "reidentification_top1": self.top1,
            "reidentification_top5": self.top5,
            "chance_top1": self.chance_top1,
            "chance_top5": self.chance_top5,
        }


def reidentify(reconstructions, originals, own_index=None) -> Reidentification:
    """Ranks each reconstruction's own original among all originals by MSE.

    Args:
      reconstructions: float32 `[m, height, width, channels]` in [0, 1].
      originals: the gallery, float32 `[n, height, width, channels]` in [0, 1].
      own_index: int `[m]`, the gallery index of each reconstruction's
        original; None = `arange(m)` (the first m originals).

    Returns:
      A `Reidentification`.

    Raises:
      ValueError: shapes that do not match, or indices outside the gallery.
    """
    distances = pairwise_mse(reconstructions, originals)
    m, n = distances.shape
    own_index = np.arange(m) if own_index is None else np.asarray(own_index, np.int64)
    if own_index.shape != (m,) or own_index.min(initial=0) < 0 or own_index.max(initial=0) >= n:
        raise ValueError(f"own_index must be {m} indices into the {n} originals.")
    own = distances[np.arange(m), own_index]
    closer = (distances < own[:, None]).sum(1)
    tied = (distances == own[:, None]).sum(1) - 1  # Others at the same distance.
    ranks = closer + tied + 1
    return Reidentification(
        top1=float(np.mean(ranks <= 1)),
        top5=float(np.mean(ranks <= 5)),
        chance_top1=1.0 / n,
        chance_top5=min(5, n) / n,
        ranks=ranks,
        own_mse=own,
    )


def best_median_worst(result: Reidentification) -> list[int]:
    """Indices of the best, median and worst re-identified reconstructions (by rank, then MSE)."""
    order = np.lexsort((result.own_mse, result.ranks))
    return [int(order[0]), int(order[len(order) // 2]), int(order[-1])]
