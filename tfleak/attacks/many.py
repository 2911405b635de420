"""Many independent attacks on one victim, run as one graph (and across replicas).

An audit or a study attacks many observations of one victim: one shared
update per client batch. `attack_many` stacks them along a leading axis of
attacks: attack `a`'s `starts_per_round` starts are rows `[a G, (a + 1) G)`
of one dummy tensor, each row matching its own attack's observation
(`GradientMatching(stacked=True)`), so one traced graph evaluates every
attack per step, and the solver's per-step overhead is paid once for all of
them. Each attack keeps its own stop rule, restarts and best start; the
results are those `attack(...)` would give one at a time, up to float
rounding: every attack's starts are drawn from the seeds it would use alone,
and its rows compute what it would alone (only Langevin noise is drawn
for all rows at once, so it differs).

With a `tf.distribute.Strategy` of several replicas, the rows are split
evenly across the replicas (`ReplicatedLBFGS`): each replica optimises its
own attacks' dummy data, held in tensors and never in a mirrored variable, so
no gradient is all-reduced across independent attacks.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfleak import metrics as metrics_lib
from tfleak.attacks.result import AttackResult
from tfleak.attacks.trials import RoundMonitor, RoundOutcome

__all__ = ["attack_many"]


class _ManyMonitor:
    """One `RoundMonitor` per attack over its rows, and one progress bar for all.

    An attack whose monitor ends its round (converged, diverged, stalled)
    stops being watched; its rows keep stepping with the others (the graph
    is shared) and its result is its best start at the round's end. The
    round ends when every attack's has.
    """

    def __init__(self, rule, zero_distances, starts, iterations, round_index, verbose):
        self.monitors = [
            RoundMonitor(rule, zero, iterations, round_index, 0, None) for zero in zero_distances
        ]
        self.starts, self.iterations, self._budget = starts, 0, iterations
        self.active = [True] * len(zero_distances)
        self.ending = f"stopped after {iterations} iterations"
        self.history: list = []
        self._progress = (
            keras.utils.Progbar(iterations, stateful_metrics=["attacks_ended", "median_relative"])
            if verbose
            else None
        )

    def rows(self, attack: int) -> slice:
        return slice(attack * self.starts, (attack + 1) * self.starts)

    def update(self, iteration, objectives, distances, images) -> bool:
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
            self.ending = f"every attack's round ended by iteration {iteration}"
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
        if self._progress is not None and self.iterations < self._budget:
            self._progress.update(self._budget, finalize=True)


def attack_many(
    attack,
    victim,
    observed_gradients: Sequence[Sequence],
    batch_size: Optional[int] = None,
    labels: Optional[Sequence[Sequence[int]]] = None,
    ground_truths: Optional[Sequence[tuple]] = None,
    strategy: Optional[tf.distribute.Strategy] = None,
    verbose: int = 1,
) -> list[AttackResult]:
    """Runs `attack` on every observation at once; `attack(victim, g)` for each `g`, batched.

    Args:
      attack: a `GradientInversion` (DLG, IDLG, InvertingGradients, ...).
      victim: the `tfleak.models.Victim` (or Keras model) all observations
        came from, with the same weights.
      observed_gradients: A >= 1 shared updates, each a list of float32
        tensors matching `victim.trainable_variables`, all of one batch size.
      batch_size: examples behind each update (default: from `labels`, else
        `ground_truths`, else 1).
      labels: per attack, `[batch]` int true labels (`label_strategy='known'`).
      ground_truths: per attack, `(images [batch, h, w, c], labels [batch])`
        to fill each result's `metrics`; never used by the attack.
      strategy: a `tf.distribute.Strategy` (`tfleak.distribute.get_strategy`);
        with several replicas the attacks are split across them (L-BFGS only).
        The attack list is padded to a multiple of the replica count with
        copies of the last attack, whose results are dropped.
      verbose: 0 silent, 1 one progress bar per round for all attacks.

    Returns:
      A list of A `AttackResult`s, in the order of `observed_gradients`.
      `seconds` is the whole run's time divided by A (the attacks ran
      together).

    Raises:
      ValueError: no observations; one that does not fit the victim or is all
        zeros or not finite; labels or ground truths of another count; the
        'group' prior (its consensus would mix attacks); `bn_target='shared'`;
        a multi-replica strategy with a first-order optimizer (its dummy data
        is a Keras variable, which a strategy would mirror and all-reduce).
    """
    from tfleak.attacks.base import _check_observation
    from tfleak.models import as_victim

    start_time = time.perf_counter()
    victim = as_victim(victim)
    count = len(observed_gradients)
    if count == 0:
        raise ValueError("observed_gradients is empty; pass at least one shared update.")
    for name, given in (("labels", labels), ("ground_truths", ground_truths)):
        if given is not None and len(given) != count:
            raise ValueError(f"{len(given)} {name} for {count} observed gradients; pass one each.")
    if "group" in attack.priors:
        raise ValueError(
            "the 'group' prior averages the starts of one attack; attack_many would mix "
            "independent attacks. Run group-consistent attacks one at a time."
        )
    if "bn" in attack.priors and attack.bn_target == "shared":
        raise ValueError(
            "bn_target='shared' needs each client's batch statistics; attack_many takes none. "
            "Use bn_target='moving' or run the attacks one at a time."
        )
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    if replicas > 1 and attack.optimizer != "lbfgs":
        raise ValueError(
            f"optimizer={attack.optimizer!r} keeps the dummy data in a Keras variable, which "
            f"a strategy of {replicas} replicas would mirror and all-reduce across independent "
            "attacks; use optimizer='lbfgs' (its state is tensors) or no strategy."
        )
    observations = []
    for gradient in observed_gradients:
        observed = victim.check_gradient(gradient)
        _check_observation(observed)
        observations.append(observed)
    batch_size = attack._batch_size(
        batch_size,
        None if labels is None else labels[0],
        None if ground_truths is None else ground_truths[0],
    )
    if ground_truths is not None:
        ground_truths = [
            metrics_lib.check_ground_truth(truth, victim, batch_size) for truth in ground_truths
        ]
    fixed = [
        attack._labels(
            victim,
            attack.update.gradient_estimate(observed, batch_size),
            batch_size,
            None if labels is None else labels[a],
        )
        for a, observed in enumerate(observations)
    ]
    optimise_labels = fixed[0] is None
    padded = count + (-count) % replicas
    order = list(range(count)) + [count - 1] * (padded - count)
    starts = attack.starts_per_round
    stacked = [
        tf.repeat(tf.stack([observations[a][k] for a in order]), starts, axis=0)
        for k in range(len(observations[0]))
    ]
    classes = victim.num_classes
    if optimise_labels:
        probabilities = tf.zeros((padded * starts, batch_size, classes))
    else:
        one_hot = tf.one_hot(np.stack([fixed[a] for a in order]), classes)
        probabilities = tf.repeat(one_hot, starts, axis=0)
    bn_targets = attack._bn_targets(victim, None)
    objective = attack._objective(victim, stacked=True)
    zeros = [tf.zeros_like(g) for g in observations[0]]
    zero_distances = [float(objective._distance(zeros, observed)) for observed in observations]
    zero_distances += [zero_distances[-1]] * (padded - count)
    rule = attack._stop_rule()
    together = dataclasses.replace(attack, starts_per_round=padded * starts)
    arguments = (objective, batch_size, optimise_labels, stacked, probabilities, bn_targets)
    if attack.optimizer == "lbfgs":
        run_round = together._lbfgs_rounds(*arguments, seed_period=starts, strategy=strategy)
    else:
        run_round = together._first_order_rounds(*arguments, seed_period=starts)

    best: list[Optional[RoundOutcome]] = [None] * padded
    iterations, evaluations, rounds, message = [0] * padded, [0] * padded, 0, ""
    pending = list(range(padded))
    for round_index in range(attack.restarts + 1):
        rounds = round_index + 1
        if verbose:
            print(f"{type(attack).__name__} x {count} round {rounds}/{attack.restarts + 1}")
        monitor = _ManyMonitor(
            rule, zero_distances, starts, attack.iterations, round_index, verbose
        )
        # Attacks already in a solution's basin are not watched again.
        monitor.active = [a in pending for a in range(padded)]
        outcome_rows = run_round(round_index, monitor)
        monitor.close()
        message = f"round {rounds}: {monitor.ending}"
        if verbose:
            print(message)
        for a in list(pending):
            outcome = outcome_rows.best(monitor.monitors[a], monitor.rows(a))
            iterations[a] += outcome.iterations
            evaluations[a] += outcome.evaluations
            if np.isfinite(outcome.distance) and (
                best[a] is None or outcome.distance < best[a].distance
            ):
                best[a] = outcome
            relative = np.inf if best[a] is None else best[a].distance / zero_distances[a]
            if relative < attack.stall_floor or (
                not attack.stop_at_tolerance and relative < attack.tolerance
            ):
                pending.remove(a)
        if not pending:
            break
    seconds = (time.perf_counter() - start_time) / count
    return [
        attack._result(
            victim,
            best[a],
            fixed[a],
            zero_distances[a],
            iterations[a],
            rounds,
            f"round {rounds}: {best[a].ending}" if best[a] is not None else message,
            seconds,
            None if ground_truths is None else ground_truths[a],
            evaluations[a],
        )
        for a in range(count)
    ]
