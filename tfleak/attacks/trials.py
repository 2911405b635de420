"""Trials, restarts, stall detection and choosing the best start: one place for every attack.

Gradient inversion is seed-sensitive: one start converges, another stays
noise. An attack runs trials of `starts` independent starts; during a trial a
`TrialMonitor` sees every start's objective and gradient distance every few
iterations, records snapshots, shows progress, and ends the trial when the
best start converged (relative distance below the tolerance), every start
diverged (NaN/inf), or the objective stalled. Trials follow each other from
new random starts until one is in a solution's basin or the restarts are used
up; the start with the smallest gradient distance over all trials wins.
Success is judged without the ground truth, as a real attacker must.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import keras
import numpy as np

from tfleak.attacks.result import Snapshot

__all__ = ["AttacksMonitor", "StopRule", "TrialMonitor", "TrialOutcome", "TrialRows"]


@dataclasses.dataclass(frozen=True)
class StopRule:
    """When a trial ends early.

    Attributes:
      tolerance: converged when the best relative gradient distance is below
        this (dimensionless: the distance over a zero guess's distance).
      stall_ratio: stalled when the best objective shrank by less than this
        factor over the last `stall_window` iterations (None: never stalls).
      stall_window: iterations over which progress is measured.
      stall_floor: below this relative distance a trial is in the basin of a
        solution and is never abandoned as stalled; no further trial follows.
    """

    tolerance: float
    stall_ratio: Optional[float]
    stall_window: int
    stall_floor: float


@dataclasses.dataclass
class TrialOutcome:
    """The best start of one trial."""

    distance: float  # the gradient distance (not relative), inf if all diverged
    data: Optional[np.ndarray]  # [batch, h, w, c] as optimised (unclipped)
    label_logits: Optional[np.ndarray]  # [batch, classes] or None
    history: list
    iterations: int
    ending: str
    consensus: Optional[np.ndarray] = None  # [batch, h, w, c], group consistency only
    evaluations: int = 0  # objective evaluations in the trial (per start)


@dataclasses.dataclass
class TrialRows:
    """Every start of one trial at its end, for choosing the best of some of them."""

    distances: np.ndarray  # [starts], inf where the start diverged
    data: np.ndarray  # [starts, batch, h, w, c] as optimised (unclipped)
    label_logits: Optional[np.ndarray]  # [starts, batch, classes] or None
    consensus: Optional[np.ndarray] = None  # [batch, h, w, c], group consistency only
    evaluations: Optional[int] = None  # objective evaluations (None: one per iteration)

    def best(self, monitor, rows: Optional[slice] = None) -> TrialOutcome:
        """The `TrialOutcome` of the start with the smallest distance among `rows`
        (default: all), with the history and ending `monitor` recorded."""
        index = np.arange(len(self.distances))[rows if rows is not None else slice(None)]
        best = int(index[np.argmin(self.distances[index])])
        return TrialOutcome(
            distance=float(self.distances[best]),
            data=self.data[best],
            label_logits=None if self.label_logits is None else self.label_logits[best],
            history=monitor.history,
            iterations=monitor.iterations,
            ending=monitor.ending,
            consensus=self.consensus,
            evaluations=monitor.iterations if self.evaluations is None else self.evaluations,
        )


class TrialMonitor:
    """Watches one trial: snapshots, progress bar, and the stop rule.

    Args:
      rule: a `StopRule`.
      zero_distance: the gradient distance of a zero guess (> 0).
      iterations: the trial's iteration budget (for the progress bar).
      trial_index: which trial (passed to `on_snapshot`).
      verbose: 0 silent, 1 a progress bar.
      on_snapshot: called as `on_snapshot(trial_index, snapshot)`.
    """

    def __init__(self, rule, zero_distance, iterations, trial_index, verbose, on_snapshot):
        self.rule, self.zero_distance = rule, float(zero_distance)
        self.trial_index, self.on_snapshot = trial_index, on_snapshot
        self.history: list[Snapshot] = []
        self._best_at: dict[int, float] = {}
        self.ending = f"stopped after {iterations} iterations"
        self.iterations = 0
        self._progress = (
            keras.utils.Progbar(iterations, stateful_metrics=["relative_distance", "objective"])
            if verbose
            else None
        )
        self._budget = iterations

    def update(
        self, iteration: int, objectives, distances, images: Callable[[int], np.ndarray]
    ) -> bool:
        """Records iteration `iteration`; returns True when the trial should end.

        Args:
          objectives: `[starts]` objective values (distance plus priors).
          distances: `[starts]` gradient distances.
          images: `images(start)` -> that start's batch `[batch, h, w, c]` in [0, 1].
        """
        self.iterations = iteration
        objectives = np.where(np.isfinite(objectives), objectives, np.inf)
        distances = np.where(np.isfinite(distances), distances, np.inf)
        best = int(np.argmin(distances))
        relative = float(distances[best]) / self.zero_distance
        objective = float(np.min(objectives))
        if np.isfinite(relative):
            snapshot = Snapshot(iteration, relative, images(best))
            self.history.append(snapshot)
            if self.on_snapshot is not None:
                self.on_snapshot(self.trial_index, snapshot)
        if self._progress is not None:
            self._progress.update(
                min(iteration, self._budget),
                [("relative_distance", relative), ("objective", objective)],
            )
        self._best_at[iteration] = objective
        if relative < self.rule.tolerance:
            self.ending = f"converged after {iteration} iterations"
            return True
        if not np.isfinite(objective):
            self.ending = f"every start diverged (NaN/inf) by iteration {iteration}"
            return True
        earlier = [i for i in self._best_at if i <= iteration - self.rule.stall_window]
        if (
            self.rule.stall_ratio is not None
            and earlier
            and relative > self.rule.stall_floor
            and objective > self.rule.stall_ratio * self._best_at[max(earlier)]
        ):
            self.ending = (
                f"stalled at relative distance {relative:.3g} after {iteration} iterations"
            )
            return True
        return False

    def end_line_search(self, iteration: int, distances) -> None:
        """Records that L-BFGS's line search could not improve any start.

        Args:
          iteration: iterations done in this trial.
          distances: `[starts]` gradient distances of this trial's starts.
        """
        distances = np.asarray(distances, np.float64)
        finite = distances[np.isfinite(distances)]
        relative = float(np.min(finite)) / self.zero_distance if finite.size else float("inf")
        self.ending = (
            f"line search could not improve any start at relative distance {relative:.3g} "
            f"after {iteration} iterations (float32 precision, if small)"
        )

    def close(self) -> None:
        """Completes the progress bar of a trial that ended early."""
        if self._progress is not None and self.iterations < self._budget:
            self._progress.update(self._budget, finalize=True)


class AttacksMonitor:
    """One trial of A attacks: a `TrialMonitor` per attack over its rows.

    Attack `a`'s starts are rows `[a * starts, (a + 1) * starts)`. An attack
    whose monitor ends its trial (converged, diverged, stalled) stops being
    watched; its rows keep stepping with the others (the graph is shared) and
    its result is its best start at the trial's end. The trial ends when
    every attack's has. One attack shows its own progress bar and snapshots
    (`on_snapshot`); several share one bar.

    Args:
      rule: the `StopRule`.
      zero_distances: per attack, the gradient distance of a zero guess.
      starts: starts per attack.
      iterations: the trial's iteration budget.
      trial_index: which trial.
      verbose: 0 silent, 1 a progress bar.
      on_snapshot: for one attack, called as `on_snapshot(trial_index, snapshot)`.
    """

    def __init__(
        self, rule, zero_distances, starts, iterations, trial_index, verbose, on_snapshot=None
    ):
        alone = len(zero_distances) == 1
        self.monitors = [
            TrialMonitor(
                rule,
                zero,
                iterations,
                trial_index,
                verbose if alone else 0,
                on_snapshot if alone else None,
            )
            for zero in zero_distances
        ]
        self.starts, self.iterations, self._budget = starts, 0, iterations
        self.active = [True] * len(zero_distances)
        self.ending = f"stopped after {iterations} iterations"
        self._progress = (
            keras.utils.Progbar(iterations, stateful_metrics=["attacks_ended", "median_relative"])
            if verbose and not alone
            else None
        )

    def rows(self, attack: int) -> slice:
        """The rows (starts) of attack `attack`."""
        return slice(attack * self.starts, (attack + 1) * self.starts)

    def update(self, iteration, objectives, distances, images) -> bool:
        """Records iteration `iteration` for every watched attack; True when all have ended.

        Args:
          objectives, distances: `[attacks * starts]` per row.
          images: `images(row)` -> that row's batch `[batch, h, w, c]` in [0, 1].
        """
        self.iterations = iteration
        relative = []
        for a, monitor in enumerate(self.monitors):
            rows = self.rows(a)
            if self.active[a]:
                ended = monitor.update(
                    iteration,
                    objectives[rows],
                    distances[rows],
                    lambda s, first=rows.start: images(first + s),
                )
                self.active[a] = not ended
            finite = np.where(np.isfinite(distances[rows]), distances[rows], np.inf)
            relative.append(float(np.min(finite)) / monitor.zero_distance)
        if self._progress is not None:
            self._progress.update(
                min(iteration, self._budget),
                [
                    ("attacks_ended", float(len(self.active) - sum(self.active))),
                    ("median_relative", float(np.median(relative))),
                ],
            )
        if not any(self.active):
            self.ending = f"every attack's trial ended by iteration {iteration}"
            return True
        return False

    def end_line_search(self, iteration: int, distances) -> None:
        """L-BFGS's line search could not improve any row: each attack still watched
        records it over its own rows (relative to its own zero distance)."""
        for a, monitor in enumerate(self.monitors):
            if self.active[a]:
                monitor.end_line_search(iteration, distances[self.rows(a)])
        self.ending = f"line search could not improve any start after {iteration} iterations"

    def close(self) -> None:
        """Completes the progress bar(s) of a trial that ended early."""
        for monitor in self.monitors:
            monitor.close()
        if self._progress is not None and self.iterations < self._budget:
            self._progress.update(self._budget, finalize=True)
