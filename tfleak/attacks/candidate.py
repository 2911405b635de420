"""Dummy data of every start as one Keras model, optimised by first-order steps.

`Candidate` holds the attacker's guesses of the private batch for `starts`
independent starts as one weight `dummy_data` `[starts, batch, h, w, c]`
(and, when labels are optimised, `dummy_label_logits` `[starts, batch,
classes]`). Its `train_step` takes one step on `GradientMatching` with the
compiled Keras optimizer, so `fit` gives schedules, callbacks, History and a
progress bar. Adam and SGD act elementwise, so one optimizer over the stacked
starts is the same as one per start.

A step can be
- signed: the optimizer sees `sign(gradient)` (Inverting Gradients, Geiping
  et al. 2020, sec. 4, "signed gradients");
- noisy: after the update, `x <- x + lr * langevin * N(0, I)` (GradInversion,
  Yin et al. 2021, sec. 3.4; with the optimizer's update this is
  `x <- x - lr * step + lr * alpha_n * eta`);
- boxed: projected onto the image box [0, 1] after every step.

With the `group` prior (GradInversion's group consistency), the starts are
the group's seeds: every `group_every` steps from step `group_warmup` on, the
consensus (`tfleak.attacks.registration.group_consensus`, the registered mean of the
seeds) is formed again from the current dummy data, inside the compiled step.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import keras
import tensorflow as tf

from tfleak.attacks.registration import REGISTRATIONS, group_consensus

__all__ = ["AttackSchedule", "DUMMY_INITS", "Candidate", "make_schedule", "SCHEDULES"]

# name -> initializer factory(seed). DLG draws dummy data from N(0, 1)
# ('normal'); tfleak starts from U[0, 1] ('uniform'), a valid image.
DUMMY_INITS = {
    "normal": lambda seed: keras.initializers.RandomNormal(0.0, 1.0, seed=seed),
    "uniform": lambda seed: keras.initializers.RandomUniform(0.0, 1.0, seed=seed),
}

SCHEDULES = ("constant", "step", "cosine")


def make_schedule(name: str, learning_rate: float, iterations: int, warmup: int = 0):
    """A Keras learning-rate schedule over `iterations` steps (an `AttackSchedule`).

    Args:
      name: 'constant'; 'step' (x0.1 at 3/8, 5/8 and 7/8 of the steps, as
        Inverting Gradients' MultiStepLR); 'cosine' (cosine decay to 0 after a
        linear warm-up of `warmup` steps, as GradInversion).
      learning_rate: the peak step size, in image units ([0, 1] pixels).
      iterations: steps of one trial.
      warmup: warm-up steps (cosine only).

    Raises:
      ValueError: an unknown name.
    """
    return AttackSchedule(name, learning_rate, iterations, warmup)


class AttackSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`make_schedule`'s step sizes, with the numbers held in variables.

    The step size at optimizer step t (counted from 0) is
    - 'constant': `learning_rate`;
    - 'step': `learning_rate * 0.1**k`, k the number of boundaries
      `floor(iterations * f)`, f in (3/8, 5/8, 7/8), that t exceeds (as
      `keras.optimizers.schedules.PiecewiseConstantDecay`);
    - 'cosine': with W = min(warmup, iterations - 1) and D = max(iterations -
      W, 1), `learning_rate * t / W` while t < W, then `learning_rate * (1 +
      cos(pi * min(t - W, D) / D)) / 2` (as `keras.optimizers.schedules.
      CosineDecay` from 0 with `warmup_target=learning_rate`).

    A compiled step reads the variables, so `assign` gives a traced attack a
    new learning rate, budget or warm-up without tracing it again.

    Raises:
      ValueError: an unknown name.
    """

    def __init__(self, name: str, learning_rate: float, iterations: int, warmup: int = 0):
        super().__init__()
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")
        self.name = name
        self._rate = tf.Variable(0.0, trainable=False, name="peak_learning_rate")
        self._iterations = tf.Variable(1.0, trainable=False, name="schedule_iterations")
        self._warmup = tf.Variable(0.0, trainable=False, name="schedule_warmup")
        self.assign(learning_rate, iterations, warmup)

    def assign(self, learning_rate: float, iterations: int, warmup: int = 0) -> None:
        """Sets the peak step size, the steps of one trial and the warm-up steps."""
        iterations = max(int(iterations), 1)
        self._rate.assign(float(learning_rate))
        self._iterations.assign(float(iterations))
        self._warmup.assign(float(max(min(int(warmup), iterations - 1), 0)))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if self.name == "constant":
            return tf.identity(self._rate)
        if self.name == "step":
            boundaries = tf.floor(self._iterations * tf.constant([3 / 8, 5 / 8, 7 / 8]))
            passed = tf.reduce_sum(tf.cast(step > boundaries, tf.float32))
            return self._rate * tf.pow(0.1, passed)
        warmup = self._warmup
        decay = tf.maximum(self._iterations - warmup, 1.0)
        step = tf.minimum(step, decay + warmup)
        warming = self._rate * step / tf.maximum(warmup, 1.0)
        cosine = self._rate * 0.5 * (1.0 + tf.cos(math.pi * (step - warmup) / decay))
        return tf.where(step < warmup, warming, cosine)

    def get_config(self):
        return {
            "name": self.name,
            "learning_rate": float(self._rate.numpy()),
            "iterations": int(self._iterations.numpy()),
            "warmup": int(self._warmup.numpy()),
        }


class Candidate(keras.Model):
    """All starts' dummy batches, optimised to match an observed gradient.

    Args:
      objective: a `GradientMatching`.
      starts: independent starts optimised together.
      batch_size: examples in the shared batch.
      optimise_labels: optimise label logits with the data (DLG); otherwise
        the labels come with each observation.
      signed: step on the sign of the gradient.
      boxed: project the data onto [0, 1] after every step.
      langevin: noise scale alpha_n of the Langevin update (0 = none).
      init: a key of `DUMMY_INITS`.
      seed: seed of start 0; start i of trial r uses `seed + r * starts + i`
        (with `seed_period` P: `seed + r * P + i mod P`, so every block of P
        starts, one attack of `tfleak.attacks.many`, begins as one alone would).
      group_every: steps between refreshes of the group consensus.
      group_warmup: steps before the first consensus (the group prior is 0
        until then).
      registration: 'translation' or 'none' (see `tfleak.attacks.registration`).
      max_shift: largest registration offset, in pixels (None: a quarter of
        the image's height).

    `fit` takes observations `(observed_gradient tuple, label probabilities
    [starts, batch, classes], batch-norm targets tuple)`, see `observations`.
    """

    def __init__(
        self,
        objective,
        starts: int,
        batch_size: int,
        optimise_labels: bool,
        signed: bool = False,
        boxed: bool = False,
        langevin: float = 0.0,
        init: str = "uniform",
        seed: int = 0,
        group_every: int = 100,
        group_warmup: int = 100,
        registration: str = "translation",
        max_shift: Optional[int] = None,
        seed_period: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        victim = objective.victim
        self.objective = objective
        self.starts, self.batch_size = int(starts), int(batch_size)
        self.optimise_labels = bool(optimise_labels)
        self.signed, self.boxed, self.langevin = bool(signed), bool(boxed), float(langevin)
        self.seed_period = int(seed_period or starts)
        self.group = "group" in objective.priors
        # Seeds and the group schedule are variables read by the compiled
        # step: attacks that differ only in them share one traced graph.
        self._seed = tf.Variable(0, dtype=tf.int64, trainable=False, name="seed")
        self._group_every = tf.Variable(1, dtype=tf.int64, trainable=False, name="group_every")
        self._group_warmup = tf.Variable(0, dtype=tf.int64, trainable=False, name="group_warmup")
        self.set_starts(init, seed)
        self.set_group_schedule(group_every, group_warmup)
        self.data_shape = (self.starts, self.batch_size, *victim.image_shape)
        # Registration 'none' is a translation of at most 0 pixels: a variable,
        # so switching between them does not trace the step again.
        self._max_shift = tf.Variable(0, dtype=tf.int32, trainable=False, name="max_shift")
        self.set_registration(registration, max_shift)
        self.logits_shape = (self.starts, self.batch_size, victim.num_classes)
        self.dummy_data = self.add_weight(
            name="dummy_data", shape=self.data_shape, initializer="zeros", trainable=True
        )
        self.dummy_label_logits = self.add_weight(
            name="dummy_label_logits",
            shape=self.logits_shape,
            initializer="zeros",
            trainable=self.optimise_labels,
        )
        # The last step's per-start values, read by the trial logic.
        self.values = self.add_weight(
            name="values", shape=(self.starts,), initializer="zeros", trainable=False
        )
        self.distances = self.add_weight(
            name="distances", shape=(self.starts,), initializer="zeros", trainable=False
        )
        # The group's consensus and whether it has been formed yet (0 or 1).
        self.consensus = self.add_weight(
            name="consensus", shape=self.data_shape[1:], initializer="zeros", trainable=False
        )
        self.consensus_weight = self.add_weight(
            name="consensus_weight", shape=(), initializer="zeros", trainable=False
        )
        self.distance_tracker = keras.metrics.Mean(name="gradient_distance")
        self.objective_tracker = keras.metrics.Mean(name="objective")
        self._noise_seed = tf.Variable(0, dtype=tf.int64, trainable=False, name="noise_step")
        self.built = True
        self.reset(0)

    @property
    def metrics(self):
        return [self.objective_tracker, self.distance_tracker]

    def reset(self, trial_index: int) -> None:
        """New random starts for trial `trial_index`, and a fresh optimizer state."""
        period = self.seed_period
        seeds = [self.seed + trial_index * period + i % period for i in range(self.starts)]
        rows = [DUMMY_INITS[self.init](seed)(self.data_shape[1:]) for seed in seeds]
        self.dummy_data.assign(tf.stack(rows))
        logits = [
            keras.initializers.RandomNormal(0.0, 1.0, seed=seed + 1)(self.logits_shape[1:])
            for seed in seeds
        ]
        self.dummy_label_logits.assign(tf.stack(logits))
        self.consensus.assign(tf.zeros_like(self.consensus))
        self.consensus_weight.assign(0.0)
        self._noise_seed.assign(trial_index * 1_000_003)
        if getattr(self, "optimizer", None) is not None:
            # A fresh optimizer state: step count and moments to zero (the
            # learning rate, a variable when constant, keeps its value).
            for variable in self.optimizer.variables:
                if not variable.path.endswith("learning_rate"):
                    variable.assign(tf.zeros(variable.shape, variable.dtype))

    def set_starts(self, init: str, seed: int) -> None:
        """Chooses the initializer (a key of `DUMMY_INITS`) and seed of the next `reset`.

        Raises:
          ValueError: an unknown initializer.
        """
        if init not in DUMMY_INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(DUMMY_INITS)}.")
        self.init, self.seed = init, int(seed)
        self._seed.assign(self.seed)

    def set_group_schedule(self, every: int, warmup: int) -> None:
        """The group consensus is formed every `every` steps (>= 1) from step `warmup` on."""
        self._group_every.assign(max(int(every), 1))
        self._group_warmup.assign(int(warmup))

    def label_probabilities(self, fixed: tf.Tensor) -> tf.Tensor:
        """`[starts, batch, classes]`: softmax of the dummy logits, or the known labels."""
        if self.optimise_labels:
            return tf.nn.softmax(self.dummy_label_logits, axis=-1)
        return fixed

    def evaluate_objective(self, observed, fixed_labels, bn_targets):
        """`(objective [starts], distance [starts], terms)` at the current dummy data."""
        return self.objective(
            self.dummy_data,
            self.label_probabilities(fixed_labels),
            observed,
            bn_targets,
            consensus=self.consensus if self.group else None,
            consensus_weight=self.consensus_weight if self.group else None,
        )

    def set_registration(self, registration: str, max_shift: Optional[int] = None) -> None:
        """Chooses how the group consensus registers seeds (see `tfleak.attacks.registration`).

        Raises:
          ValueError: an unknown registration.
        """
        if registration not in REGISTRATIONS:
            raise ValueError(
                f"unknown registration {registration!r}; choose one of {', '.join(REGISTRATIONS)}."
            )
        if max_shift is None:
            max_shift = self.data_shape[2] // 4
        self.registration, self.max_shift = registration, int(max_shift)
        self._max_shift.assign(0 if registration == "none" else self.max_shift)

    def current_consensus(self) -> tf.Tensor:
        """`[batch, h, w, c]`: the group consensus of the current dummy data."""
        return group_consensus(self.dummy_data, "translation", self._max_shift)

    def _refresh_consensus(self) -> None:
        """Forms the consensus again when the step count says so (in the graph)."""
        step = tf.cast(self.optimizer.iterations, tf.int64)
        due = (step >= self._group_warmup) & (
            tf.math.floormod(step - self._group_warmup, self._group_every) == 0
        )

        def refresh():
            self.consensus.assign(self.current_consensus())
            self.consensus_weight.assign(1.0)
            return tf.constant(True)

        tf.cond(due, refresh, lambda: tf.constant(False))

    def call(self, inputs=None, training=None):
        """Returns the dummy data `[starts, batch, h, w, c]`; `inputs` is ignored."""
        return self.dummy_data

    def train_step(self, data):
        observed, fixed_labels, bn_targets = data
        variables = self.trainable_variables
        if self.group:
            self._refresh_consensus()
        with tf.GradientTape() as tape:
            values, distances, _ = self.evaluate_objective(observed, fixed_labels, bn_targets)
            # Starts are independent: the gradient of the sum holds each
            # start's own gradient in its slice.
            total = tf.reduce_sum(values)
        gradients = tape.gradient(total, variables)
        if self.signed:
            gradients = [tf.sign(g) for g in gradients]
        # The step size of this step (read before `apply` advances the schedule).
        learning_rate = tf.cast(self.optimizer.learning_rate, tf.float32)
        self.optimizer.apply(gradients, variables)
        if self.langevin:
            self._noise_seed.assign_add(1)
            noise = tf.random.stateless_normal(
                self.data_shape,
                seed=tf.stack([self._seed.read_value(), self._noise_seed.read_value()]),
            )
            self.dummy_data.assign_add(learning_rate * self.langevin * noise)
        if self.boxed:
            self.dummy_data.assign(tf.clip_by_value(self.dummy_data, 0.0, 1.0))
        self.values.assign(values)
        self.distances.assign(distances)
        # The values at this step, not running means over the epoch: they are
        # what callbacks stop on.
        self.objective_tracker.reset_state()
        self.objective_tracker.update_state(tf.reduce_min(values))
        self.distance_tracker.reset_state()
        self.distance_tracker.update_state(tf.reduce_min(distances))
        return {m.name: m.result() for m in self.metrics}

    def fit(self, *args, shuffle: bool = False, **kwargs):
        """`keras.Model.fit` on observations (one element repeated: nothing to shuffle)."""
        return super().fit(*args, shuffle=shuffle, **kwargs)

    def compile(self, *args, **kwargs):
        """`keras.Model.compile` (without XLA unless asked), then builds the optimizer's slots.

        With the slots built, the first traced step creates no variables, so
        `tf.function` traces it once instead of twice.
        """
        kwargs.setdefault("jit_compile", False)
        super().compile(*args, **kwargs)
        self.optimizer.build(self.trainable_variables)

    @staticmethod
    def observations(
        observed: Sequence[tf.Tensor],
        fixed_labels: tf.Tensor,
        bn_targets: Sequence = (),
        steps: Optional[int] = None,
    ) -> tf.data.Dataset:
        """A dataset yielding one observation `steps` times (forever if None), for `fit`."""
        element = (tuple(observed), fixed_labels, tuple(tuple(t) for t in bn_targets))
        return tf.data.Dataset.from_tensors(element).repeat(steps)
