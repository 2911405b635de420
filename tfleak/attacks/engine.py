"""The one engine every optimisation attack runs on: DLG, iDLG, Inverting Gradients, GradInversion.

An attacker who received a client's update `g` of a private batch optimises
dummy data `x'` (and, unless known or restored, dummy labels `y'`) until the
victim's update on them matches:

    x'* = argmin_{x'} D(update(x', y'), g) + sum_k a_k R_k(x')

`GradientInversion` is that loop over four groups of settings
(`tfleak.attacks.settings`): the `Objective` (distance `D`, priors `R_k`), the
solver (`LBFGS` or `FirstOrder`), the `Trials` (starts, restarts, stop rule),
plus the label strategy and the threat (`update`, what the client shared). The
published attacks are short recipes over it (`tfleak.attacks.dlg`,
`inverting_gradients`, `gradinversion`). One restart loop serves one attack
and many (`attack_many`): one attack is a batch of one.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfleak.attacks.inputs import batch_norm_targets, check_observation, fixed_labels
from tfleak.attacks.labels import LABEL_STRATEGIES
from tfleak.attacks.result import AttackResult, attack_result, batch_size_of
from tfleak.attacks.settings import (
    LBFGS,
    FirstOrder,
    Objective,
    Trials,
    replace_settings,
)
from tfleak.attacks.solvers import trial_runner
from tfleak.attacks.stacked import ATTACK_LAYOUTS, attacks_objective
from tfleak.attacks.trials import AttacksMonitor, StopRule, TrialOutcome
from tfleak.metrics import check_ground_truth
from tfleak.threats.federated import FedSGD

__all__ = ["GradientInversion"]


@dataclasses.dataclass
class GradientInversion:
    """Gradient matching with priors, over grouped settings; `repr` lists every one.

    Attributes:
      objective: an `Objective`: gradient distance, prior weights, the
        batch-norm prior's target and group consistency's schedule.
      solver: `LBFGS(...)` or `FirstOrder(...)`: iterations, step sizes,
        schedule, signed steps, Langevin noise, the image box.
      trials: a `Trials`: random starts, restarts, seed and the stop rule.
      label_strategy: 'optimize' (labels optimised with the data, DLG),
        'known' (pass `labels=`), or a restoration method of
        `tfleak.attacks.labels.LABEL_STRATEGIES` (e.g. 'idlg', 'counts').
      update: what the client shared and the attacker simulates on its dummy
        data: `tfleak.threats.federated.FedSGD()` (one gradient), `FedAvg(...)`
        (local SGD steps, unrolled), or a `tfleak.threats.defenses.DefendedUpdate`;
        None means `FedSGD()`.

    `attack.replace(iterations=300, restarts=0)` returns a copy with flat
    settings changed in their groups (`tfleak.attacks.settings.FLAT_SETTINGS`).

    Raises:
      ValueError: a setting a group refuses, an unknown label strategy or
        update, or the 'group' prior with L-BFGS or fewer than 2 starts.
    """

    objective: Objective = dataclasses.field(default_factory=Objective)
    solver: Union[LBFGS, FirstOrder] = dataclasses.field(default_factory=FirstOrder)
    trials: Trials = dataclasses.field(default_factory=Trials)
    label_strategy: str = "optimize"
    update: object = dataclasses.field(default_factory=FedSGD)

    def __post_init__(self):
        groups = {"objective": (Objective,), "solver": (LBFGS, FirstOrder), "trials": (Trials,)}
        for name, kinds in groups.items():
            if not isinstance(getattr(self, name), kinds):
                names = " or ".join(kind.__name__ for kind in kinds)
                raise ValueError(
                    f"{name} must be a tfleak.attacks.{names}; got {getattr(self, name)!r}."
                )
        if self.update is None:
            self.update = FedSGD()
        valid = ("optimize", "known", *LABEL_STRATEGIES)
        if self.label_strategy not in valid:
            raise ValueError(
                f"unknown label_strategy {self.label_strategy!r}; choose one of {', '.join(valid)}."
            )
        if not all(hasattr(self.update, m) for m in ("simulate", "gradient_estimate")):
            raise ValueError(
                f"update must be a tfleak.threats.federated.FedSGD, FedAvg or a "
                f"tfleak.threats.defenses.DefendedUpdate; got {self.update!r}."
            )
        if self.objective.priors.get("group", 0) > 0:
            if isinstance(self.solver, LBFGS):
                raise ValueError(
                    "the 'group' prior (group consistency) needs a first-order optimizer: its "
                    "consensus is refreshed between steps. Use optimizer='adam' or 'sgd'."
                )
            if self.trials.starts < 2:
                raise ValueError(
                    "the 'group' prior (group consistency) needs a group of seeds: set "
                    f"starts to 2 or more (GradInversion uses 8); got {self.trials.starts}."
                )

    def replace(self, **settings) -> GradientInversion:
        """A copy with flat settings changed, e.g. `replace(iterations=300, seed=1)`.

        `label_strategy` and `update` are set as they are; every other name is
        routed to its group (`tfleak.attacks.settings.FLAT_SETTINGS`).

        Raises:
          ValueError: an unknown name, or a value its group refuses.
        """
        changed = copy.copy(self)
        changed._apply(settings)
        return changed

    def _apply(self, settings: dict) -> None:
        """Applies flat settings in place (recipes apply their `**settings` so)."""
        settings = dict(settings)
        for name in ("label_strategy", "update"):
            if name in settings:
                setattr(self, name, settings.pop(name))
        self.objective, self.solver, self.trials = replace_settings(
            self.objective, self.solver, self.trials, **settings
        )
        self.__post_init__()

    @property
    def optimizer(self) -> str:
        """The solver's name: 'lbfgs', 'adam' or 'sgd'."""
        return self.solver.optimizer

    @property
    def iterations(self) -> int:
        """The solver's iterations per trial."""
        return self.solver.iterations

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

        Several starts (`starts > 1`) are rows of one objective in the layout
        `attack_many`'s `layout='auto'` picks: each row with its own copy of
        the victim's weights where the victim allows it.

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
          verbose: 0 silent, 1 a progress bar per trial.
          on_snapshot: called as `on_snapshot(trial, snapshot)` at every
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
            layout="auto",
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
        layout: str = "auto",
    ) -> list[AttackResult]:
        """Runs this attack on every observation at once: `self(victim, g)` for each `g`, batched.

        Attack `a`'s `trials.starts` starts are rows `[a G, (a + 1) G)` of one
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

        `layout='grouped'` gives every row its own copy of the victim's weights
        (`tfleak.attacks.stacked`): the rows' weight gradients come out of one
        batched backward pass (grouped convolutions, batched matmuls), so the
        cost per attack falls as attacks are added. `'per_attack'` computes each
        row's gradient on its own (side by side, or `tf.vectorized_map` with
        `vectorize=True`). `'auto'` takes 'grouped' for two rows or more where
        the victim allows it (`tfleak.attacks.stacked.grouped_layout_reason`).

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
          verbose: 0 silent, 1 one progress bar per trial for all attacks.
          layout: 'auto', 'grouped' or 'per_attack' (see above).

        Returns:
          A list of A `AttackResult`s, in the order of `observed_gradients`;
          `seconds` is the whole run's time divided by A.

        Raises:
          ValueError: no observations; one that does not fit the victim or is all
            zeros or not finite; labels or ground truths of another count; the
            'group' prior (its consensus would mix attacks); `bn_target='shared'`;
            a multi-replica strategy with a first-order optimizer (its dummy data
            is a Keras variable, which a strategy would mirror and all-reduce);
            an unknown layout, or 'grouped' for a victim or update it cannot
            evaluate (the message says why).
        """
        if layout not in ATTACK_LAYOUTS:
            raise ValueError(
                f"unknown layout {layout!r}; choose one of {', '.join(ATTACK_LAYOUTS)}."
            )
        if "group" in self.objective.priors:
            raise ValueError(
                "the 'group' prior averages the starts of one attack; attack_many would mix "
                "independent attacks. Run group-consistent attacks one at a time."
            )
        if "bn" in self.objective.priors and self.objective.bn_target == "shared":
            raise ValueError(
                "bn_target='shared' needs each client's batch statistics; attack_many takes "
                "none. Use bn_target='moving' or run the attacks one at a time."
            )
        return self._run(
            victim, observed_gradients, batch_size, labels, ground_truths, strategy, verbose,
            layout=layout,
        )  # fmt: skip

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
        layout="per_attack",
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
            check_observation(observed)
            observations.append(observed)
        batch_size = batch_size_of(
            batch_size,
            None if labels is None else labels[0],
            None if ground_truths is None else ground_truths[0],
        )
        if ground_truths is not None:
            ground_truths = [
                check_ground_truth(truth, victim, batch_size) for truth in ground_truths
            ]
        # Label restoration reads a gradient: under FedAvg, the mean local one.
        fixed = [
            fixed_labels(
                self.label_strategy,
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
        starts = self.trials.starts
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
        objective = attacks_objective(
            layout,
            padded * starts // replicas,
            victim,
            self.objective.distance,
            self.objective.priors,
            self.objective.bn_first_layer_scale,
            self.trials.vectorize,
            update=self.update,
        )
        zeros = [tf.zeros_like(g) for g in observations[0]]
        zero_distances = [float(objective.distance(zeros, o)) for o in observations]
        zero_distances += [zero_distances[-1]] * (padded - count)
        bn_targets = batch_norm_targets(self.objective, victim, batch_statistics)
        run_trial = trial_runner(
            self, objective, batch_size, optimise_labels, stacked, probabilities, bn_targets,
            padded * starts, starts, strategy,
        )  # fmt: skip

        trials = self.trials
        rule = StopRule(
            trials.tolerance if trials.stop_at_tolerance else 0.0,
            trials.stall_ratio,
            trials.stall_window,
            trials.stall_floor,
        )
        name = type(self).__name__ + ("" if count == 1 else f" x {count}")
        best: list[Optional[TrialOutcome]] = [None] * padded
        endings = [""] * padded
        iterations, evaluations, used = [0] * padded, [0] * padded, 0
        pending = list(range(padded))
        for trial in range(trials.restarts + 1):
            used = trial + 1
            if verbose:
                print(f"{name} trial {used}/{trials.restarts + 1}")
            monitor = AttacksMonitor(
                rule, zero_distances, starts, self.iterations, trial, verbose, on_snapshot
            )
            # Attacks already in a solution's basin are not watched again.
            monitor.active = [a in pending for a in range(padded)]
            rows = run_trial(trial, monitor)
            monitor.close()
            for a in list(pending):
                outcome = rows.best(monitor.monitors[a], monitor.rows(a))
                iterations[a] += outcome.iterations
                evaluations[a] += outcome.evaluations
                endings[a] = f"trial {used}: {outcome.ending}"
                if np.isfinite(outcome.distance) and (
                    best[a] is None or outcome.distance < best[a].distance
                ):
                    best[a] = outcome
                # A trial that got below the stall floor found the solution's basin
                # (it converged, or hit float32 precision or the iteration limit
                # there): a fresh random start would only start over.
                relative = np.inf if best[a] is None else best[a].distance / zero_distances[a]
                if relative < trials.stall_floor or (
                    not trials.stop_at_tolerance and relative < trials.tolerance
                ):
                    pending.remove(a)
            if verbose:
                print(endings[0] if count == 1 else f"trial {used}: {monitor.ending}")
            if not pending:
                break
        seconds = (time.perf_counter() - start_time) / count
        return [
            attack_result(
                self,
                best[a],
                fixed[a],
                zero_distances[a],
                iterations[a],
                used,
                endings[a],
                seconds,
                None if ground_truths is None else ground_truths[a],
                evaluations[a],
            )
            for a in range(count)
        ]
