"""What an attack returns: the reconstruction, the labels, and how it got there."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

__all__ = ["Snapshot", "AttackResult", "batch_size_of"]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The best dummy batch of a round at one iteration.

    Attributes:
      iteration: optimiser iterations done in this round.
      relative_distance: gradient distance over the distance of a zero
        gradient (1 = no better than guessing zeros; 0 = exact match).
      images: `[batch, h, w, c]` float32 in [0, 1].
    """

    iteration: int
    relative_distance: float
    images: np.ndarray = dataclasses.field(repr=False)


@dataclasses.dataclass
class AttackResult:
    """The outcome of one gradient inversion attack.

    Attributes:
      reconstruction: `[batch, h, w, c]` float32 in [0, 1], the best dummy data
        found; None when every start diverged (no made-up image is reported).
      labels: `[batch]` int64, the restored or optimised labels (None likewise).
      success: whether the gradient distance fell below the attack's
        tolerance. Judged without the ground truth, as a real attacker must.
      gradient_distance: the best gradient distance reached (the attack's
        distance, e.g. squared L2), inf if every start diverged.
      relative_distance: `gradient_distance` over the distance of a zero
        gradient.
      iterations: optimiser iterations over all rounds.
      evaluations: objective (and gradient) evaluations over all rounds, per
        start: equal to `iterations` for first-order steps, more for L-BFGS
        (its line search).
      restarts_used: rounds from fresh random starts after the first.
      seconds: wall-clock seconds, compilation included.
      history: snapshots of the winning round, for figures.
      metrics: filled when the ground truth was given, after matching the
        reconstructed batch to the true one (`tfleak.metrics.evaluate`): means
        `mse`, `psnr` (dB, an exact match capped at `psnr_capped_at`), `ssim`,
        their per-image lists, `order`, and `label_accuracy` (as multisets).
      attack: the attack and every hyperparameter it ran with.
      message: one line on how it ended (converged, stalled, diverged).
      consensus: with group consistency, `[batch, h, w, c]` float32 in
        [0, 1]: the winning round's registered mean of all seeds at the end
        (GradInversion's consensus); None otherwise.
      consensus_metrics: `metrics` of the consensus, when the ground truth
        was given.
    """

    reconstruction: Optional[np.ndarray]
    labels: Optional[np.ndarray]
    success: bool
    gradient_distance: float
    relative_distance: float
    iterations: int
    restarts_used: int
    seconds: float
    evaluations: int = 0
    history: list = dataclasses.field(default_factory=list)
    metrics: dict = dataclasses.field(default_factory=dict)
    attack: Any = None
    message: str = ""
    consensus: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)
    consensus_metrics: dict = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        shape = None if self.reconstruction is None else tuple(self.reconstruction.shape)
        metrics = ", ".join(
            f"{k}={v:.4g}" for k, v in self.metrics.items() if isinstance(v, (int, float))
        )
        labels = None if self.labels is None else self.labels.tolist()
        return (
            f"AttackResult(success={self.success}, labels={labels}, "
            f"gradient_distance={self.gradient_distance:.4g}, "
            f"relative_distance={self.relative_distance:.3g}, iterations={self.iterations}, "
            f"restarts_used={self.restarts_used}, seconds={self.seconds:.1f}, "
            f"reconstruction_shape={shape}, metrics={{{metrics}}}, "
            f"message={self.message!r}, attack={self.attack!r})"
        )


def batch_size_of(batch_size, labels, ground_truth) -> int:
    """The attacked batch size: `batch_size`, else the length of `labels`, else of the
    ground truth's labels, else 1.

    Raises:
      ValueError: a batch size below 1.
    """
    if batch_size is None:
        if labels is not None:
            batch_size = len(np.asarray(labels).reshape(-1))
        elif ground_truth is not None:
            batch_size = len(np.asarray(ground_truth[1]).reshape(-1))
        else:
            batch_size = 1
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    return int(batch_size)
