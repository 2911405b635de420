"""Gradient matching: how far a dummy batch's gradient is from the observed one.

A registry of distances between two gradients, each a list of per-variable
tensors of equal structure:

- `l2`: the squared Euclidean distance summed over variables,
  `sum_l ||g'_l - g_l||^2` (DLG, Zhu et al. 2019, eq. 4).
- `l2_norms`: the Euclidean distance of every variable's gradient, summed
  over variables, `sum_l ||g'_l - g_l||_2`, not squared (GradInversion, Yin
  et al. 2021, eq. 2: `L_grad = alpha_G sum_l ||grad_l(x') - grad_l(x)||_2`);
  each layer weighs by its distance, not its squared distance, so layers
  with small gradients count more than under `l2`.
- `cosine`: one minus the cosine similarity of the concatenated gradients,
  `1 - <g', g> / (||g'|| ||g||)` (Inverting Gradients, Geiping et al. 2020,
  eq. 4), insensitive to the gradient's scale.

`GradientMatching` is the whole objective every attack minimises: the
distance plus weighted priors (`tfleak.attacks.priors`), for `starts` independent
dummy batches at once, in one graph: one copy of the per-start computation
for each start, side by side, which TF runs in parallel. `tf.vectorized_map`
over the starts is the alternative (`vectorize=True`); on a CPU it is usually
slower (`benchmarks/vectorized_starts.py` measures both), because pfor converts
the per-start convolution weight gradient (Conv2DBackpropFilter) with a while loop.
"""

from __future__ import annotations

import weakref
from typing import Callable, Mapping, Optional, Sequence

import tensorflow as tf

from tfleak.attacks.priors import PriorContext, get_prior
from tfleak.threats.federated import FedSGD

__all__ = [
    "GRADIENT_DISTANCES",
    "get_gradient_distance",
    "squared_l2",
    "l2_norms",
    "cosine_distance",
    "GradientMatching",
]


def squared_l2(dummy: Sequence[tf.Tensor], observed: Sequence[tf.Tensor]) -> tf.Tensor:
    """`sum_l ||dummy_l - observed_l||^2`, a float32 scalar >= 0 (DLG eq. 4)."""
    return tf.add_n([tf.reduce_sum(tf.square(d - o)) for d, o in zip(dummy, observed)])


def l2_norms(dummy: Sequence[tf.Tensor], observed: Sequence[tf.Tensor]) -> tf.Tensor:
    """`sum_l ||dummy_l - observed_l||_2`, a float32 scalar >= 0 (GradInversion eq. 2).

    One L2 norm per variable (a layer's kernel and bias are two terms), summed;
    the paper's alpha_G multiplies it (see `tfleak.GradInversion`). The
    gradient of a norm is undefined at 0: `1e-24` under each root keeps it
    finite, so a variable matched exactly adds 1e-12 and no gradient.

    Paper: https://arxiv.org/abs/2104.07586.
    """
    return tf.add_n(
        [tf.sqrt(tf.reduce_sum(tf.square(d - o)) + 1e-24) for d, o in zip(dummy, observed)]
    )


def cosine_distance(dummy: Sequence[tf.Tensor], observed: Sequence[tf.Tensor]) -> tf.Tensor:
    """`1 - cos(dummy, observed)` over all variables, a float32 scalar in [0, 2]."""
    dot = tf.add_n([tf.reduce_sum(d * o) for d, o in zip(dummy, observed)])
    dummy_norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(d)) for d in dummy]))
    observed_norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(o)) for o in observed]))
    return 1.0 - dot / (dummy_norm * observed_norm + 1e-12)


GRADIENT_DISTANCES: dict[str, Callable] = {
    "l2": squared_l2,
    "cosine": cosine_distance,
    "l2_norms": l2_norms,
}


def get_gradient_distance(name: str) -> Callable:
    """Returns the distance registered as `name`.

    Raises:
      ValueError: `name` is not one of `GRADIENT_DISTANCES`.
    """
    if name not in GRADIENT_DISTANCES:
        raise ValueError(
            f"unknown gradient distance {name!r}; choose one of "
            f"{', '.join(sorted(GRADIENT_DISTANCES))}."
        )
    return GRADIENT_DISTANCES[name]


class GradientMatching:
    """Gradient distance plus weighted priors, for several starts at once.

    `objective = distance(victim.gradient(x', y'), g) + sum_k w_k R_k(x')`

    Args:
      victim: the `tfleak.models.Victim` that shared the gradient. Held
        weakly, so a cached objective does not keep a victim alive.
      distance: a key of `GRADIENT_DISTANCES`.
      priors: prior name -> weight (dimensionless), e.g. `{'tv': 0.2}`.
      bn_first_layer_scale: extra factor on the first batch-norm layer's term
        of the 'bn' prior (DeepInversion and GradInversion weigh it more).
      vectorize: evaluate the starts with `tf.vectorized_map`; False builds one
        copy of the per-start graph for each start, side by side.
      update: what the client shared, as the attacker simulates it on dummy
        data: `tfleak.threats.federated.FedSGD()` (default: `victim.gradient`),
        `FedAvg(...)` (local steps unrolled), or a
        `tfleak.threats.defenses.DefendedUpdate` (an adaptive attacker applies the
        defences' deterministic parts). The distance compares its `simulate`
        with the observed update.
      stacked: the observed update has a leading axis of starts, one
        observation per start (independent attacks on one victim, evaluated
        together; see `tfleak.attacks.many`); False: every start matches the
        same observation.

    Raises:
      ValueError: unknown distance or prior, or a negative or non-finite weight.
    """

    def __init__(
        self,
        victim,
        distance: str = "l2",
        priors: Optional[Mapping[str, float]] = None,
        bn_first_layer_scale: float = 1.0,
        vectorize: bool = False,
        update=None,
        stacked: bool = False,
    ):
        self._victim = weakref.ref(victim)
        self.stacked = bool(stacked)
        self.update = FedSGD() if update is None else update
        self.distance_name = distance
        self.distance = get_gradient_distance(distance)
        self.priors = {}
        for name, weight in dict(priors or {}).items():
            get_prior(name)
            weight = float(weight)
            if not weight >= 0.0 or weight == float("inf"):
                raise ValueError(f"prior {name!r} needs a finite weight >= 0; got {weight}.")
            self.priors[name] = weight
        # The weights as variables: a compiled attack reads them when it runs,
        # so a sweep over weights (an ablation) traces its graph once. A prior
        # of weight 0 is still computed.
        self.prior_weights = {
            name: tf.Variable(weight, trainable=False, dtype=tf.float32, name=f"{name}_weight")
            for name, weight in self.priors.items()
        }
        self.bn_first_layer_scale = float(bn_first_layer_scale)
        self.needs_statistics = "bn" in self.priors
        self.vectorize = vectorize

    def set_prior_weights(self, priors: Mapping[str, float]) -> None:
        """Sets new weights for the same priors, without tracing again.

        Raises:
          ValueError: the names differ from the objective's priors.
        """
        if sorted(priors) != sorted(self.priors):
            raise ValueError(f"priors {sorted(priors)} differ from {sorted(self.priors)}.")
        for name, weight in priors.items():
            self.priors[name] = float(weight)
            self.prior_weights[name].assign(float(weight))

    @property
    def victim(self):
        victim = self._victim()
        if victim is None:
            raise RuntimeError("the victim of this objective no longer exists.")
        return victim

    def per_start(self, data: tf.Tensor, probabilities: tf.Tensor, observed: Sequence[tf.Tensor]):
        """`(distance [starts], statistics)` of every start's dummy batch.

        Args:
          data: `[starts, batch, h, w, c]` float32.
          probabilities: `[starts, batch, classes]` float32 label probabilities.
          observed: the shared gradient, one tensor per trainable variable
            (with `stacked`, each `[starts, *variable.shape]`, one per start).

        Returns:
          `distance` `[starts]` and, per batch-norm layer, `(mean [starts, ch],
          variance [starts, ch])` of the dummy batch (empty unless the 'bn'
          prior is used).
        """
        victim = self.victim

        def one(args):
            x, y, target = args
            target = list(target) if self.stacked else observed
            gradient, statistics = self.update.simulate(
                victim, x, y, target, statistics=self.needs_statistics
            )
            return self.distance(gradient, target), statistics

        def row(i):
            return tuple(o[i] for o in observed) if self.stacked else ()

        if data.shape[0] == 1 or not self.vectorize:
            # One graph per start, side by side in the same graph (TF runs
            # independent ops in parallel): no per-start loop at run time.
            outcomes = [one((data[i], probabilities[i], row(i))) for i in range(data.shape[0])]
            distance = tf.stack([d for d, _ in outcomes])
            statistics = [
                (tf.stack([o[1][k][0] for o in outcomes]), tf.stack([o[1][k][1] for o in outcomes]))
                for k in range(len(outcomes[0][1]))
            ]
            return distance, statistics
        targets = tuple(observed) if self.stacked else ()
        return tf.vectorized_map(one, (data, probabilities, targets))

    def __call__(
        self,
        data: tf.Tensor,
        probabilities: tf.Tensor,
        observed: Sequence[tf.Tensor],
        bn_targets: Sequence = (),
        consensus: Optional[tf.Tensor] = None,
        consensus_weight: Optional[tf.Tensor] = None,
    ) -> tuple[tf.Tensor, tf.Tensor, dict]:
        """`(objective [starts], distance [starts], {prior: value [starts]})`.

        `consensus` `[batch, h, w, c]` and `consensus_weight` (scalar) feed the
        'group' prior (see `tfleak.attacks.priors.PriorContext`).
        """
        distance, statistics = self.per_start(data, probabilities, observed)
        context = PriorContext(
            statistics=statistics,
            targets=bn_targets,
            consensus=consensus,
            consensus_weight=consensus_weight,
        )
        total = distance
        terms = {}
        for name in self.priors:
            if name == "bn":
                value = get_prior(name)(data, context, self.bn_first_layer_scale)
            else:
                value = get_prior(name)(data, context)
            terms[name] = value
            total = total + self.prior_weights[name] * value
        return total, distance, terms
