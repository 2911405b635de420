"""Dummy data: a Keras model whose weights are the attacker's guess of one batch.

DLG (Zhu, Liu, Han, NeurIPS 2019, Algorithm 1) starts from random dummy inputs
`x'` and dummy labels `y'` and moves them until the victim's gradient on them
matches the observed gradient `g`:

    x'*, y'* = argmin_{x', y'} || dL(F(x', W), y') / dW - g ||^2     (eq. 4)

`DummyData` is a `Candidate` with a single start: `dummy.compile(optimizer=
keras.optimizers.Adam(0.1))` and `dummy.fit(dummy.observations(g, steps=300))`
give callbacks, History and a progress bar.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tfleak.attacks.candidate import DUMMY_INITS, Candidate
from tfleak.attacks.objectives import GradientMatching

__all__ = ["DummyData", "DUMMY_INITS"]


class DummyData(Candidate):
    """Dummy inputs and dummy labels of one batch, optimised to match an observed gradient.

    Args:
      victim: the `tfleak.models.Victim` whose gradient was shared (held
        weakly; its weights are not this model's weights).
      batch_size: number of examples in the shared batch.
      labels: known labels `[batch_size]` int (e.g. restored by iDLG); they are
        then fixed and only the inputs are optimised. None optimises the
        labels too, as DLG does.
      distance: gradient distance, a name in
        `tfleak.attacks.objectives.GRADIENT_DISTANCES` ('l2' is DLG's).
      init: how the dummy inputs start, a name in `DUMMY_INITS`.
      seed: seed of the dummy inputs and label logits.

    Weights:
      `dummy_data` `[1, batch, height, width, channels]` float32 (unconstrained
      while optimising; compare as images after clipping to [0, 1]) and
      `dummy_label_logits` `[1, batch, classes]` float32.

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
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
        if init not in DUMMY_INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(DUMMY_INITS)}.")
        super().__init__(
            GradientMatching(victim, distance),
            starts=1,
            batch_size=batch_size,
            optimise_labels=labels is None,
            init=init,
            seed=seed,
            **kwargs,
        )
        self.fixed_labels = (
            tf.zeros(self.logits_shape)
            if labels is None
            else victim.labels_to_probabilities(tf.constant(labels))[tf.newaxis]
        )

    def observations(self, observed_gradient: Sequence, steps: int) -> tf.data.Dataset:
        """A dataset yielding the observed gradient `steps` times, for `fit`."""
        return Candidate.observations(observed_gradient, self.fixed_labels, (), steps)

    def predicted_labels(self) -> np.ndarray:
        """The most probable dummy label of each example, `[batch]` int64."""
        probabilities = self.label_probabilities(self.fixed_labels)[0]
        return tf.argmax(probabilities, axis=-1).numpy()

    def images(self) -> np.ndarray:
        """The dummy data as images, clipped to [0, 1]: `[batch, h, w, c]` float32."""
        return np.clip(self.dummy_data[0].numpy(), 0.0, 1.0)
