"""Batched L-BFGS over dummy data, compiled once and resumed in chunks.

`tfp.optimizer.lbfgs_minimize` is fast inside one `tf.function` and dozens of
times slower from eager code. This wraps it so that a whole attack traces one
function: `resume(results, max_iterations)` continues every start for a chunk
of iterations; `initialize` evaluates the objective once at new starts and
builds the optimizer state that `resume` continues from, so restarts cost no
new tracing. All starts are independent rows of one `[starts, dimension]`
position, each holding one dummy batch (data, then label logits).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow import keras
from tensorflow_probability.python.optimizer.lbfgs import LBfgsOptimizerResults

from tfleak.attacks.dummy import DUMMY_INITS

__all__ = ["BatchedLBFGS"]


class BatchedLBFGS:
    """L-BFGS on `starts` independent dummy batches of one `DummyData` layout.

    Args:
      dummy: a `DummyData`; its shapes, fixed labels and gradient distance
        define the objective (its weights are not changed here).
      observed_gradient: the shared gradient, float32 tensors.
      starts: independent starts optimised together.
      init: dummy data initialisation, a key of `DUMMY_INITS`.
      num_correction_pairs: L-BFGS history length.
    """

    def __init__(
        self,
        dummy,
        observed_gradient: Sequence[tf.Tensor],
        starts: int,
        init: str = "normal",
        num_correction_pairs: int = 10,
    ):
        self.starts = starts
        self.init = init
        self.num_correction_pairs = num_correction_pairs
        self.data_shape = tuple(dummy.dummy_data.shape)
        self.logits_shape = tuple(dummy.dummy_label_logits.shape)
        self.data_size = int(np.prod(self.data_shape))
        self.optimise_labels = dummy.fixed_labels is None
        self._dummy = dummy
        self._observed = list(observed_gradient)
        self.initialize = tf.function(self._initialize, autograph=False)
        self.resume = tf.function(self._resume, autograph=False)

    def unpack(self, position: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One start's `[dimension]` position -> (data, label logits)."""
        data = tf.reshape(position[: self.data_size], self.data_shape)
        if self.optimise_labels:
            return data, tf.reshape(position[self.data_size :], self.logits_shape)
        return data, tf.identity(self._dummy.dummy_label_logits)

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

    def value_and_gradients(self, positions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Gradient distance of every start `[starts]` and its gradient `[starts, dimension]`."""
        with tf.GradientTape() as tape:
            tape.watch(positions)
            values = tf.stack(
                [
                    self._dummy.gradient_distance(*self.unpack(positions[i]), self._observed)
                    for i in range(self.starts)
                ]
            )
            # The starts are independent, so the gradient of the sum holds
            # each start's own gradient in its row.
            total = tf.reduce_sum(values)
        return values, tape.gradient(total, positions)

    def _initialize(self, positions: tf.Tensor) -> LBfgsOptimizerResults:
        values, gradients = self.value_and_gradients(positions)
        history = tf.zeros([self.num_correction_pairs, *positions.shape], dtype=positions.dtype)
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

    def _resume(self, results: LBfgsOptimizerResults, max_iterations) -> LBfgsOptimizerResults:
        return tfp.optimizer.lbfgs_minimize(
            self.value_and_gradients,
            initial_position=None,
            previous_optimizer_results=results,
            num_correction_pairs=self.num_correction_pairs,
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
