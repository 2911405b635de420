"""The groups of settings an optimisation attack is made of.

An attack (`tfleak.attacks.engine.GradientInversion`) is four small, frozen
groups over one engine, in the spirit of breaching's attack configurations
(objective / optimizer / restarts) and optax's aliases:

- `Objective`: what the dummy data minimise: a gradient distance plus weighted
  priors (`tfleak.attacks.priors`), with `GroupConsistency` for the 'group'
  prior;
- a solver: `LBFGS` (DLG's) or `FirstOrder` (Adam or SGD steps with a Keras
  schedule, signed steps, Langevin noise, the image box);
- `Trials`: random starts, restarts and when a trial ends (the stop rule);
- the label strategy and the threat (`tfleak.threats.federated.FedSGD`,
  `FedAvg`, or a `DefendedUpdate`), which are single values.

Each group checks its own values when it is made; the engine checks the few
rules that join two groups. `FLAT_SETTINGS` names every setting once, so
`attack.replace(iterations=300, restarts=0)` reaches into the right group.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Mapping, Optional, Union

from tfleak.attacks.candidate import DUMMY_INITS, SCHEDULES
from tfleak.attacks.lbfgs import LINE_SEARCHES
from tfleak.attacks.objectives import GRADIENT_DISTANCES
from tfleak.attacks.priors import PRIORS
from tfleak.attacks.registration import REGISTRATIONS

__all__ = [
    "BN_TARGETS",
    "FLAT_SETTINGS",
    "OPTIMIZERS",
    "FirstOrder",
    "GroupConsistency",
    "LBFGS",
    "Objective",
    "Trials",
    "replace_settings",
]

OPTIMIZERS = ("lbfgs", "adam", "sgd")
BN_TARGETS = ("moving", "shared")


def _choose(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(valid)}.")


def _at_least(settings, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if value < minimum:
            rule = "at least 1" if minimum == 1 else f">= {minimum}"
            raise ValueError(f"{name} must be {rule}; got {value}.")


def _finite(settings, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0; got {value}.")


@dataclasses.dataclass(frozen=True)
class GroupConsistency:
    """When and how GradInversion's group consensus is formed (Yin et al. 2021, eq. 8).

    The consensus is the registered mean of a trial's seeds (its starts); the
    'group' prior's weight, in `Objective.priors`, pulls every seed towards it.

    Attributes:
      every: steps between refreshes of the consensus.
      warmup: steps before the first consensus (the prior is 0 until then).
      registration: how seeds are aligned before averaging: 'translation'
        (cross-correlation) or 'none' (the plain mean); see
        `tfleak.attacks.registration`.
      max_shift: largest registration offset in pixels (None: a quarter of the
        image height).
    """

    every: int = 100
    warmup: int = 100
    registration: str = "translation"
    max_shift: Optional[int] = None

    def __post_init__(self):
        _choose("registration", self.registration, REGISTRATIONS)
        _at_least(self, 1, "every")
        _at_least(self, 0, "warmup")
        if self.max_shift is not None and self.max_shift < 0:
            raise ValueError(f"max_shift must be >= 0 or None; got {self.max_shift}.")


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the dummy data minimise: `D(update(x', y'), g) + sum_k w_k R_k(x')`.

    Attributes:
      distance: gradient distance `D`, a key of
        `tfleak.attacks.objectives.GRADIENT_DISTANCES`.
      priors: prior name -> weight `w_k` (dimensionless), names from
        `tfleak.attacks.priors.PRIORS` ('tv', 'l2', 'bn', 'group', and the norm forms
        'tv_norms', 'l2_norms' of GradInversion and DeepInversion).
      bn_target: what the 'bn' prior matches: 'moving' (the victim's moving
        statistics, known to the server) or 'shared' (batch statistics the
        client shared; pass `batch_statistics=` to the attack).
      bn_first_layer_scale: extra weight of the first batch-norm layer's term.
      group: the consensus schedule of the 'group' prior.
    """

    distance: str = "l2"
    priors: Mapping[str, float] = dataclasses.field(default_factory=dict)
    bn_target: str = "moving"
    bn_first_layer_scale: float = 1.0
    group: GroupConsistency = dataclasses.field(default_factory=GroupConsistency)

    def __post_init__(self):
        object.__setattr__(self, "priors", dict(self.priors))
        _choose("distance", self.distance, tuple(GRADIENT_DISTANCES))
        _choose("bn_target", self.bn_target, BN_TARGETS)
        _finite(self, "bn_first_layer_scale")
        for name, weight in self.priors.items():
            _choose("prior", name, tuple(PRIORS))
            if not (math.isfinite(float(weight)) and float(weight) >= 0):
                raise ValueError(f"prior {name!r} needs a finite weight >= 0; got {weight}.")


@dataclasses.dataclass(frozen=True)
class LBFGS:
    """DLG's solver: L-BFGS over every start at once (`tfleak.attacks.lbfgs`).

    Attributes:
      iterations: most L-BFGS iterations per trial (each one or more objective
        evaluations in its line search).
      history_size: correction pairs kept (PyTorch's default, 100).
      jit_compile: compile the solver with XLA.
      snapshot_every: iterations between progress snapshots (and the chunk
        run in one graph call).
      line_search: 'hager_zhang' (tfp's, strong Wolfe conditions) or
        'armijo' (backtracking from the unit step, one evaluation per
        iteration where it is accepted; `tfleak.attacks.lbfgs.armijo_step`).
    """

    optimizer: ClassVar[str] = "lbfgs"
    iterations: int = 3000
    history_size: int = 100
    jit_compile: bool = False
    snapshot_every: int = 10
    line_search: str = "armijo"

    def __post_init__(self):
        _at_least(self, 1, "iterations", "history_size", "snapshot_every")
        _choose("line_search", self.line_search, LINE_SEARCHES)


@dataclasses.dataclass(frozen=True)
class FirstOrder:
    """Adam or SGD steps on the dummy data (a `Candidate` trained by `fit`).

    Attributes:
      optimizer: 'adam' or 'sgd' (Keras optimizers).
      iterations: steps per trial.
      learning_rate: peak step size, in [0, 1] pixel units.
      schedule: 'constant', 'step' (x0.1 at 3/8, 5/8, 7/8) or 'cosine'.
      warmup: linear warm-up steps of the cosine schedule.
      signed: step on the gradient's sign (Inverting Gradients).
      boxed: project onto the image box [0, 1] after every step.
      langevin: Langevin noise scale alpha_n (GradInversion; 0 = none).
      snapshot_every: steps between progress snapshots (and the chunk of steps
        run in one graph call).
    """

    optimizer: str = "adam"
    iterations: int = 1000
    learning_rate: float = 0.1
    schedule: str = "constant"
    warmup: int = 0
    signed: bool = False
    boxed: bool = True
    langevin: float = 0.0
    snapshot_every: int = 10

    def __post_init__(self):
        _choose("optimizer", self.optimizer, OPTIMIZERS)
        if self.optimizer == "lbfgs":
            raise ValueError("optimizer='lbfgs' is the LBFGS solver; use LBFGS(...).")
        _choose("schedule", self.schedule, SCHEDULES)
        _at_least(self, 1, "iterations", "snapshot_every")
        _at_least(self, 0, "warmup")
        _finite(self, "learning_rate", "langevin")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")


@dataclasses.dataclass(frozen=True)
class Trials:
    """Random starts, restarts and the stop rule (`tfleak.attacks.trials`).

    A trial optimises `starts` random starts together; after a trial that did
    not reach a solution's basin, up to `restarts` further trials start from
    new random points. The start with the smallest gradient distance wins.

    Attributes:
      restarts: further trials after the first (0 = a single trial).
      starts: independent random starts optimised together in one graph.
      init: dummy data initialisation, a key of
        `tfleak.attacks.candidate.DUMMY_INITS`.
      seed: seed of the first start; start `i` of trial `t` uses
        `seed + t * starts + i`.
      tolerance: success when the gradient distance is below `tolerance` times
        the distance of a zero guess (dimensionless).
      stop_at_tolerance: end a trial as soon as it succeeds (DLG); False runs
        every trial's whole schedule.
      stall_ratio: a trial is abandoned when its best objective shrank by less
        than this factor over `stall_window` iterations (None: never).
      stall_window: iterations over which progress is measured.
      stall_floor: a trial below this relative distance is in the basin of a
        solution: it runs on, and no further trial follows it.
      vectorize: evaluate the starts with `tf.vectorized_map` instead of side
        by side.
    """

    restarts: int = 0
    starts: int = 1
    init: str = "uniform"
    seed: int = 0
    tolerance: float = 1e-8
    stop_at_tolerance: bool = True
    stall_ratio: Optional[float] = None
    stall_window: int = 300
    stall_floor: float = 1e-5
    vectorize: bool = False

    def __post_init__(self):
        _choose("init", self.init, tuple(DUMMY_INITS))
        _at_least(self, 1, "starts", "stall_window")
        _at_least(self, 0, "restarts")
        _finite(self, "tolerance", "stall_floor")
        if self.stall_ratio is not None and not 0 < self.stall_ratio <= 1:
            raise ValueError(f"stall_ratio must be in (0, 1] or None; got {self.stall_ratio}.")


Solver = Union[LBFGS, FirstOrder]

# Every flat setting name -> (group, name in the group). 'group_*' reach the
# objective's GroupConsistency.
FLAT_SETTINGS = {
    **{f.name: ("objective", f.name) for f in dataclasses.fields(Objective) if f.name != "group"},
    "group_every": ("group", "every"),
    "group_warmup": ("group", "warmup"),
    "registration": ("group", "registration"),
    "max_shift": ("group", "max_shift"),
    "optimizer": ("solver", "optimizer"),
    **{f.name: ("solver", f.name) for f in dataclasses.fields(LBFGS)},
    **{f.name: ("solver", f.name) for f in dataclasses.fields(FirstOrder)},
    **{f.name: ("trials", f.name) for f in dataclasses.fields(Trials)},
}


def _solver(current: Solver, changes: dict) -> Solver:
    """`current` with `changes`; changing `optimizer` across L-BFGS and first order
    keeps the settings both share (iterations, snapshot_every)."""
    optimizer = changes.pop("optimizer", current.optimizer)
    _choose("optimizer", optimizer, OPTIMIZERS)
    kind = LBFGS if optimizer == "lbfgs" else FirstOrder
    names = {f.name for f in dataclasses.fields(kind)}
    for name in changes:
        if name not in names:
            other = "first-order solvers" if kind is LBFGS else "L-BFGS"
            raise ValueError(
                f"{name} is a setting of {other}; this attack's solver is {optimizer!r}."
            )
    values = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)}
    values = {name: value for name, value in values.items() if name in names}
    values.update(changes)
    if kind is FirstOrder:
        values["optimizer"] = optimizer
    return kind(**values)


def replace_settings(objective, solver, trials, **flat) -> tuple:
    """`(objective, solver, trials)` with flat settings applied to their groups.

    Raises:
      ValueError: a name that is no setting, or a value a group refuses.
    """
    changes = {"objective": {}, "group": {}, "solver": {}, "trials": {}}
    for name, value in flat.items():
        if name not in FLAT_SETTINGS:
            raise ValueError(
                f"unknown setting {name!r}; an attack's settings are "
                f"{', '.join(sorted(FLAT_SETTINGS))}."
            )
        group, field = FLAT_SETTINGS[name]
        changes[group][field] = value
    if changes["group"]:
        changes["objective"]["group"] = dataclasses.replace(objective.group, **changes["group"])
    if changes["objective"]:
        objective = dataclasses.replace(objective, **changes["objective"])
    if changes["solver"]:
        solver = _solver(solver, changes["solver"])
    if changes["trials"]:
        trials = dataclasses.replace(trials, **changes["trials"])
    return objective, solver, trials
