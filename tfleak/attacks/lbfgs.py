"""Batched L-BFGS over dummy data, compiled once per victim and resumed in chunks.

`tfp.optimizer.lbfgs_minimize` is fast inside one `tf.function` and dozens of
times slower from eager code. This wraps it so that attacks on one victim trace
one function: `resume(results, max_iterations, observed, labels)` continues
every start for a chunk of iterations; `initialize` evaluates the objective
once at new starts and builds the optimizer state that `resume` continues from.
The observed gradient and the known labels are arguments, not constants, so
restarts and further attacks on the same victim (and batch layout) reuse the
traced graphs: `BatchedLBFGS.for_victim` caches one solver per victim and
layout. All starts are independent rows of one `[starts, dimension]` position,
each holding one dummy batch (data, then label logits).
"""

from __future__ import annotations

import weakref
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow import keras
from tensorflow_probability.python.optimizer.lbfgs import LBfgsOptimizerResults

from tfleak.attacks.dummy import DUMMY_INITS
from tfleak.attacks.objectives import get_gradient_distance

__all__ = ["BatchedLBFGS"]

_SOLVERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class BatchedLBFGS:
    """L-BFGS on `starts` independent dummy batches attacking one victim.

    Args:
      victim: the `tfleak.models.Victim` that shared the gradient.
      batch_size: examples in the shared batch.
      optimise_labels: optimise label logits with the data (DLG), or take the
        labels as given (iDLG).
      distance: a key of `GRADIENT_DISTANCES`.
      starts: independent starts optimised together.
      init: dummy data initialisation, a key of `DUMMY_INITS`.
      history_size: L-BFGS correction pairs.
    """

    def __init__(self, victim, batch_size, optimise_labels, distance, starts, init, history_size):
        self.starts = starts
        self.init = init
        self.history_size = history_size
        self.optimise_labels = optimise_labels
        self.data_shape = (batch_size, *victim.image_shape)
        self.logits_shape = (batch_size, victim.num_classes)
        self.data_size = int(np.prod(self.data_shape))
        # Weakly: the cache below is keyed weakly by the victim, and a strong
        # reference from its value would keep every attacked victim alive.
        self._victim = weakref.ref(victim)
        self._distance = get_gradient_distance(distance)
        self.initialize = tf.function(self._initialize, autograph=False)
        self.resume = tf.function(self._resume, autograph=False)

    @classmethod
    def for_victim(cls, victim, batch_size, optimise_labels, distance, starts, init, history_size):
        """The cached solver for this victim and layout (traced graphs reused)."""
        key = (batch_size, optimise_labels, distance, starts, init, history_size)
        solvers = _SOLVERS.setdefault(victim, {})
        if key not in solvers:
            solvers[key] = cls(victim, *key)
        return solvers[key]

    def unpack(self, position: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One start's `[dimension]` position -> (data, label logits or None)."""
        data = tf.reshape(position[: self.data_size], self.data_shape)
        if self.optimise_labels:
            return data, tf.reshape(position[self.data_size :], self.logits_shape)
        return data, None

    def random_starts(self, seed: int, round_index: int) -> tf.Tensor:
        """`[starts, dimension]` random starts; start `i` uses seed `seed + round * starts + i`."""
        rows = []
        for i in range(self.starts):
            start_seed = seed + round_index * self.starts + i
            parts = [tf.reshape(DUMMY_INITS[self.init](start_seed)(self.data_shape), [-1])]
            if self.optimise_labels:
                logits = keras.initializers.RandomNormal(0.0, 1.0, seed=start_seed + 1)
                parts.append(tf.reshape(logits(self.logits_shape), [-1]))
            rows.append(tf.concat(parts, axis=0))
        return tf.stack(rows)

    def _objective(self, observed, labels):
        """value_and_gradients for tfp, given the observed gradient and known labels."""

        def value_and_gradients(positions):
            with tf.GradientTape() as tape:
                tape.watch(positions)
                values = []
                for i in range(self.starts):
                    data, logits = self.unpack(positions[i])
                    probabilities = labels if logits is None else tf.nn.softmax(logits)
                    dummy_gradient = self._victim().gradient(data, probabilities)
                    values.append(self._distance(dummy_gradient, observed))
                values = tf.stack(values)
                # The starts are independent, so the gradient of the sum holds
                # each start's own gradient in its row.
                total = tf.reduce_sum(values)
            return values, tape.gradient(total, positions)

        return value_and_gradients

    def _initialize(self, positions, observed, labels) -> LBfgsOptimizerResults:
        values, gradients = self._objective(observed, labels)(positions)
        history = tf.zeros([self.history_size, *positions.shape], dtype=positions.dtype)
        return LBfgsOptimizerResults(
            converged=tf.zeros([self.starts], tf.bool),
            failed=~tf.math.is_finite(values),
            num_iterations=tf.constant(0),
            num_objective_evaluations=tf.constant(1),
            position=positions,
            objective_value=values,
            objective_gradient=gradients,
            position_deltas=history,
            gradient_deltas=history,
        )

    def _resume(self, results, max_iterations, observed, labels) -> LBfgsOptimizerResults:
        return tfp.optimizer.lbfgs_minimize(
            self._objective(observed, labels),
            initial_position=None,
            previous_optimizer_results=results,
            num_correction_pairs=self.history_size,
            # No gradient-norm test: the attack decides when it converged.
            tolerance=0.0,
            max_iterations=max_iterations,
        )

    @staticmethod
    def best(results: LBfgsOptimizerResults) -> tuple[int, float]:
        """(index, value) of the start with the smallest finite distance (inf if none)."""
        values = results.objective_value.numpy()
        values = np.where(np.isfinite(values), values, np.inf)
        winner = int(np.argmin(values))
        return winner, float(values[winner])

    def images(self, results: LBfgsOptimizerResults, start: int) -> np.ndarray:
        """Start `start`'s dummy data as images clipped to [0, 1]."""
        data, _ = self.unpack(results.position[start])
        return np.clip(data.numpy(), 0.0, 1.0)


def as_arguments(observed: Sequence[tf.Tensor], labels, shape) -> tuple[list, tf.Tensor]:
    """The observed gradient and known label probabilities as tf.function arguments.

    Without known labels, a zero tensor of the logits' shape stands in (unused).
    """
    labels = tf.zeros(shape) if labels is None else tf.convert_to_tensor(labels, tf.float32)
    return list(observed), labels
