"""Defences of the code itself: noise before it leaves the device, and NoPeek training.

DP-SGD on the weights bounds what the trained model reveals about its
training examples; it says nothing about the code a device sends for a new
input at inference time. These defences act on that code:

- `CodeNoise('gaussian', stddev)`: add N(0, stddev^2) to every coordinate.
- `CodeNoise('laplace', epsilon, clip_norm)`: clip the code to L1 norm
  `clip_norm`, add Laplace noise of scale `2 * clip_norm / epsilon`: the
  Laplace mechanism on a query of L1 sensitivity `2 * clip_norm` (any two
  clipped codes differ by at most that), so each code sent is
  `epsilon`-local-DP with respect to the whole input image.
- `NoPeekTarget`: train the target to also minimise the distance correlation
  between inputs and codes (Vepakomma, Gupta, Swedish, Raskar, "Reducing
  leakage in distributed deep learning for sensitive health data", 2019;
  Szekely, Rizzo, Bakirov 2007 for distance correlation).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfleak.split.model import TargetModel

__all__ = ["CODE_DEFENSES", "CodeNoise", "distance_correlation", "NoPeekTarget"]

CODE_DEFENSES = ("none", "gaussian", "laplace")


class CodeNoise:
    """Noise the device adds to a code before sending it; codes -> codes.

    Example:
      >>> defense = CodeNoise("laplace", 2.0, clip_norm=10.0)
      >>> sent = defense(on_device(images))     # epsilon 2 per code sent
    """

    def __init__(self, mechanism: str, strength: float, clip_norm: float | None = None):
        """Configures the noise.

        Args:
          mechanism: 'none', 'gaussian' or 'laplace'.
          strength: for 'gaussian' the noise standard deviation in code units
            (0 = no defence); for 'laplace' the local-DP epsilon per code sent
            (> 0; smaller is more private); ignored for 'none'.
          clip_norm: 'laplace' only: the L1 norm codes are clipped to, > 0
            (e.g. the median L1 norm of codes of public images).

        Raises:
          ValueError: an unknown mechanism or a value out of range.
        """
        if mechanism not in CODE_DEFENSES:
            raise ValueError(
                f"unknown code defence {mechanism!r}; choose one of {', '.join(CODE_DEFENSES)}."
            )
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be finite and >= 0; got {strength}.")
        if mechanism == "laplace":
            if strength <= 0:
                raise ValueError(f"the Laplace epsilon must be > 0; got {strength}.")
            if clip_norm is None or not 0 < clip_norm < math.inf:
                raise ValueError(f"laplace needs a finite clip_norm > 0; got {clip_norm}.")
        self.mechanism, self.strength, self.clip_norm = mechanism, float(strength), clip_norm

    @property
    def epsilon_local(self) -> float | None:
        """Local-DP epsilon per code sent ('laplace'), None where not defined."""
        return self.strength if self.mechanism == "laplace" else None

    @property
    def laplace_scale(self) -> float | None:
        """The Laplace scale b = 2 * clip_norm / epsilon ('laplace')."""
        return 2 * self.clip_norm / self.strength if self.mechanism == "laplace" else None

    def __repr__(self) -> str:
        return f"CodeNoise({self.mechanism!r}, {self.strength!r}, clip_norm={self.clip_norm!r})"

    def __call__(self, codes) -> tf.Tensor:
        """Codes float32 `[batch, ...]` -> defended codes, same shape (random each call)."""
        codes = tf.convert_to_tensor(codes, tf.float32)
        if self.mechanism == "none" or (self.mechanism == "gaussian" and self.strength == 0):
            return codes
        if self.mechanism == "gaussian":
            return codes + tf.random.normal(tf.shape(codes), stddev=self.strength)
        axes = list(range(1, codes.shape.rank))
        l1 = tf.reduce_sum(tf.abs(codes), axis=axes, keepdims=True)
        clipped = codes * tf.minimum(1.0, self.clip_norm / tf.maximum(l1, 1e-12))
        # Laplace(0, b) by inverse CDF: -b * sign(u) * log(1 - 2|u|), u ~ U(-1/2, 1/2).
        u = tf.random.uniform(tf.shape(codes), -0.5 + 1e-7, 0.5 - 1e-7)
        return clipped - self.laplace_scale * tf.sign(u) * tf.math.log1p(-2.0 * tf.abs(u))


def _centred_distances(x: tf.Tensor) -> tf.Tensor:
    x = tf.reshape(x, [tf.shape(x)[0], -1])
    squared = tf.reduce_sum(tf.square(x), axis=1)
    d2 = squared[:, None] + squared[None, :] - 2.0 * tf.matmul(x, x, transpose_b=True)
    d = tf.sqrt(tf.maximum(d2, 0.0) + 1e-12)  # The epsilon keeps sqrt's gradient finite at 0.
    return (
        d
        - tf.reduce_mean(d, axis=0, keepdims=True)
        - tf.reduce_mean(d, axis=1, keepdims=True)
        + tf.reduce_mean(d)
    )


def distance_correlation(x, z) -> tf.Tensor:
    """Sample distance correlation of two batches (Szekely, Rizzo, Bakirov 2007), in [0, 1].

    0 when (in the population) x and z are independent; 1 when one is a
    similarity transform of the other.

    Args:
      x: float32 `[batch, ...]` (e.g. images), flattened per example.
      z: float32 `[batch, ...]` (e.g. codes), flattened per example.

    Returns:
      A float32 scalar.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    z = tf.convert_to_tensor(z, tf.float32)
    a, b = _centred_distances(x), _centred_distances(z)
    covariance = tf.reduce_mean(a * b)
    variances = tf.reduce_mean(a * a) * tf.reduce_mean(b * b)
    return tf.sqrt(tf.maximum(covariance, 0.0) / tf.sqrt(tf.maximum(variances, 1e-24)))


class NoPeekTarget(TargetModel):
    """The split target trained with NoPeek: cross-entropy + alpha * dCor(images, codes).

    Vepakomma et al. (2019), Eq. 1: the on-device stage learns codes that
    still serve the classifier but correlate less with the raw input, which
    makes them harder to invert. `alpha = 0` is the plain target.
    """

    def __init__(self, alpha: float = 0.5, **kwargs):
        """Args: alpha: weight of the distance correlation, finite, >= 0; the rest as
        `TargetModel`."""
        if not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be finite and >= 0; got {alpha}.")
        kwargs.setdefault("name", "nopeek_target")
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.dcor_tracker = keras.metrics.Mean(name="distance_correlation")

    def _update_metrics(self, labels, probabilities, cross_entropy, dcor) -> dict:
        # As keras-io's custom train_step guide: the compiled "loss" tracker and
        # metrics, then this model's own tracker, all listed in `self.metrics`.
        for metric in self.metrics:
            if metric is self.dcor_tracker:
                metric.update_state(dcor)
            elif metric.name == "loss":
                metric.update_state(cross_entropy, sample_weight=tf.shape(labels)[0])
            else:
                metric.update_state(labels, probabilities)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        """One step on `cross_entropy + alpha * dCor(images, codes)`.

        Reports `loss` (the compiled cross-entropy, as `TargetModel` does), the
        compiled metrics, and `distance_correlation` of the batch.
        """
        images, labels = data[0], data[1]
        with tf.GradientTape() as tape:
            codes = self.mobile_step(images, training=True)
            probabilities = self.server_step(codes, training=True)
            cross_entropy = self.compute_loss(
                x=images, y=labels, y_pred=probabilities, training=True
            )
            dcor = distance_correlation(images, codes)
            loss = cross_entropy + self.alpha * dcor
            # Each replica's loss is a mean over its share and the optimizer sums the
            # replicas' gradients: divide, for the gradient of the global batch's mean.
            loss /= tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return self._update_metrics(labels, probabilities, cross_entropy, dcor)

    def test_step(self, data):
        """Evaluates as `TargetModel` does and also tracks dCor(images, codes)."""
        images, labels = data[0], data[1]
        codes = self.mobile_step(images, training=False)
        probabilities = self.server_step(codes, training=False)
        cross_entropy = self.compute_loss(x=images, y=labels, y_pred=probabilities, training=False)
        dcor = distance_correlation(images, codes)
        return self._update_metrics(labels, probabilities, cross_entropy, dcor)
