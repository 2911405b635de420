"""The two solvers an attack's trials run on: first-order steps and L-BFGS.

Each builder returns `run_trial(trial_index, monitor) -> TrialRows`, which
optimises every row of the stacked dummy data (attacks x starts) from fresh
random starts for one trial while `monitor` (`tfleak.attacks.trials`) watches
it, and hands back every row at its end. The compiled parts (a `Candidate`
and its optimizer, or a `BatchedLBFGS`) are cached per victim and layout, so
attacks that differ only in prior weights, registration, restarts or
tolerance reuse one traced graph.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from tfleak.attacks.candidate import Candidate, make_schedule
from tfleak.attacks.lbfgs import BatchedLBFGS, ReplicatedLBFGS
from tfleak.attacks.settings import LBFGS
from tfleak.attacks.trials import TrialRows

__all__ = ["trial_runner"]

_CANDIDATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def trial_runner(attack, objective, batch_size, optimise_labels, observed, labels, bn,
                 starts, seed_period, strategy=None):  # fmt: skip
    """`run_trial(trial_index, monitor)` for `attack`'s solver.

    Args:
      attack: the `GradientInversion` whose settings are used.
      objective: its `GradientMatching` (stacked: one observation per row).
      batch_size: examples in each shared batch.
      optimise_labels: labels are optimised with the data.
      observed: per victim variable, `[rows, ...]` observed updates.
      labels: `[rows, batch, classes]` label probabilities (zeros when optimised).
      bn: batch-norm targets `((mean, variance), ...)`, or `()`.
      starts: rows in all (attacks x starts per attack).
      seed_period: starts per attack (each attack's starts use the seeds it
        would use alone).
      strategy: a multi-replica `tf.distribute.Strategy` (L-BFGS only), or None.
    """
    arguments = (attack, objective, batch_size, optimise_labels, observed, labels, bn, starts)
    if isinstance(attack.solver, LBFGS):
        return _lbfgs_trials(*arguments, seed_period, strategy)
    return _first_order_trials(*arguments, seed_period)


def _chunk(solver) -> int:
    """First-order steps per graph call: the largest divisor of `iterations`
    up to `snapshot_every`, so a trial runs exactly `iterations` steps."""
    most = min(solver.snapshot_every, solver.iterations)
    return max(d for d in range(1, most + 1) if solver.iterations % d == 0)


def _first_order_trials(
    attack, objective, batch_size, optimise_labels, observed, labels, bn, starts, seed_period
):
    candidate = _candidate(attack, objective, batch_size, optimise_labels, starts, seed_period)
    dataset = Candidate.observations(observed, labels, bn)
    every = _chunk(attack.solver)
    chunks = attack.solver.iterations // every

    def run_trial(trial_index, monitor):
        candidate.reset(trial_index)
        watcher = _Watcher(candidate, monitor, every)
        candidate.fit(
            dataset,
            epochs=chunks,
            steps_per_epoch=every,
            verbose=0,
            shuffle=False,
            callbacks=[watcher],
        )
        values, distances = candidate.values.numpy(), candidate.distances.numpy()
        return TrialRows(
            distances=np.where(np.isfinite(values), distances, np.inf),
            data=candidate.dummy_data.numpy(),
            label_logits=candidate.dummy_label_logits.numpy() if optimise_labels else None,
            consensus=candidate.current_consensus().numpy() if candidate.group else None,
        )

    return run_trial


def _candidate(attack, objective, batch_size, optimise_labels, starts, seed_period) -> Candidate:
    """One compiled `Candidate` per victim and configuration (traced graphs reused).

    Prior weights, registration, seeds, initializer, learning rate, iteration
    budget and the group schedule are variables or Python state of the
    candidate, so attacks that differ only in them (the batches, repeats and
    settings of one study) share one traced graph; the key holds what changes
    the graph's structure.
    """
    solver, trials, settings = attack.solver, attack.trials, attack.objective
    group = settings.group
    key = (
        (solver.optimizer, solver.schedule, solver.signed, solver.boxed, solver.langevin),
        _chunk(solver),
        trials.vectorize,
        (settings.distance, tuple(sorted(settings.priors)), settings.bn_first_layer_scale),
        repr(objective.update),
        starts,
        batch_size,
        optimise_labels,
        objective.stacked,
        getattr(objective, "layout", "per_attack"),
        seed_period,
    )
    cache = _CANDIDATES.setdefault(objective.victim, {})
    candidate, schedule = cache.get(key, (None, None))
    if candidate is None:
        candidate = Candidate(
            objective,
            starts,
            batch_size,
            optimise_labels,
            signed=solver.signed,
            boxed=solver.boxed,
            langevin=solver.langevin,
            seed_period=seed_period,
        )
        schedule = make_schedule(
            solver.schedule, solver.learning_rate, solver.iterations, solver.warmup
        )
        optimizer = (
            keras.optimizers.Adam(schedule)
            if solver.optimizer == "adam"
            else keras.optimizers.SGD(schedule)
        )
        candidate.compile(optimizer=optimizer, steps_per_execution=_chunk(solver))
        cache[key] = candidate, schedule
    candidate.objective.set_prior_weights(settings.priors)
    candidate.set_registration(group.registration, group.max_shift)
    candidate.set_starts(trials.init, trials.seed)
    candidate.set_group_schedule(group.every, group.warmup)
    schedule.assign(solver.learning_rate, solver.iterations, solver.warmup)
    return candidate


def _lbfgs_trials(
    attack, objective, batch_size, optimise_labels, observed, labels, bn, starts, seed_period,
    strategy=None,
):  # fmt: skip
    solver_settings, trials = attack.solver, attack.trials
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    solver = BatchedLBFGS.for_objective(
        objective, batch_size, optimise_labels, starts // replicas, trials.init,
        solver_settings.history_size, solver_settings.jit_compile, solver_settings.line_search,
    )  # fmt: skip
    if replicas > 1:
        solver = ReplicatedLBFGS(solver, strategy)
    arguments = (list(observed), labels, tuple(bn))
    iterations, every = solver_settings.iterations, solver_settings.snapshot_every

    def run_trial(trial_index, monitor):
        starts = solver.random_starts(trials.seed, trial_index, period=seed_period)
        results = solver.initialize(starts, *arguments)
        done = 0
        while done < iterations:
            target = tf.constant(min(done + every, iterations), tf.int32)
            results = solver.resume(results, target, *arguments)
            done = int(results.num_iterations)
            values = results.objective_value.numpy()
            distances = (
                solver.distances(results.position, *arguments).numpy()
                if objective.priors
                else values
            )
            data = solver.unpack(results.position)[0]
            stop = monitor.update(
                done, values, distances, lambda s, data=data: np.clip(data[s].numpy(), 0.0, 1.0)
            )
            if stop:
                break
            if bool(tf.reduce_all(results.converged | results.failed)):
                monitor.end_line_search(done, distances)
                break
        # `values` and `distances` are those of the last chunk: the loop runs
        # at least once and `results` has not moved since.
        data, logits = solver.unpack(results.position)
        return TrialRows(
            distances=np.where(np.isfinite(distances) & np.isfinite(values), distances, np.inf),
            data=data.numpy(),
            label_logits=None if logits is None else logits.numpy(),
            evaluations=int(results.num_objective_evaluations),
        )

    return run_trial


class _Watcher(keras.callbacks.Callback):
    """Hands the `Candidate`'s per-start values to the trial's monitor after every chunk."""

    def __init__(self, candidate, monitor, every):
        super().__init__()
        self.candidate, self.monitor, self.every = candidate, monitor, every
        self.steps = 0

    def on_epoch_end(self, epoch, logs=None):
        self.steps = (epoch + 1) * self.every
        data = self.candidate.dummy_data
        stop = self.monitor.update(
            self.steps,
            self.candidate.values.numpy(),
            self.candidate.distances.numpy(),
            lambda s, data=data: np.clip(data[s].numpy(), 0.0, 1.0),
        )
        if stop:
            self.model.stop_training = True
