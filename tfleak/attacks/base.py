"""The optimisation-based gradient inversion attack that DLG, iDLG and IG configure.

An attacker who received a client's gradient `g` of a private batch optimises
dummy data `x'` (and, unless known or restored, dummy labels `y'`) until the
victim's gradient on them matches:

    x'* = argmin_{x'} D(dL(F(x', W), y') / dW, g) + sum_k a_k R_k(x')

with a gradient distance `D` (`tfleak.attacks.objectives`) and image priors
`R_k` (`tfleak.attacks.priors`). `GradientInversion` holds every hyperparameter of
that loop; its subclasses are the published attacks as sets of defaults:
`DLG` (Zhu et al. 2019), `IDLG` (Zhao et al. 2020), `InvertingGradients`
(Geiping et al. 2020). Solvers: L-BFGS (`tfp.optimizer.lbfgs_minimize`, one
traced graph per victim) or first-order steps (`Candidate.fit`: Adam or SGD
with Keras schedules, signed gradients, Langevin noise, projection to [0, 1]).
Rounds, restarts and the choice of the best start are in `trials`.
"""

from __future__ import annotations

import dataclasses
import math
import time
import weakref
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfleak import metrics as metrics_lib
from tfleak.attacks.candidate import DUMMY_INITS, SCHEDULES, Candidate, make_schedule
from tfleak.attacks.labels import LABEL_STRATEGIES
from tfleak.attacks.lbfgs import BatchedLBFGS, ReplicatedLBFGS
from tfleak.attacks.objectives import GRADIENT_DISTANCES, GradientMatching
from tfleak.attacks.priors import PRIORS
from tfleak.attacks.registration import REGISTRATIONS
from tfleak.attacks.result import AttackResult, batch_size_of
from tfleak.attacks.trials import AttacksMonitor, RoundOutcome, RoundRows, StopRule
from tfleak.threats.federated import FedSGD

__all__ = ["GradientInversion", "OPTIMIZERS", "BN_TARGETS"]

OPTIMIZERS = ("lbfgs", "adam", "sgd")
BN_TARGETS = ("moving", "shared")

_CANDIDATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class GradientInversion:
    """Gradient matching with priors; its `repr` lists every hyperparameter.

    Attributes:
      optimizer: 'lbfgs', 'adam' or 'sgd'.
      iterations: most optimiser iterations per round (L-BFGS iterations, each
        one or more evaluations in its line search; or first-order steps).
      restarts: further rounds from new random starts after a round that did
        not reach the solution's basin (0 = a single round).
      starts_per_round: independent random starts optimised together in one
        graph; the best by gradient distance wins.
      vectorize: evaluate the starts with `tf.vectorized_map` instead of side
        by side (see `GradientMatching`).
      learning_rate: first-order peak step size, in [0, 1] pixel units.
      schedule: 'constant', 'step' (x0.1 at 3/8, 5/8, 7/8) or 'cosine'.
      warmup: linear warm-up steps of the cosine schedule.
      signed: step on the gradient's sign (Inverting Gradients).
      boxed: project onto the image box [0, 1] after every first-order step.
      langevin: Langevin noise scale alpha_n (GradInversion; 0 = none).
      history_size: correction pairs L-BFGS keeps (PyTorch's default, 100).
      jit_compile: compile the L-BFGS solver with XLA.
      distance: gradient distance, a key of `GRADIENT_DISTANCES`.
      update: what the client shared and the attacker simulates on its dummy
        data: `tfleak.threats.federated.FedSGD()` (one gradient), `FedAvg(...)` (local
        SGD steps, unrolled), or a `tfleak.threats.defenses.DefendedUpdate` (an update
        through defences; adaptive or naive attacker).
      priors: prior name -> weight (a key of `tfleak.attacks.priors.PRIORS`).
      bn_target: what the 'bn' prior matches: 'moving' (the victim's moving
        statistics, known to the server) or 'shared' (batch statistics the
        client shared; pass `batch_statistics=` to the call).
      bn_first_layer_scale: extra weight of the first batch-norm layer's term.
      init: dummy data initialisation, a key of `DUMMY_INITS`.
      label_strategy: 'optimize' (labels optimised with the data, DLG),
        'known' (pass `labels=`), or a restoration method of
        `tfleak.attacks.labels.LABEL_STRATEGIES` (e.g. 'idlg').
      tolerance: success when the gradient distance is below `tolerance` times
        the distance of a zero guess (dimensionless).
      stop_at_tolerance: end a round as soon as it succeeds (DLG); False runs
        every round's whole schedule (Inverting Gradients, GradInversion).
      stall_ratio: a round is abandoned when its best objective shrank by less
        than this factor over `stall_window` iterations (None: never).
      stall_window: iterations over which progress is measured.
      stall_floor: a round below this relative distance is in the basin of a
        solution: it runs on, and no further round follows it.
      group_every: with the 'group' prior (GradInversion's group consistency;
        the round's starts are the group's seeds), steps between refreshes of
        the consensus.
      group_warmup: steps before the first consensus.
      registration: how seeds are aligned before averaging: 'translation'
        (cross-correlation) or 'none' (the plain mean); see
        `tfleak.attacks.registration`.
      max_shift: largest registration offset in pixels (None: a quarter of
        the image height).
      snapshot_every: iterations between progress snapshots (and the chunk
        of iterations run in one graph call).
      seed: seed of the first start; start `i` of round `r` uses
        `seed + r * starts_per_round + i`.
    """

    optimizer: str = "adam"
    iterations: int = 1000
    restarts: int = 0
    starts_per_round: int = 1
    vectorize: bool = False
    learning_rate: float = 0.1
    schedule: str = "constant"
    warmup: int = 0
    signed: bool = False
    boxed: bool = True
    langevin: float = 0.0
    history_size: int = 100
    jit_compile: bool = False
    distance: str = "l2"
    update: object = dataclasses.field(default_factory=FedSGD)
    priors: dict = dataclasses.field(default_factory=dict)
    bn_target: str = "moving"
    bn_first_layer_scale: float = 1.0
    init: str = "uniform"
    label_strategy: str = "optimize"
    tolerance: float = 1e-8
    stop_at_tolerance: bool = True
    stall_ratio: Optional[float] = None
    stall_window: int = 300
    stall_floor: float = 1e-5
    group_every: int = 100
    group_warmup: int = 100
    registration: str = "translation"
    max_shift: Optional[int] = None
    snapshot_every: int = 10
    seed: int = 0

    def __post_init__(self):
        self.priors = dict(self.priors)
        choices = {
            "optimizer": OPTIMIZERS,
            "distance": tuple(GRADIENT_DISTANCES),
            "init": tuple(DUMMY_INITS),
            "label_strategy": ("optimize", "known", *LABEL_STRATEGIES),
            "schedule": SCHEDULES,
            "bn_target": BN_TARGETS,
            "registration": REGISTRATIONS,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(valid)}."
                )
        for name in (
            "iterations",
            "starts_per_round",
            "snapshot_every",
            "stall_window",
            "group_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}.")
        for name in ("restarts", "warmup", "group_warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}.")
        for name in (
            "learning_rate",
            "langevin",
            "tolerance",
            "stall_floor",
            "bn_first_layer_scale",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value}.")
        if self.optimizer != "lbfgs" and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")
        if self.stall_ratio is not None and not 0 < self.stall_ratio <= 1:
            raise ValueError(f"stall_ratio must be in (0, 1] or None; got {self.stall_ratio}.")
        if not all(hasattr(self.update, m) for m in ("simulate", "gradient_estimate")):
            raise ValueError(
                f"update must be a tfleak.threats.federated.FedSGD, FedAvg or a "
                f"tfleak.threats.defenses.DefendedUpdate; got {self.update!r}."
            )
        for name, weight in self.priors.items():
            if name not in PRIORS:
                raise ValueError(
                    f"unknown prior {name!r}; choose one of {', '.join(sorted(PRIORS))}."
                )
            if not (math.isfinite(float(weight)) and float(weight) >= 0):
                raise ValueError(f"prior {name!r} needs a finite weight >= 0; got {weight}.")
        if self.priors.get("group", 0) > 0:
            if self.optimizer == "lbfgs":
                raise ValueError(
                    "the 'group' prior (group consistency) needs a first-order optimizer: its "
                    "consensus is refreshed between steps. Use optimizer='adam' or 'sgd'."
                )
            if self.starts_per_round < 2:
                raise ValueError(
                    "the 'group' prior (group consistency) needs a group of seeds: set "
                    f"starts_per_round to 2 or more (GradInversion uses 8); got "
                    f"{self.starts_per_round}."
                )
        if self.max_shift is not None and self.max_shift < 0:
            raise ValueError(f"max_shift must be >= 0 or None; got {self.max_shift}.")

    # -- the attack -----------------------------------------------------------

    def __call__(
        self,
        victim,
        observed_gradient: Sequence,
        batch_size: Optional[int] = None,
        labels: Optional[Sequence[int]] = None,
        batch_statistics: Optional[Sequence] = None,
        ground_truth: Optional[tuple] = None,
        verbose: int = 1,
        on_snapshot: Optional[Callable] = None,
    ) -> AttackResult:
        """Reconstructs the batch behind `observed_gradient`.

        Args:
          victim: the `tfleak.models.Victim` that produced the gradient, with
            the same weights (a Keras model is wrapped by `as_victim`).
          observed_gradient: the shared gradient, a list of float32 tensors
            matching `victim.trainable_variables` (as `victim.gradient` gives).
          batch_size: examples in the shared batch (default: the length of
            `labels`, else of the ground truth, else 1).
          labels: `[batch]` int, the true labels, for `label_strategy='known'`.
          batch_statistics: per batch-norm layer `(mean, variance)` the client
            shared, for `bn_target='shared'` (`victim.batch_statistics(x)`).
          ground_truth: optional `(images [batch, h, w, c] in [0, 1], labels
            [batch] int)` to fill `result.metrics`; never used by the attack.
          verbose: 0 silent, 1 a progress bar per round.
          on_snapshot: called as `on_snapshot(round, snapshot)` at every
            snapshot (e.g. to time when a PSNR is reached).

        Returns:
          An `AttackResult`; `success` is judged without the ground truth.

        Raises:
          ValueError: the gradient does not match the victim or is all zeros or
            not finite; labels, batch size, statistics or ground truth that do
            not fit the attack or the victim.
        """
        return self._run(
            victim,
            [observed_gradient],
            batch_size,
            None if labels is None else [labels],
            None if ground_truth is None else [ground_truth],
            batch_statistics=batch_statistics,
            verbose=verbose,
            on_snapshot=on_snapshot,
        )[0]

    def attack_many(
        self,
        victim,
        observed_gradients: Sequence[Sequence],
        batch_size: Optional[int] = None,
        labels: Optional[Sequence[Sequence[int]]] = None,
        ground_truths: Optional[Sequence[tuple]] = None,
        strategy: Optional[tf.distribute.Strategy] = None,
        verbose: int = 1,
    ) -> list[AttackResult]:
        """Runs this attack on every observation at once: `self(victim, g)` for each `g`, batched.

        Attack `a`'s `starts_per_round` starts are rows `[a G, (a + 1) G)` of one
        dummy tensor, each row matching its own attack's observation
        (`GradientMatching(stacked=True)`), so one traced graph evaluates every
        attack per step and the solver's per-step overhead is paid once for all
        of them. Each attack keeps its own stop rule, restarts and best start;
        its starts are drawn from the seeds it would use alone, so the results
        are those of one attack at a time, up to float rounding (Langevin noise
        is drawn for all rows at once, so it differs). With a
        `tf.distribute.Strategy` of several replicas the rows are split evenly
        across the replicas (`ReplicatedLBFGS`, L-BFGS only): each replica
        optimises its own attacks' dummy data, held in tensors and never in a
        mirrored variable, so nothing is all-reduced across independent attacks.

        Args:
          victim: the `tfleak.models.Victim` (or Keras model) all observations
            came from, with the same weights.
          observed_gradients: A >= 1 shared updates, each a list of float32
            tensors matching `victim.trainable_variables`, all of one batch size.
          batch_size: examples behind each update (default: from `labels`, else
            `ground_truths`, else 1).
          labels: per attack, `[batch]` int true labels (`label_strategy='known'`).
          ground_truths: per attack, `(images [batch, h, w, c], labels [batch])`
            to fill each result's `metrics`; never used by the attack.
          strategy: a `tf.distribute.Strategy` (`tfleak.distribute.get_strategy`).
            The attack list is padded to a multiple of the replica count with
            copies of the last attack, whose results are dropped.
          verbose: 0 silent, 1 one progress bar per round for all attacks.

        Returns:
          A list of A `AttackResult`s, in the order of `observed_gradients`;
          `seconds` is the whole run's time divided by A.

        Raises:
          ValueError: no observations; one that does not fit the victim or is all
            zeros or not finite; labels or ground truths of another count; the
            'group' prior (its consensus would mix attacks); `bn_target='shared'`;
            a multi-replica strategy with a first-order optimizer (its dummy data
            is a Keras variable, which a strategy would mirror and all-reduce).
        """
        if "group" in self.priors:
            raise ValueError(
                "the 'group' prior averages the starts of one attack; attack_many would mix "
                "independent attacks. Run group-consistent attacks one at a time."
            )
        if "bn" in self.priors and self.bn_target == "shared":
            raise ValueError(
                "bn_target='shared' needs each client's batch statistics; attack_many takes "
                "none. Use bn_target='moving' or run the attacks one at a time."
            )
        return self._run(
            victim, observed_gradients, batch_size, labels, ground_truths, strategy, verbose
        )

    def _run(
        self,
        victim,
        observed_gradients,
        batch_size=None,
        labels=None,
        ground_truths=None,
        strategy=None,
        verbose=1,
        batch_statistics=None,
        on_snapshot=None,
    ) -> list[AttackResult]:
        """The one restart loop, over A >= 1 attacks of one victim (one attack is A = 1)."""
        from tfleak.models import as_victim

        start_time = time.perf_counter()
        victim = as_victim(victim)
        count = len(observed_gradients)
        if count == 0:
            raise ValueError("observed_gradients is empty; pass at least one shared update.")
        for name, given in (("labels", labels), ("ground_truths", ground_truths)):
            if given is not None and len(given) != count:
                raise ValueError(
                    f"{len(given)} {name} for {count} observed gradients; pass one each."
                )
        replicas = 1 if strategy is None else strategy.num_replicas_in_sync
        if replicas > 1 and self.optimizer != "lbfgs":
            raise ValueError(
                f"optimizer={self.optimizer!r} keeps the dummy data in a Keras variable, which "
                f"a strategy of {replicas} replicas would mirror and all-reduce across "
                "independent attacks; use optimizer='lbfgs' (its state is tensors) or no strategy."
            )
        observations = []
        for gradient in observed_gradients:
            observed = victim.check_gradient(gradient)
            _check_observation(observed)
            observations.append(observed)
        batch_size = batch_size_of(
            batch_size,
            None if labels is None else labels[0],
            None if ground_truths is None else ground_truths[0],
        )
        if ground_truths is not None:
            ground_truths = [
                metrics_lib.check_ground_truth(truth, victim, batch_size) for truth in ground_truths
            ]
        # Label restoration reads a gradient: under FedAvg, the mean local one.
        fixed = [
            self._labels(
                victim,
                self.update.gradient_estimate(observed, batch_size),
                batch_size,
                None if labels is None else labels[a],
            )
            for a, observed in enumerate(observations)
        ]
        optimise_labels = fixed[0] is None
        padded = count + (-count) % replicas
        order = list(range(count)) + [count - 1] * (padded - count)
        starts = self.starts_per_round
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
        bn_targets = self._bn_targets(victim, batch_statistics)
        objective = self._objective(victim)
        zeros = [tf.zeros_like(g) for g in observations[0]]
        zero_distances = [float(objective.distance(zeros, o)) for o in observations]
        zero_distances += [zero_distances[-1]] * (padded - count)
        rule = self._stop_rule()
        together = dataclasses.replace(self, starts_per_round=padded * starts)
        arguments = (objective, batch_size, optimise_labels, stacked, probabilities, bn_targets)
        if self.optimizer == "lbfgs":
            run_round = together._lbfgs_rounds(*arguments, seed_period=starts, strategy=strategy)
        else:
            run_round = together._first_order_rounds(*arguments, seed_period=starts)

        name = type(self).__name__ + ("" if count == 1 else f" x {count}")
        best: list[Optional[RoundOutcome]] = [None] * padded
        endings = [""] * padded
        iterations, evaluations, rounds = [0] * padded, [0] * padded, 0
        pending = list(range(padded))
        for round_index in range(self.restarts + 1):
            rounds = round_index + 1
            if verbose:
                print(f"{name} round {rounds}/{self.restarts + 1}")
            monitor = AttacksMonitor(
                rule, zero_distances, starts, self.iterations, round_index, verbose, on_snapshot
            )
            # Attacks already in a solution's basin are not watched again.
            monitor.active = [a in pending for a in range(padded)]
            rows = run_round(round_index, monitor)
            monitor.close()
            for a in list(pending):
                outcome = rows.best(monitor.monitors[a], monitor.rows(a))
                iterations[a] += outcome.iterations
                evaluations[a] += outcome.evaluations
                endings[a] = f"round {rounds}: {outcome.ending}"
                if np.isfinite(outcome.distance) and (
                    best[a] is None or outcome.distance < best[a].distance
                ):
                    best[a] = outcome
                # A round that got below the stall floor found the solution's basin
                # (it converged, or hit float32 precision or the iteration limit
                # there): a fresh random start would only start over.
                relative = np.inf if best[a] is None else best[a].distance / zero_distances[a]
                if relative < self.stall_floor or (
                    not self.stop_at_tolerance and relative < self.tolerance
                ):
                    pending.remove(a)
            if verbose:
                print(endings[0] if count == 1 else f"round {rounds}: {monitor.ending}")
            if not pending:
                break
        seconds = (time.perf_counter() - start_time) / count
        return [
            self._result(
                victim,
                best[a],
                fixed[a],
                zero_distances[a],
                iterations[a],
                rounds,
                endings[a],
                seconds,
                None if ground_truths is None else ground_truths[a],
                evaluations[a],
            )
            for a in range(count)
        ]

    # -- inputs ---------------------------------------------------------------

    def _objective(self, victim) -> GradientMatching:
        """The `GradientMatching` this attack minimises: each start matches its own
        attack's observation (a leading axis of starts over the stacked observations)."""
        return GradientMatching(
            victim,
            self.distance,
            self.priors,
            self.bn_first_layer_scale,
            self.vectorize,
            update=self.update,
            stacked=True,
        )

    def _stop_rule(self) -> StopRule:
        """When a round ends early, from the attack's tolerance and stall settings."""
        return StopRule(
            self.tolerance if self.stop_at_tolerance else 0.0,
            self.stall_ratio,
            self.stall_window,
            self.stall_floor,
        )

    def _labels(self, victim, observed, batch_size, labels) -> Optional[np.ndarray]:
        strategy = self.label_strategy
        if strategy == "optimize":
            return None
        if strategy == "known":
            if labels is None:
                raise ValueError(
                    "label_strategy='known' needs the true labels: pass labels=[...] (the "
                    "attacker knows them), or use label_strategy='optimize' or a restoration "
                    f"method ({', '.join(LABEL_STRATEGIES)})."
                )
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            if labels.size != batch_size:
                raise ValueError(f"{labels.size} labels for a batch of {batch_size}.")
            victim.labels_to_probabilities(tf.constant(labels))  # range check
            return labels
        return np.asarray(LABEL_STRATEGIES[strategy](victim, observed, batch_size), np.int64)

    def _bn_targets(self, victim, batch_statistics) -> tuple:
        if "bn" not in self.priors or not victim.batch_norm_layers:
            return ()
        if self.bn_target == "moving":
            return tuple((tf.identity(m), tf.identity(v)) for m, v in victim.moving_statistics())
        if batch_statistics is None:
            raise ValueError(
                "bn_target='shared' matches the batch statistics the client shared: pass "
                "batch_statistics=victim.batch_statistics(x), or use bn_target='moving'."
            )
        if len(batch_statistics) != len(victim.batch_norm_layers):
            raise ValueError(
                f"{len(batch_statistics)} batch statistics for "
                f"{len(victim.batch_norm_layers)} batch-norm layers."
            )
        return tuple(
            (tf.constant(m, tf.float32), tf.constant(v, tf.float32)) for m, v in batch_statistics
        )

    # -- solvers --------------------------------------------------------------

    def _first_order_rounds(
        self, objective, batch_size, optimise_labels, observed, labels, bn, seed_period=None
    ):
        candidate = self._candidate(objective, batch_size, optimise_labels, seed_period)
        dataset = Candidate.observations(observed, labels, bn)
        every = self._chunk()
        chunks = self.iterations // every

        def run_round(round_index, monitor):
            candidate.reset(round_index)
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
            return RoundRows(
                distances=np.where(np.isfinite(values), distances, np.inf),
                data=candidate.dummy_data.numpy(),
                label_logits=candidate.dummy_label_logits.numpy() if optimise_labels else None,
                consensus=candidate.current_consensus().numpy() if candidate.group else None,
            )

        return run_round

    def _chunk(self) -> int:
        """First-order steps per graph call: the largest divisor of `iterations`
        up to `snapshot_every`, so a round runs exactly `iterations` steps."""
        most = min(self.snapshot_every, self.iterations)
        return max(d for d in range(1, most + 1) if self.iterations % d == 0)

    def _candidate(self, objective, batch_size, optimise_labels, seed_period=None) -> Candidate:
        """One compiled `Candidate` per victim and configuration (traced graphs reused)."""
        # Prior weights and the registration are variables of the compiled
        # candidate: attacks that differ only in them share one traced graph.
        key = (
            repr(
                dataclasses.replace(
                    self,
                    restarts=0,
                    tolerance=0.0,
                    priors=dict.fromkeys(sorted(self.priors), 0.0),
                    registration="translation",
                    max_shift=None,
                )
            ),
            batch_size,
            optimise_labels,
            objective.stacked,
            seed_period,
        )
        cache = _CANDIDATES.setdefault(objective.victim, {})
        if key in cache:
            cache[key].objective.set_prior_weights(self.priors)
            cache[key].set_registration(self.registration, self.max_shift)
        if key not in cache:
            candidate = Candidate(
                objective,
                self.starts_per_round,
                batch_size,
                optimise_labels,
                signed=self.signed,
                boxed=self.boxed,
                langevin=self.langevin,
                init=self.init,
                seed=self.seed,
                group_every=self.group_every,
                group_warmup=self.group_warmup,
                registration=self.registration,
                max_shift=self.max_shift,
                seed_period=seed_period,
            )
            rate = make_schedule(self.schedule, self.learning_rate, self.iterations, self.warmup)
            optimizer = (
                keras.optimizers.Adam(rate)
                if self.optimizer == "adam"
                else keras.optimizers.SGD(rate)
            )
            candidate.compile(optimizer=optimizer, steps_per_execution=self._chunk())
            cache[key] = candidate
        return cache[key]

    def _lbfgs_rounds(
        self, objective, batch_size, optimise_labels, observed, labels, bn, seed_period=None,
        strategy=None,
    ):  # fmt: skip
        replicas = 1 if strategy is None else strategy.num_replicas_in_sync
        solver = BatchedLBFGS.for_objective(
            objective, batch_size, optimise_labels, self.starts_per_round // replicas, self.init,
            self.history_size, self.jit_compile,
        )  # fmt: skip
        if replicas > 1:
            solver = ReplicatedLBFGS(solver, strategy)
        arguments = (list(observed), labels, tuple(bn))

        def run_round(round_index, monitor):
            starts = solver.random_starts(self.seed, round_index, period=seed_period)
            results = solver.initialize(starts, *arguments)
            done = 0
            while done < self.iterations:
                target = tf.constant(min(done + self.snapshot_every, self.iterations), tf.int32)
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
            # `values` and `distances` are those of the last chunk: the loop
            # runs at least once and `results` has not moved since.
            data, logits = solver.unpack(results.position)
            return RoundRows(
                distances=np.where(np.isfinite(distances) & np.isfinite(values), distances, np.inf),
                data=data.numpy(),
                label_logits=None if logits is None else logits.numpy(),
                evaluations=int(results.num_objective_evaluations),
            )

        return run_round

    # -- the result -----------------------------------------------------------

    def _result(
        self, victim, best, fixed_labels, zero_distance, iterations, rounds, message, seconds,
        ground_truth, evaluations=0,
    ) -> AttackResult:  # fmt: skip
        failed = AttackResult(
            reconstruction=None,
            labels=None,
            success=False,
            gradient_distance=float("inf"),
            relative_distance=float("inf"),
            iterations=iterations,
            restarts_used=rounds - 1,
            seconds=seconds,
            evaluations=evaluations,
            attack=self,
            message=f"failed: every start diverged ({message})",
        )
        if best is None or not np.all(np.isfinite(best.data)):
            return failed
        if fixed_labels is not None:
            predicted = np.asarray(fixed_labels, np.int64)
        else:
            predicted = np.argmax(best.label_logits, axis=-1).astype(np.int64)
        relative = best.distance / zero_distance
        success = bool(relative < self.tolerance)
        result = AttackResult(
            reconstruction=np.clip(best.data, 0.0, 1.0).astype(np.float32),
            labels=predicted,
            success=success,
            gradient_distance=float(best.distance),
            relative_distance=float(relative),
            iterations=iterations,
            restarts_used=rounds - 1,
            seconds=seconds,
            evaluations=evaluations,
            history=best.history,
            attack=self,
            message=("converged, " if success else "failed: did not converge, ") + message,
            consensus=None
            if best.consensus is None
            else np.clip(best.consensus, 0.0, 1.0).astype(np.float32),
        )
        if ground_truth is not None:
            images, true_labels = ground_truth
            result.metrics = metrics_lib.evaluate(
                images, result.reconstruction, true_labels, result.labels
            )
            if result.consensus is not None:
                result.consensus_metrics = metrics_lib.evaluate(
                    images, result.consensus, true_labels, result.labels
                )
        return result


class _Watcher(keras.callbacks.Callback):
    """Hands the `Candidate`'s per-start values to the round's monitor after every chunk."""

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


def _check_observation(observed: Sequence[tf.Tensor]) -> None:
    """Raises ValueError for a shared gradient that is not finite or is all zeros."""
    finite = all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in observed)
    if not finite:
        raise ValueError(
            "the shared gradient holds NaN or inf values; there is nothing to invert. Check the "
            "client's loss (and the defence applied to the update)."
        )
    if all(not bool(tf.reduce_any(g != 0)) for g in observed):
        raise ValueError(
            "the shared gradient is all zeros (a saturated or untrained loss, or a defence that "
            "removed it); an all-zero gradient carries no information about the batch."
        )
