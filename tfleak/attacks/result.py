"""What an attack returns: the reconstruction, the labels, and how it got there."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

__all__ = ["Snapshot", "AttackResult", "attack_result", "batch_size_of"]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The best dummy batch of a trial at one iteration.

    Attributes:
      iteration: optimiser iterations done in this trial.
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
      iterations: optimiser iterations over all trials.
      evaluations: objective (and gradient) evaluations over all trials, per
        start: equal to `iterations` for first-order steps, more for L-BFGS
        (its line search).
      restarts_used: trials from fresh random starts after the first.
      seconds: wall-clock seconds, compilation included.
      history: snapshots of the winning trial, for figures.
      metrics: filled when the ground truth was given, after matching the
        reconstructed batch to the true one (`tfleak.metrics.evaluate`): means
        `mse`, `psnr` (dB, an exact match capped at `psnr_capped_at`), `ssim`,
        their per-image lists, `order`, and `label_accuracy` (as multisets).
      attack: the attack and every hyperparameter it ran with.
      message: one line on how it ended (converged, stalled, diverged).
      consensus: with group consistency, `[batch, h, w, c]` float32 in
        [0, 1]: the winning trial's registered mean of all seeds at the end
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


def attack_result(
    attack, best, fixed_labels, zero_distance, iterations, trials, message, seconds,
    ground_truth, evaluations=0,
) -> AttackResult:  # fmt: skip
    """The `AttackResult` of one attack's best start over its trials.

    Args:
      attack: the attack (kept in the result for its `repr`).
      best: its best `TrialOutcome`, or None when every start diverged.
      fixed_labels: `[batch]` labels it held fixed, or None (optimised).
      zero_distance: the gradient distance of a zero guess.
      iterations, evaluations: solver iterations and objective evaluations.
      trials: trials run.
      message: how the last trial ended.
      seconds: wall-clock seconds of the attack.
      ground_truth: `(images, labels)` to fill `metrics`, or None.
    """
    from tfleak.metrics import evaluate

    failed = AttackResult(
        reconstruction=None,
        labels=None,
        success=False,
        gradient_distance=float("inf"),
        relative_distance=float("inf"),
        iterations=iterations,
        restarts_used=trials - 1,
        seconds=seconds,
        evaluations=evaluations,
        attack=attack,
        message=f"failed: every start diverged ({message})",
    )
    if best is None or not np.all(np.isfinite(best.data)):
        return failed
    if fixed_labels is not None:
        predicted = np.asarray(fixed_labels, np.int64)
    else:
        predicted = np.argmax(best.label_logits, axis=-1).astype(np.int64)
    relative = best.distance / zero_distance
    success = bool(relative < attack.trials.tolerance)
    result = AttackResult(
        reconstruction=np.clip(best.data, 0.0, 1.0).astype(np.float32),
        labels=predicted,
        success=success,
        gradient_distance=float(best.distance),
        relative_distance=float(relative),
        iterations=iterations,
        restarts_used=trials - 1,
        seconds=seconds,
        evaluations=evaluations,
        history=best.history,
        attack=attack,
        message=("converged, " if success else "failed: did not converge, ") + message,
        consensus=None
        if best.consensus is None
        else np.clip(best.consensus, 0.0, 1.0).astype(np.float32),
    )
    if ground_truth is not None:
        images, true_labels = ground_truth
        result.metrics = evaluate(images, result.reconstruction, true_labels, result.labels)
        if result.consensus is not None:
            result.consensus_metrics = evaluate(
                images, result.consensus, true_labels, result.labels
            )
    return result
