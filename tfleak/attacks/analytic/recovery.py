"""`AnalyticRecovery`: closed-form input recovery, checked without the ground truth.

The input of a first Dense layer (`tfleak.attacks.analytic.dense`, Phong et
al. 2017) or of one convolution under the classifier
(`tfleak.attacks.analytic.conv`, R-GAP), whichever the victim's layers allow
(`tfleak.attacks.analytic.plan`).

Every recovery is checked without the ground truth: the labels are solved
from the classifier's gradient given the recovered inputs, the client's update
is recomputed on the recovered batch, and `success` means it matches the
observed one (relative squared L2 distance below `tolerance`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

import tfleak.metrics as metrics_lib
from tfleak.attacks.analytic.conv import conv_input
from tfleak.attacks.analytic.dense import dense_inputs
from tfleak.attacks.analytic.plan import plan_recovery, undo_input_layers
from tfleak.attacks.result import AttackResult, batch_size_of
from tfleak.threats.federated import FedSGD

__all__ = ["AnalyticRecovery"]


@dataclasses.dataclass
class AnalyticRecovery:
    """Closed-form input recovery (Phong et al. 2017; R-GAP for one convolution).

    See `tfleak.attacks.analytic.dense` and `tfleak.attacks.analytic.conv`
    for the equations. It applies to a functional or Sequential model whose
    first trainable layer is a Dense layer with a bias on the flattened image
    (any batch size), or one `Conv2D` (an activation among linear, ReLU,
    sigmoid and tanh) followed by `Flatten` and the Dense classifier with a
    bias (one example); otherwise `check(victim)` and the call raise a
    `ValueError` naming why.

    Attributes:
      tolerance: the recovery is verified (`success`) when the update
        recomputed on the recovered batch and labels is within this relative
        squared L2 distance of the observed one (dimensionless; float32
        rounding gives about 1e-12 for an exact recovery).
      cluster_tolerance: two units isolate the same example when their input
        vectors differ by less than this fraction of the vector's norm.
      relative_floor: units whose bias gradient is below this fraction of the
        largest are ignored (their ratio is mostly rounding).
      max_pixels: the convolution case solves a dense `pixels x pixels` normal
        system; larger images (height x width x channels) are refused.
      update: the shared update the client computed, `FedSGD()` or
        `FedAvg(...)`; a first Dense layer's input is exact under both (its
        input does not change between local steps).
    """

    tolerance: float = 1e-6
    cluster_tolerance: float = 1e-4
    relative_floor: float = 1e-6
    max_pixels: int = 4096
    update: object = dataclasses.field(default_factory=FedSGD)

    def __post_init__(self):
        for name in ("tolerance", "cluster_tolerance", "relative_floor"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {value}.")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be at least 1; got {self.max_pixels}.")
        if not all(hasattr(self.update, m) for m in ("simulate", "gradient_estimate")):
            raise ValueError(
                f"update must be a tfleak.threats.federated.FedSGD, FedAvg or a "
                f"tfleak.threats.defenses.DefendedUpdate; got {self.update!r}."
            )

    # -- where it applies -----------------------------------------------------

    def check(self, victim, batch_size: int = 1) -> None:
        """Raises ValueError naming why this victim (and batch size) cannot be inverted."""
        plan_recovery(victim, batch_size, self.max_pixels)

    # -- the attack -----------------------------------------------------------

    def __call__(
        self,
        victim,
        observed_gradient: Sequence,
        batch_size: Optional[int] = None,
        labels: Optional[Sequence[int]] = None,
        ground_truth: Optional[tuple] = None,
        verbose: int = 0,
    ) -> AttackResult:
        """Recovers the batch behind `observed_gradient` in closed form.

        Args:
          victim: the `tfleak.models.Victim` (or Keras model) that produced the
            update, with the same weights.
          observed_gradient: the shared update, a list of float32 tensors
            matching `victim.trainable_variables`.
          batch_size: examples behind the update (default: the length of
            `labels`, else of the ground truth, else 1).
          labels: optional `[batch]` int true labels (the attacker knows them);
            by default each example's label is solved from the classifier's
            gradient given the recovered inputs.
          ground_truth: optional `(images [batch, h, w, c] in [0, 1], labels
            [batch] int)` to fill `result.metrics`; never used by the attack.
          verbose: 0 silent, 1 one line on how it ended.

        Returns:
          An `AttackResult`: `reconstruction` `[batch, h, w, c]` float32 in
          [0, 1] (clipped), `labels` `[batch]` int64, `success` when the
          recomputed update matches; `reconstruction` and `labels` are None
          when fewer than `batch` examples could be isolated (`message` says
          how many were).

        Raises:
          ValueError: the victim has no layer this recovery inverts (the
            message names why); an update that does not match the victim, is
            all zeros or not finite; labels or a ground truth that do not fit.
        """
        from tfleak.models import as_victim

        start = time.perf_counter()
        victim = as_victim(victim)
        observed = victim.check_gradient(observed_gradient)
        _check_update(observed)
        batch_size = _batch_size(batch_size, labels, ground_truth)
        plan = plan_recovery(victim, batch_size, self.max_pixels)
        if ground_truth is not None:
            ground_truth = metrics_lib.check_ground_truth(ground_truth, victim, batch_size)
        gradient = [
            np.asarray(g, np.float64) for g in self.update.gradient_estimate(observed, batch_size)
        ]
        if plan.kind == "dense":
            kernel, bias = gradient[plan.kernel_index], gradient[plan.bias_index]
            inputs, note = dense_inputs(
                kernel, bias, batch_size, self.relative_floor, self.cluster_tolerance
            )
        else:
            inputs, note = conv_input(victim, plan, gradient)
        if inputs is None:
            result = AttackResult(
                reconstruction=None, labels=None, success=False,
                gradient_distance=float("inf"), relative_distance=float("inf"),
                iterations=0, restarts_used=0, seconds=time.perf_counter() - start,
                attack=self, message=f"failed: {note}",
            )  # fmt: skip
            if verbose:
                print(f"AnalyticRecovery: {result.message}")
            return result
        images = undo_input_layers(plan.below, inputs, victim.image_shape)
        reconstruction = np.clip(images, 0.0, 1.0).astype(np.float32)
        predicted, label_note = _labels(victim, reconstruction, gradient, batch_size, labels)
        distance, relative = self._verify(victim, reconstruction, predicted, observed)
        success = bool(relative < self.tolerance)
        message = (
            f"{'exact' if success else 'failed: not verified'}: {note}; the update recomputed "
            f"on the recovered batch is at relative distance {relative:.3g}{label_note}"
        )
        result = AttackResult(
            reconstruction=reconstruction, labels=predicted, success=success,
            gradient_distance=distance, relative_distance=relative, iterations=0,
            restarts_used=0, seconds=time.perf_counter() - start, attack=self, message=message,
        )  # fmt: skip
        if ground_truth is not None:
            images, true_labels = ground_truth
            result.metrics = metrics_lib.evaluate(
                images, result.reconstruction, true_labels, result.labels
            )
        if verbose:
            print(f"AnalyticRecovery: {message}")
        return result

    # -- checking the recovery ------------------------------------------------

    def _verify(self, victim, images, labels, observed) -> tuple[float, float]:
        """`(squared L2 distance, relative distance)` of the recomputed update to the observed."""
        probabilities = tf.one_hot(labels, victim.num_classes)
        recomputed, _ = self.update.simulate(victim, tf.constant(images), probabilities, observed)
        distance = sum(float(tf.reduce_sum(tf.square(r - o))) for r, o in zip(recomputed, observed))
        energy = sum(float(tf.reduce_sum(tf.square(o))) for o in observed)
        return distance, distance / energy


def _labels(victim, images, gradient, batch_size, known) -> tuple[np.ndarray, str]:
    """Each recovered example's label, solved from the classifier's gradient.

    With the recovered inputs, the classifier's features `h_i` and predictions
    `p_i` are known, and its gradient is linear in the labels: `B dW = sum_i
    h_i^T (p_i - y_i)`, `B db = sum_i (p_i - y_i)`. Least squares gives every
    `y_i` (exact when the `[h_i, 1]` are independent); known labels are
    assigned to the examples by those solved scores.
    """
    from scipy.optimize import linear_sum_assignment

    x = tf.constant(images)
    weights = victim.current_weights()
    index = victim.classifier_kernel_index
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(weights[index])
        logits, _ = victim.forward_at(weights, x)
        firsts = [logits[i, 0] for i in range(batch_size)]
    features = np.stack(
        [np.asarray(tape.gradient(v, weights[index]), np.float64)[:, 0] for v in firsts]
    )  # [batch, features]: d logit_i0 / dW[:, 0] = h_i
    del tape
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float64)).numpy()
    design = features.T  # [features, batch]
    target = gradient[index]  # [features, classes]
    if victim.classifier_bias_index is not None:
        design = np.vstack([design, np.ones((1, batch_size))])
        target = np.vstack([target, gradient[victim.classifier_bias_index][None]])
    residual, *_ = np.linalg.lstsq(design, batch_size * target, rcond=None)  # [batch, classes]
    solved = probabilities - residual
    if known is not None:
        known = np.asarray(known, np.int64).reshape(-1)
        rows, columns = linear_sum_assignment(-solved[:, known])
        assigned = np.empty(batch_size, np.int64)
        assigned[rows] = known[columns]
        return assigned, "; labels given"
    predicted = np.argmax(solved, axis=-1).astype(np.int64)
    error = float(np.max(np.abs(solved - np.eye(victim.num_classes)[predicted])))
    return (
        predicted,
        f"; labels solved from the classifier (largest deviation from one-hot {error:.2g})",
    )


def _batch_size(batch_size, labels, ground_truth) -> int:
    batch_size = batch_size_of(batch_size, labels, ground_truth)
    if labels is not None and len(np.asarray(labels).reshape(-1)) != int(batch_size):
        raise ValueError(
            f"{len(np.asarray(labels).reshape(-1))} labels for a batch of {batch_size}."
        )
    return int(batch_size)


def _check_update(observed) -> None:
    if not all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in observed):
        raise ValueError("the shared update holds NaN or inf values; there is nothing to invert.")
    if all(not bool(tf.reduce_any(g != 0)) for g in observed):
        raise ValueError(
            "the shared update is all zeros; it carries no information about the batch."
        )
