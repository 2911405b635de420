"""DP-SGD / DP-Adam for Keras 3 models: `DPModel`, a `train_step` around any model.

DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016,
algorithm 1) replaces a step's gradient by

    g = (1 / M) * (sum_{j=1..M} clip(g_j, C) + N(0, (sigma C)^2 I)),
    clip(g, C) = g * min(1, C / ||g||_2),

where the batch of B examples is cut into M equal consecutive microbatches,
`g_j` is the gradient of microbatch j's mean loss over all trainable
variables together, C is `l2_norm_clip` and sigma `noise_multiplier`
(`tfleak.privacy.query.gaussian_sum`). Any Keras optimizer then applies `g`
(DP-Adam: Adam). With M = B each record is one example and the privacy
accounting of `tfleak.privacy.accounting` holds.

`DPModel` wraps any Keras model with this `train_step`, in one of two
`DP_VARIANTS` (`tfleak.privacy.records`: what one microbatch's record is),
which differ only when the model mixes the examples of a batch (batch
normalization in training mode).

In both, a training-mode forward pass over the whole batch updates the
moving statistics of batch norm exactly as Keras does on the full batch, and
gives the reported loss and metrics; 'full_batch' uses the pass that gives
the gradients, 'per_example' one extra pass (the per-microbatch passes leave
them alone, unlike tensorflow-privacy's `DPSequential`). Those statistics are
computed from the private batch without noise.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfleak.privacy.query import gaussian_sum
from tfleak.privacy.records import (
    DP_VARIANTS,
    alone_gradients,
    check_variant,
    jacobian_gradients,
    jacobian_per_example_gradients,
    per_example_gradients,
    variable_values,
)

__all__ = [
    "DP_VARIANTS",
    "DPModel",
    "per_example_gradients",
    "jacobian_per_example_gradients",
]


class DPModel(keras.Model):
    """Wraps a Keras model so that `fit` trains it with DP-SGD (Abadi et al. 2016, alg. 1).

    `train_step` computes one record per microbatch (see
    `tfleak.privacy.records` for the two `variant`s), clips each to global L2
    norm `l2_norm_clip`, sums them, adds
    `N(0, (noise_multiplier * l2_norm_clip)^2 I)`, divides by the number of
    microbatches and hands the result to the compiled optimizer
    (`optimizer.apply`): with `keras.optimizers.Adam` this is DP-Adam.
    Compile it as usual; each microbatch's loss is the compiled loss
    of that microbatch (`compute_loss`, a mean over its examples). Predicting
    and evaluating are the wrapped model's. The wrapped model's variables are
    the ones trained (`DPModel.model`).

    Example:
      >>> dp = DPModel(model, l2_norm_clip=1.0, noise_multiplier=0.7)
      >>> dp.compile(keras.optimizers.Adam(5e-3), keras.losses.SparseCategoricalCrossentropy())
      >>> dp.fit(dataset.batch(32, drop_remainder=True), epochs=20)
    """

    def __init__(
        self,
        model: keras.Model,
        l2_norm_clip: float,
        noise_multiplier: float,
        num_microbatches: int | None = None,
        variant: str = "per_example",
        **kwargs,
    ):
        """Wraps `model`.

        Args:
          model: a built Keras model (functional, Sequential or subclassed)
            trained on one replica; sample weights and `add_loss` terms are not
            supported.
          l2_norm_clip: C, the largest L2 norm of one microbatch's gradient
            over all variables, > 0 (gradient units); `math.inf` clips nothing
            (with `noise_multiplier=0` only).
          noise_multiplier: ratio of the noise standard deviation to C, >= 0
            and finite; 0 adds no noise (no privacy).
          num_microbatches: M, microbatches per batch: the batch is cut into M
            equal consecutive parts, each clipped as one record; M must divide
            every batch size. None: one example per microbatch (M = B, what
            the privacy accounting assumes).
          variant: a key of `DP_VARIANTS`.
          **kwargs: `keras.Model` arguments (`name`).

        Raises:
          ValueError: an argument out of range or an unknown variant.
        """
        kwargs.setdefault("name", f"dp_{model.name}")
        super().__init__(**kwargs)
        check_variant(variant)
        if not l2_norm_clip > 0:
            raise ValueError(
                f"l2_norm_clip must be > 0 (math.inf clips nothing); got {l2_norm_clip}."
            )
        if not 0 <= noise_multiplier < math.inf:
            raise ValueError(f"noise_multiplier must be >= 0 and finite; got {noise_multiplier}.")
        if math.isinf(l2_norm_clip) and noise_multiplier > 0:
            raise ValueError(
                f"an infinite l2_norm_clip leaves the noise (noise_multiplier "
                f"{noise_multiplier} times the clip) infinite; clip to a finite norm or set "
                "noise_multiplier=0."
            )
        if num_microbatches is not None and (
            isinstance(num_microbatches, bool) or int(num_microbatches) != num_microbatches
            or num_microbatches < 1
        ):  # fmt: skip
            raise ValueError(
                f"num_microbatches must be an integer >= 1 or None (one example each); got "
                f"{num_microbatches!r}."
            )
        self.model = model
        self.l2_norm_clip = float(l2_norm_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.num_microbatches = None if num_microbatches is None else int(num_microbatches)
        self.variant = variant
        self.built = model.built  # Its only weights are the wrapped model's.

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def _num_microbatches(self, x):
        """M as a Python int where the batch size is known when tracing, else a tensor."""
        batch = x.shape[0]
        if self.num_microbatches is None:
            return tf.shape(x)[0] if batch is None else batch
        if batch is not None and batch % self.num_microbatches:
            raise ValueError(
                f"num_microbatches ({self.num_microbatches}) must divide the batch size "
                f"({batch}): DP-SGD cuts every batch into equal microbatches. Batch with a "
                "multiple of it and drop_remainder=True."
            )
        if batch is None:
            tf.debugging.assert_equal(
                tf.math.floormod(tf.shape(x)[0], self.num_microbatches),
                0,
                message=f"num_microbatches ({self.num_microbatches}) must divide the batch "
                "size; batch with drop_remainder=True.",
            )
        return self.num_microbatches

    def _microbatch_loss(self, y, y_pred):
        return self.compute_loss(y=y, y_pred=y_pred)

    def _private_step(self, x, y):
        """The DP gradient, the whole batch's outputs and its non-trainable updates."""
        num_microbatches = self._num_microbatches(x)
        model = self.model
        if self.variant == "full_batch":
            records, y_pred, updated = jacobian_gradients(
                model, self._microbatch_loss, x, y, num_microbatches
            )
        else:
            records = alone_gradients(model, self._microbatch_loss, x, y, num_microbatches)
            # The whole batch's pass: moving statistics, loss and metrics.
            y_pred, updated = model.stateless_call(
                variable_values(model.trainable_variables),
                variable_values(model.non_trainable_variables),
                x,
                training=True,
            )
        stddev = self.noise_multiplier * self.l2_norm_clip if self.noise_multiplier else 0.0
        noised = gaussian_sum(records, self.l2_norm_clip, stddev)
        count = tf.cast(num_microbatches, tf.float32)
        return [g / count for g in noised], y_pred, updated

    def private_gradient(self, x, y) -> list[tf.Tensor]:
        """The gradient DP-SGD hands the optimizer for the batch `(x, y)`.

        `(sum_j clip(g_j, C) + N(0, (noise_multiplier C)^2 I)) / M`; no
        variable changes (neither weights nor moving statistics).

        Args:
          x: the model's inputs, `[batch, ...]`.
          y: targets `[batch, ...]` for the compiled loss; the model must be
            compiled.

        Returns:
          One float32 tensor per trainable variable of the wrapped model, of
          that variable's shape.

        Raises:
          ValueError: `num_microbatches` does not divide the batch.
        """
        gradient, _, _ = self._private_step(tf.convert_to_tensor(x), tf.convert_to_tensor(y))
        return gradient

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(
                "DPModel does not support sample weights: DP-SGD clips each microbatch's "
                "mean loss gradient. Drop the weights from the dataset."
            )
        gradient, y_pred, updated = self._private_step(x, y)
        for variable, value in zip(self.model.non_trainable_variables, updated):
            variable.assign(value)
        self.optimizer.apply(gradient, self.model.trainable_variables)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}
