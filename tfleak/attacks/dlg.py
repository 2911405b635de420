"""Deep Leakage from Gradients (DLG) and improved DLG (iDLG).

DLG (Zhu, Liu, Han, NeurIPS 2019, Algorithm 1) recovers a private batch and its
labels from the gradient it produced, by optimising dummy data and dummy
labels until their gradient matches (eq. 4):

    x'*, y'* = argmin_{x', y'} || dL(F(x', W), y') / dW - g ||^2

iDLG (Zhao, Mopuri, Bilen, 2020) first reads the label of a single example off
the sign of the last layer's gradient (`tfleak.labels.restore_label_idlg`) and
then optimises the data alone.

L-BFGS, as the paper uses, runs through `tfp.optimizer.lbfgs_minimize` inside
one `tf.function`, on a batch of independent random starts at once, in chunks of
`snapshot_every` iterations so that progress can be shown and recorded. DLG is
seed-sensitive (one start converges, another stays noise), so a round whose
starts stall or diverge is followed by a round from new random starts, up to
`restarts` times, and the start with the smallest gradient distance wins. A
NaN is a diverged start, not a crash. Success is judged without the ground
truth: the gradient distance must fall below `tolerance` times the distance of
a zero guess.

With `optimizer='adam'` the same objective is minimised by
`DummyData.fit` with Keras' Adam (callbacks, History, progress bar).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow import keras

from tfleak import metrics as metrics_lib
from tfleak.attacks.dummy import DUMMY_INITS, DummyData
from tfleak.attacks.lbfgs import BatchedLBFGS, as_arguments
from tfleak.attacks.objectives import GRADIENT_DISTANCES
from tfleak.attacks.result import AttackResult, Snapshot
from tfleak.labels import LABEL_STRATEGIES

__all__ = ["DLG", "IDLG", "OPTIMIZERS"]

OPTIMIZERS = ("lbfgs", "adam")


@dataclasses.dataclass
class DLG:
    """Deep Leakage from Gradients; its `repr` lists every hyperparameter.

    Attributes:
      optimizer: 'lbfgs' (the paper's) or 'adam'.
      iterations: most optimiser iterations per round (L-BFGS iterations, each
        one or more evaluations of eq. 4 in its line search; or Adam steps). A
        round that still makes progress runs on to this limit; one that stalls
        is abandoned earlier for a new random start.
      restarts: further rounds from new random starts when a round stalls or
        diverges (0 = a single round).
      starts_per_round: independent random starts optimised together in one
        round (L-BFGS only; Adam runs one).
      history_size: correction pairs L-BFGS keeps (PyTorch's default, 100).
      learning_rate: Adam's step size (ignored by L-BFGS, whose line search
        picks the step).
      distance: gradient distance, a key of `GRADIENT_DISTANCES` ('l2' = eq. 4).
      init: dummy data initialisation, a key of `DUMMY_INITS`. 'uniform'
        (U[0, 1], a valid image) by default: DLG's 'normal' (N(0, 1)) starts
        far outside the image range and, measured on LeNet, converges less
        often.
      label_strategy: 'optimize' (DLG: labels are optimised with the data) or
        'idlg' (the label is restored analytically first; one example only).
      tolerance: success when the gradient distance is below `tolerance` times
        the distance of a zero guess (dimensionless). Measured on LeNet and
        32x32 photographs, 1e-7 meant PSNR 29.3-32.5 dB, 1e-8 about 35-44 dB.
      stall_ratio: a round is abandoned when its best distance shrank by less
        than this factor over the last `stall_window` iterations.
      stall_window: iterations over which progress is measured.
      stall_floor: a round below this relative distance is in the basin of a
        solution and runs on (to `tolerance` or `iterations`) however slowly;
        no further round is started after it.
      snapshot_every: iterations between progress snapshots.
      seed: seed of the first start; start `i` of round `r` uses
        `seed + r * starts_per_round + i`.
    """

    optimizer: str = "lbfgs"
    iterations: int = 3000
    restarts: int = 4
    starts_per_round: int = 1
    history_size: int = 100
    learning_rate: float = 0.1
    distance: str = "l2"
    init: str = "uniform"
    label_strategy: str = "optimize"
    tolerance: float = 1e-8
    stall_ratio: float = 0.5
    stall_window: int = 300
    stall_floor: float = 1e-5
    snapshot_every: int = 10
    seed: int = 0

    def __post_init__(self):
        choices = {
            "optimizer": OPTIMIZERS,
            "distance": tuple(GRADIENT_DISTANCES),
            "init": tuple(DUMMY_INITS),
            "label_strategy": tuple(LABEL_STRATEGIES),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(valid)}."
                )
        for name in ("iterations", "starts_per_round", "snapshot_every", "stall_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if self.restarts < 0:
            raise ValueError(f"restarts must be >= 0; got {self.restarts}.")

    def __call__(
        self,
        victim,
        observed_gradient: Sequence,
        batch_size: int = 1,
        ground_truth: Optional[tuple] = None,
        verbose: int = 1,
        on_snapshot: Optional[Callable[[int, Snapshot], None]] = None,
    ) -> AttackResult:
        """Reconstructs the batch behind `observed_gradient`.

        Args:
          victim: the `tfleak.models.Victim` that produced the gradient, with
            the same weights.
          observed_gradient: the shared gradient, a list of float32 tensors
            matching `victim.trainable_variables` (as `victim.gradient` gives).
          batch_size: examples in the shared batch.
          ground_truth: optional `(images [batch, h, w, c] in [0, 1], labels
            [batch] int)` to fill `result.metrics`; never used by the attack.
          verbose: 0 silent, 1 a progress bar per round.
          on_snapshot: called as `on_snapshot(round, snapshot)` at every
            snapshot (e.g. to time when a PSNR is reached).

        Returns:
          An `AttackResult`.

        Raises:
          ValueError: the gradient does not match the victim's variables, or
            'idlg' is asked for a batch of more than one example.
        """
        start_time = time.perf_counter()
        observed = victim.check_gradient(observed_gradient)
        labels = None
        if self.label_strategy != "optimize":
            if batch_size != 1:
                raise ValueError(
                    f"label_strategy {self.label_strategy!r} restores the label of a single "
                    f"example; got batch_size={batch_size}. Use label_strategy='optimize'."
                )
            labels = LABEL_STRATEGIES[self.label_strategy](victim, observed)
        zero = GRADIENT_DISTANCES[self.distance]([tf.zeros_like(g) for g in observed], observed)
        zero_distance = float(zero) or 1.0
        if self.optimizer == "lbfgs":
            dummy = DummyData(victim, batch_size, labels, self.distance, self.init, self.seed)
            solver = BatchedLBFGS.for_victim(
                victim,
                batch_size,
                labels is None,
                self.distance,
                self.starts_per_round,
                self.init,
                self.history_size,
            )
            arguments = as_arguments(observed, dummy.fixed_labels, dummy.dummy_label_logits.shape)

        best = None  # (distance, data, label_logits, history, dummy)
        iterations = 0
        message = ""
        rounds = 0
        for round_index in range(self.restarts + 1):
            rounds = round_index + 1
            if verbose:
                print(f"{type(self).__name__} round {rounds}/{self.restarts + 1}")
            if self.optimizer == "lbfgs":
                outcome = self._lbfgs_round(
                    solver, arguments, round_index, zero_distance, verbose, on_snapshot
                )
            else:
                dummy = DummyData(
                    victim,
                    batch_size,
                    labels,
                    self.distance,
                    self.init,
                    seed=self.seed + round_index,
                )
                outcome = self._adam_round(
                    dummy, observed, round_index, zero_distance, verbose, on_snapshot
                )
            distance, data, label_logits, history, used, ending = outcome
            iterations += used
            if np.isfinite(distance) and (best is None or distance < best[0]):
                best = (distance, data, label_logits, history, dummy)
            message = f"round {rounds}: {ending}"
            if verbose:
                print(message)
            # A round that got below the stall floor found the solution's basin
            # (it converged, or hit float32 precision or the iteration limit
            # there): a fresh random start would only start over.
            if best is not None and best[0] / zero_distance < self.stall_floor:
                break

        seconds = time.perf_counter() - start_time
        if best is None:
            return AttackResult(
                reconstruction=None,
                labels=None,
                success=False,
                gradient_distance=float("inf"),
                relative_distance=float("inf"),
                iterations=iterations,
                restarts_used=rounds - 1,
                seconds=seconds,
                attack=self,
                message=f"failed: every start diverged ({message})",
            )
        distance, data, label_logits, history, dummy = best
        dummy.dummy_data.assign(data)
        dummy.dummy_label_logits.assign(label_logits)
        success = distance / zero_distance < self.tolerance
        result = AttackResult(
            reconstruction=dummy.images(),
            labels=dummy.predicted_labels(),
            success=bool(success),
            gradient_distance=float(distance),
            relative_distance=float(distance / zero_distance),
            iterations=iterations,
            restarts_used=rounds - 1,
            seconds=seconds,
            history=history,
            attack=self,
            message=("converged, " if success else "failed: did not converge, ") + message,
        )
        if ground_truth is not None:
            images, true_labels = ground_truth
            result.metrics = metrics_lib.image_metrics(images, result.reconstruction)
            result.metrics["label_accuracy"] = metrics_lib.label_accuracy(
                true_labels, result.labels
            )
        return result

    # -- L-BFGS ---------------------------------------------------------------

    def _lbfgs_round(self, solver, arguments, round_index, zero_distance, verbose, on_snapshot):
        results = solver.initialize(solver.random_starts(self.seed, round_index), *arguments)
        progress = (
            keras.utils.Progbar(self.iterations, stateful_metrics=["relative_distance"])
            if verbose
            else None
        )
        history = []
        best_at = {}  # iteration -> best relative distance, for stall detection
        done = 0
        relative = np.inf
        ending = f"stopped after {self.iterations} iterations"
        while done < self.iterations:
            target = tf.constant(min(done + self.snapshot_every, self.iterations), tf.int32)
            results = solver.resume(results, target, *arguments)
            done = int(results.num_iterations)
            winner, value = solver.best(results)
            relative = value / zero_distance
            snapshot = Snapshot(done, relative, solver.images(results, winner))
            history.append(snapshot)
            if on_snapshot is not None:
                on_snapshot(round_index, snapshot)
            if progress is not None:
                progress.update(done, [("relative_distance", relative)])
            best_at[done] = relative
            if relative < self.tolerance:
                ending = f"converged after {done} iterations"
                break
            if not np.isfinite(relative):
                ending = f"every start diverged (NaN/inf) by iteration {done}"
                break
            if bool(tf.reduce_all(results.converged | results.failed)):
                ending = (
                    f"line search could not improve any start at relative distance "
                    f"{relative:.3g} after {done} iterations (float32 precision, if small)"
                )
                break
            earlier = [i for i in best_at if i <= done - self.stall_window]
            if (
                earlier
                and relative > self.stall_floor
                and relative > self.stall_ratio * best_at[max(earlier)]
            ):
                ending = f"stalled at relative distance {relative:.3g} after {done} iterations"
                break
        if progress is not None and done < self.iterations:
            progress.update(self.iterations, [("relative_distance", relative)], finalize=True)
        winner, value = solver.best(results)
        data, logits = solver.unpack(results.position[winner])
        if logits is None:
            logits = tf.zeros(solver.logits_shape)  # unused: the labels are fixed
        return value, data, logits, history, done, ending

    # -- Adam through DummyData.fit -------------------------------------------

    def _adam_round(self, dummy, observed, round_index, zero_distance, verbose, on_snapshot):
        dummy.compile(optimizer=keras.optimizers.Adam(self.learning_rate))
        recorder = _SnapshotRecorder(
            dummy, self.snapshot_every, zero_distance, self.tolerance, round_index, on_snapshot
        )
        dummy.fit(
            DummyData.observations(observed, self.iterations),
            epochs=1,
            verbose=verbose,
            callbacks=[keras.callbacks.TerminateOnNaN(), recorder],
        )
        distance = float(
            dummy.gradient_distance(dummy.dummy_data, dummy.dummy_label_logits, observed)
        )
        if not np.isfinite(distance):
            ending = f"diverged (NaN/inf) by step {recorder.steps}"
        elif distance / zero_distance < self.tolerance:
            ending = f"converged after {recorder.steps} steps"
        else:
            ending = f"stopped after {recorder.steps} steps"
        return (
            distance if np.isfinite(distance) else np.inf,
            tf.identity(dummy.dummy_data),
            tf.identity(dummy.dummy_label_logits),
            recorder.history,
            recorder.steps,
            ending,
        )


@dataclasses.dataclass
class IDLG(DLG):
    """iDLG: the label is restored from the gradient's sign, then DLG on the data."""

    label_strategy: str = "idlg"


class _SnapshotRecorder(keras.callbacks.Callback):
    """Records snapshots every `every` steps and stops once below tolerance."""

    def __init__(self, dummy, every, zero_distance, tolerance, round_index, on_snapshot):
        super().__init__()
        self.dummy, self.every, self.zero_distance = dummy, every, zero_distance
        self.tolerance, self.round_index, self.on_snapshot = tolerance, round_index, on_snapshot
        self.history, self.steps = [], 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps = batch + 1
        relative = float(logs["gradient_distance"]) / self.zero_distance
        if self.steps % self.every == 0 or relative < self.tolerance:
            snapshot = Snapshot(self.steps, relative, self.dummy.images())
            self.history.append(snapshot)
            if self.on_snapshot is not None:
                self.on_snapshot(self.round_index, snapshot)
        if relative < self.tolerance:
            self.model.stop_training = True
