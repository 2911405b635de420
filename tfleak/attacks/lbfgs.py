"""Batched L-BFGS over dummy data, compiled once per victim and resumed in chunks.

`tfp.optimizer.lbfgs_minimize` is fast inside one `tf.function` and dozens of
times slower from eager code. This wraps it so that attacks on one victim trace
one function: `resume(results, max_iterations, observed, labels, bn_targets)`
continues every start for a chunk of iterations; `initialize` evaluates the
objective once at new starts and builds the optimizer state that `resume`
continues from. The observed gradient and the known labels are arguments, not
constants, so restarts and further attacks on the same victim (and layout)
reuse the traced graphs: `BatchedLBFGS.for_objective` caches one solver per
victim and layout. All starts are independent rows of one `[starts, dimension]`
position, each holding one dummy batch (data, then label logits), and the
objective (`GradientMatching`) evaluates them side by side in one graph.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.optimizer.lbfgs import LBfgsOptimizerResults

from tfleak.attacks.candidate import DUMMY_INITS

__all__ = ["BatchedLBFGS", "ReplicatedLBFGS"]

_SOLVERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class BatchedLBFGS:
    """L-BFGS on `starts` independent dummy batches attacking one victim.

    Args:
      objective: a `GradientMatching` (holds the victim weakly).
      batch_size: examples in the shared batch.
      optimise_labels: optimise label logits with the data (DLG), or take the
        labels as given (iDLG).
      starts: independent starts optimised together.
      init: dummy data initialisation, a key of `DUMMY_INITS`.
      history_size: L-BFGS correction pairs.
      jit_compile: compile the solver with XLA (faster evaluations, slower
        first call).
    """

    def __init__(
        self, objective, batch_size, optimise_labels, starts, init, history_size, jit_compile=False
    ):
        victim = objective.victim
        self.objective = objective
        self.starts = starts
        self.init = init
        self.history_size = history_size
        self.optimise_labels = optimise_labels
        self.data_shape = (starts, batch_size, *victim.image_shape)
        self.logits_shape = (starts, batch_size, victim.num_classes)
        self.data_size = int(np.prod(self.data_shape[1:]))
        self.initialize = tf.function(self.initialize_step, autograph=False)
        self.resume = tf.function(self.resume_step, autograph=False, jit_compile=jit_compile)
        self.distances = tf.function(self._distances, autograph=False)

    @classmethod
    def for_objective(
        cls, objective, batch_size, optimise_labels, starts, init, history_size, jit_compile=False
    ):
        """The cached solver for this objective's victim and layout (traced graphs reused)."""
        key = (
            objective.distance_name,
            tuple(sorted(objective.priors.items())),
            objective.bn_first_layer_scale,
            objective.vectorize,
            objective.stacked,
            repr(objective.update),
            batch_size,
            optimise_labels,
            starts,
            init,
            history_size,
            jit_compile,
        )
        solvers = _SOLVERS.setdefault(objective.victim, {})
        if key not in solvers:
            solvers[key] = cls(objective, *key[6:])
        return solvers[key]

    def unpack(self, positions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`[starts, dimension]` positions -> (data `[starts, batch, h, w, c]`, logits)."""
        data = tf.reshape(positions[:, : self.data_size], self.data_shape)
        if not self.optimise_labels:
            return data, None
        return data, tf.reshape(positions[:, self.data_size :], self.logits_shape)

    def random_starts(self, seed: int, trial_index: int, starts=None, period=None) -> tf.Tensor:
        """`[starts, dimension]` random starts; start `i` uses seed `seed + trial * starts + i`.

        `starts`: how many (default: the solver's). `period` P: start `i` uses
        `seed + trial * P + i mod P` instead (every block of P starts, one
        attack of `tfleak.attacks.many`, begins as one attack alone would).
        """
        starts = self.starts if starts is None else int(starts)
        period = starts if period is None else int(period)
        rows = []
        for i in range(starts):
            start_seed = seed + trial_index * period + i % period
            parts = [tf.reshape(DUMMY_INITS[self.init](start_seed)(self.data_shape[1:]), [-1])]
            if self.optimise_labels:
                logits = keras.initializers.RandomNormal(0.0, 1.0, seed=start_seed + 1)
                parts.append(tf.reshape(logits(self.logits_shape[1:]), [-1]))
            rows.append(tf.concat(parts, axis=0))
        return tf.stack(rows)

    def probabilities(self, logits, labels):
        """`[starts, batch, classes]`: softmax of the label logits, or the given labels."""
        return tf.nn.softmax(logits, axis=-1) if self.optimise_labels else labels

    def _value_and_gradients(self, observed, labels, bn_targets):
        def value_and_gradients(positions):
            with tf.GradientTape() as tape:
                tape.watch(positions)
                data, logits = self.unpack(positions)
                values, _, _ = self.objective(
                    data, self.probabilities(logits, labels), observed, bn_targets
                )
                # The starts are independent, so the gradient of the sum holds
                # each start's own gradient in its row.
                total = tf.reduce_sum(values)
            return values, tape.gradient(total, positions)

        return value_and_gradients

    def initialize_step(self, positions, observed, labels, bn_targets) -> LBfgsOptimizerResults:
        """The optimizer state at new starts (one objective evaluation); `initialize` traced."""
        values, gradients = self._value_and_gradients(observed, labels, bn_targets)(positions)
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

    def resume_step(
        self, results, max_iterations, observed, labels, bn_targets
    ) -> LBfgsOptimizerResults:
        """Continues every start up to `max_iterations` in all; `resume` is this traced."""
        return tfp.optimizer.lbfgs_minimize(
            self._value_and_gradients(observed, labels, bn_targets),
            initial_position=None,
            previous_optimizer_results=results,
            num_correction_pairs=self.history_size,
            # No gradient-norm test: the attack decides when it converged.
            tolerance=0.0,
            max_iterations=max_iterations,
        )

    def _distances(self, positions, observed, labels, bn_targets) -> tf.Tensor:
        data, logits = self.unpack(positions)
        return self.objective(data, self.probabilities(logits, labels), observed, bn_targets)[1]


class ReplicatedLBFGS:
    """A `BatchedLBFGS` whose starts are split evenly across a strategy's replicas.

    Replica `r` runs L-BFGS on starts `[r * n, (r + 1) * n)` (n = the wrapped
    solver's starts) with their rows of the observations, inside
    `strategy.run`. L-BFGS keeps its state in tensors, not variables, so the
    dummy data is never a mirrored variable and nothing is all-reduced: the
    starts (independent attacks) stay independent, and each computes what
    one device would. The victim's weights are read on every replica.

    Offers `BatchedLBFGS`'s interface over all `replicas * n` starts;
    `initialize` and `resume` return a `Replicated` state whose fields are the
    replicas' results concatenated (`num_iterations`: the most of any replica).
    """

    def __init__(self, solver: BatchedLBFGS, strategy: tf.distribute.Strategy):
        self.solver, self.strategy = solver, strategy
        self.replicas = strategy.num_replicas_in_sync
        self.starts = solver.starts * self.replicas
        self.data_shape = (self.starts, *solver.data_shape[1:])
        self.logits_shape = (self.starts, *solver.logits_shape[1:])
        self._initialize_fn = tf.function(self._initialize, autograph=False)
        self._resume_fn = tf.function(self._resume, autograph=False)
        self.distances = tf.function(self._distances, autograph=False)

    def _split(self, rows):
        """Per-replica values: replica r gets rows `[r n, (r + 1) n)` of every tensor."""
        n = self.solver.starts

        def value_fn(context):
            r = context.replica_id_in_sync_group
            return tf.nest.map_structure(lambda t: t[r * n : (r + 1) * n], rows)

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def _merge(self, per_replica) -> LBfgsOptimizerResults:
        parts = self.strategy.experimental_local_results(per_replica)
        merged = {}
        for field in LBfgsOptimizerResults._fields:
            values = [getattr(p, field) for p in parts]
            if field in ("num_iterations", "num_objective_evaluations"):
                merged[field] = tf.reduce_max(tf.stack(values))
            elif field in ("position_deltas", "gradient_deltas"):
                merged[field] = tf.concat(values, axis=1)  # [history, starts, dimension]
            else:
                merged[field] = tf.concat(values, axis=0)
        return LBfgsOptimizerResults(**merged)

    def _initialize(self, positions, observed, labels, bn_targets):
        rows = self._split((positions, list(observed), labels))
        per_replica = self.strategy.run(
            lambda p, o, y: self.solver.initialize_step(p, o, y, bn_targets), args=rows
        )
        return per_replica

    def _resume(self, per_replica, max_iterations, observed, labels, bn_targets):
        rows = self._split((list(observed), labels))
        return self.strategy.run(
            lambda r, o, y: self.solver.resume_step(r, max_iterations, o, y, bn_targets),
            args=(per_replica, *rows),
        )

    def initialize(self, positions, observed, labels, bn_targets):
        state = self._initialize_fn(positions, observed, labels, bn_targets)
        return Replicated(state, self._merge(state))

    def resume(self, results, max_iterations, observed, labels, bn_targets):
        state = self._resume_fn(results.per_replica, max_iterations, observed, labels, bn_targets)
        return Replicated(state, self._merge(state))

    def random_starts(self, seed: int, trial_index: int, period=None) -> tf.Tensor:
        """The starts one solver of all `starts` would draw (same seeds)."""
        return self.solver.random_starts(seed, trial_index, self.starts, period)

    def unpack(self, positions: tf.Tensor):
        data = tf.reshape(positions[:, : self.solver.data_size], self.data_shape)
        if not self.solver.optimise_labels:
            return data, None
        return data, tf.reshape(positions[:, self.solver.data_size :], self.logits_shape)

    def _distances(self, positions, observed, labels, bn_targets) -> tf.Tensor:
        data, logits = self.unpack(positions)
        probabilities = self.solver.probabilities(logits, labels)
        return self.solver.objective(data, probabilities, observed, bn_targets)[1]


class Replicated:
    """Per-replica L-BFGS state, and the replicas' results concatenated (its attributes)."""

    def __init__(self, per_replica, merged: LBfgsOptimizerResults):
        self.per_replica, self.merged = per_replica, merged

    def __getattr__(self, name):
        return getattr(self.merged, name)
