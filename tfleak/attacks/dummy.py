"""Dummy data: a Keras model whose weights are the attacker's guess of the batch.

DLG (Zhu, Liu, Han, NeurIPS 2019, Algorithm 1) starts from random dummy inputs
`x'` and dummy labels `y'` and moves them until the victim's gradient on them
matches the observed gradient `g`:

    x'*, y'* = argmin_{x', y'} || dL(F(x', W), y') / dW - g ||^2     (eq. 4)

`DummyData` holds `x'` and the label logits of `y' = softmax(logits)` as its
only weights, and its `train_step` takes one step on eq. 4 with the compiled
Keras optimizer, so `model.fit` gives callbacks, History and a progress bar.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow import keras

from tfleak.attacks.objectives import get_gradient_distance

__all__ = ["DummyData", "DUMMY_INITS"]

# name -> initializer factory(seed). DLG draws dummy data from N(0, 1)
# ('normal'); tfleak starts from U[0, 1] ('uniform'), a valid image.
DUMMY_INITS = {
    "normal": lambda seed: keras.initializers.RandomNormal(0.0, 1.0, seed=seed),
    "uniform": lambda seed: keras.initializers.RandomUniform(0.0, 1.0, seed=seed),
}


class DummyData(keras.Model):
    """Dummy inputs and dummy labels, optimised to match an observed gradient.

    Args:
      victim: the `tfleak.models.Victim` whose gradient was shared. Only its
        `gradient` method is kept; its weights are not this model's weights.
      batch_size: number of examples in the shared batch.
      labels: known labels `[batch_size]` int (e.g. restored by iDLG); they are
        then fixed and only the inputs are optimised. None optimises the
        labels too, as DLG does.
      distance: gradient distance, a name in
        `tfleak.attacks.objectives.GRADIENT_DISTANCES` ('l2' is DLG's).
      init: how the dummy inputs start, a name in `DUMMY_INITS`.
      seed: seed of the dummy inputs and label logits.

    Weights:
      `dummy_data` `[batch, height, width, channels]` float32 (unconstrained
      while optimising; compare as images after clipping to [0, 1]) and
      `dummy_label_logits` `[batch, classes]` float32.

    Raises:
      ValueError: a bad `batch_size`, `distance`, `init` or label.
    """

    def __init__(
        self,
        victim,
        batch_size: int = 1,
        labels: Optional[Sequence[int]] = None,
        distance: str = "l2",
        init: str = "uniform",
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
        if init not in DUMMY_INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(DUMMY_INITS)}.")
        self.batch_size = int(batch_size)
        self.num_classes = victim.num_classes
        self.image_shape = victim.image_shape
        self.distance_name = distance
        self._distance = get_gradient_distance(distance)
        # A bound method: Keras does not track it, so the victim's variables
        # stay out of this model's weights.
        self._victim_gradient = victim.gradient
        self._check_gradient = victim.check_gradient
        self.fixed_labels = None
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            if labels.shape[0] != self.batch_size:
                raise ValueError(f"{labels.shape[0]} labels for a batch of {self.batch_size}.")
            self.fixed_labels = victim.labels_to_probabilities(tf.constant(labels, tf.int64))
        self.dummy_data = self.add_weight(
            name="dummy_data",
            shape=(self.batch_size, *self.image_shape),
            initializer=DUMMY_INITS[init](seed),
        )
        self.dummy_label_logits = self.add_weight(
            name="dummy_label_logits",
            shape=(self.batch_size, self.num_classes),
            initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed + 1),
            trainable=labels is None,
        )
        self.distance_tracker = keras.metrics.Mean(name="gradient_distance")

    @property
    def metrics(self):
        return [self.distance_tracker]

    @staticmethod
    def observations(observed_gradient: Sequence, steps: int) -> tf.data.Dataset:
        """A dataset yielding the observed gradient `steps` times, for `fit`."""
        return tf.data.Dataset.from_tensors(tuple(observed_gradient)).repeat(steps)

    def label_probabilities(self, label_logits: tf.Tensor) -> tf.Tensor:
        """Dummy labels `[batch, classes]`: softmax of the logits, or the known ones."""
        if self.fixed_labels is not None:
            return self.fixed_labels
        return tf.nn.softmax(label_logits, axis=-1)

    def gradient_distance(
        self, data: tf.Tensor, label_logits: tf.Tensor, observed_gradient: Sequence[tf.Tensor]
    ) -> tf.Tensor:
        """DLG eq. 4 at the given dummy data and label logits (a float32 scalar).

        A pure function of its arguments, so L-BFGS can evaluate it at points
        other than this model's weights.
        """
        dummy_gradient = self._victim_gradient(data, self.label_probabilities(label_logits))
        return self._distance(dummy_gradient, observed_gradient)

    def call(self, inputs=None, training=None):
        """Returns `(dummy_data, dummy_label_probabilities)`; `inputs` is ignored."""
        return self.dummy_data, self.label_probabilities(self.dummy_label_logits)

    def train_step(self, data):
        observed_gradient = data
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            distance = self.gradient_distance(
                self.dummy_data, self.dummy_label_logits, observed_gradient
            )
        gradients = tape.gradient(distance, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        # The distance at the current step, not a running mean over the epoch:
        # it is the quantity callbacks stop on.
        self.distance_tracker.reset_state()
        self.distance_tracker.update_state(distance)
        return {m.name: m.result() for m in self.metrics}

    def predicted_labels(self) -> np.ndarray:
        """The most probable dummy label of each example, `[batch]` int64."""
        return tf.argmax(self.label_probabilities(self.dummy_label_logits), axis=-1).numpy()

    def images(self) -> np.ndarray:
        """The dummy data as images, clipped to [0, 1]: `[batch, h, w, c]` float32."""
        return np.clip(self.dummy_data.numpy(), 0.0, 1.0)
