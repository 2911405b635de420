"""Exact, closed-form recovery of the private input from a Dense layer's gradient.

Phong, Aono, Hayashi, Wang, Moriai, "Privacy-preserving deep learning via
additively homomorphic encryption" (IEEE TIFS 2018; ATIS 2017), sec. 3: for a
Dense layer `z = a W + b` (Keras' layout, `W [features, units]`) and one
example with input `a` and `delta = dL/dz`,

    dL/dW = a^T delta,    dL/db = delta     =>    a = dL/dW[:, j] / dL/db[j]

for every unit `j` whose bias gradient is not zero. tfleak combines all units
by least squares, `a = dW db / ||db||^2` (exact for one example, and the most
stable choice). Under the mean loss of a batch of `B` examples,
`dW[:, j] / db[j] = sum_i a_i delta_ij / sum_i delta_ij` mixes every example
that unit `j` is active for; it equals `a_i` exactly when only example `i`
reaches unit `j` (e.g. the other examples leave a ReLU unit inactive), which
is how breaching's `AnalyticAttacker` reads a batch. `AnalyticRecovery` then
groups the units whose ratios agree: two or more units giving the same vector
isolate one example (a mixture of examples differs from unit to unit, its
weights being each unit's `delta`s). When fewer than `B` examples are
isolated, no image is returned for the batch (a mixture is not an image of
the batch).

Two structures are inverted:

- `Flatten -> Dense (+bias) -> ...` (an MLP): the first Dense layer's input is
  the flattened image, recovered exactly (one example; a batch as above).
  Input layers that only reshape or rescale (`Flatten`, `Reshape`,
  `Rescaling`, `Normalization`) are undone.
- `Conv2D -> [activation] -> Flatten -> Dense (+bias)` as the model's last
  Dense (one example): the classifier's input features `h` come from its
  gradient as above; its bias gradient is `delta = p - y`, so `dL/dh = W
  delta` and the gradient at the convolution's output are known too. As in
  R-GAP (Zhu and Blaschko, "R-GAP: Recursive Gradient Attack on Privacy",
  ICLR 2021, eq. 6-9), the image then solves a linear system: the forward
  equations `conv(x) = z` of the units whose pre-activation `z` the
  activation gives back (the active units of a ReLU; every unit of an
  invertible sigmoid or tanh), and the kernel-gradient equations `dL/dK =
  sum_p x_patch(p)^T dL/dz(p)`, solved by least squares in float64. It is
  refused when there are fewer equations than pixel values; when the system
  is rank deficient (a region that every ReLU filter leaves inactive), the
  undetermined directions are set to zero and the message says so (the
  recomputed update then usually does not match, and `success` is False).

Every recovery is checked without the ground truth: the labels are solved
from the classifier's gradient given the recovered inputs, the client's update
is recomputed on the recovered batch, and `success` means it matches the
observed one (relative squared L2 distance below `tolerance`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfleak import metrics as metrics_lib
from tfleak.attacks.result import AttackResult, batch_size_of
from tfleak.threats.federated import FedSGD

__all__ = ["AnalyticRecovery", "classifier_features", "dense_layer_inputs"]

# Layers below the inverted one that are undone exactly (they only reshape or rescale).
_INVERTIBLE_INPUT_LAYERS = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Rescaling,
    keras.layers.Normalization,
)
# Activations between the convolution and the classifier, with the inverse and derivative.
_ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh")


def _flat_layers(model) -> list:
    """The model's layers in order, nested models flattened, input layers dropped."""
    layers = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            layers += _flat_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            layers.append(layer)
    return layers


def _variable_index(victim, variable) -> Optional[int]:
    for i, candidate in enumerate(victim.trainable_variables):
        if candidate is variable:
            return i
    return None


def _activation_name(layer) -> str:
    if isinstance(layer, keras.layers.ReLU):
        return "relu" if layer.negative_slope == 0 and layer.max_value is None else "other"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "other") if activation is not None else "linear"


def dense_layer_inputs(kernel_gradient, bias_gradient, relative_floor: float = 1e-6):
    """Per-unit input candidates of a Dense layer, `dW[:, j] / db[j]` (Phong et al. 2017).

    Args:
      kernel_gradient: `[features, units]` float, `dL/dW` of the layer.
      bias_gradient: `[units]` float, `dL/db`.
      relative_floor: units with `|db_j|` below this fraction of the largest
        are left out (their ratio is dominated by rounding).

    Returns:
      `(ratios [kept, features] float64, bias [kept] float64)`, the units
      ordered by decreasing `|db_j|`.

    Raises:
      ValueError: an all-zero bias gradient.
    """
    kernel = np.asarray(kernel_gradient, np.float64)
    bias = np.asarray(bias_gradient, np.float64)
    largest = float(np.max(np.abs(bias))) if bias.size else 0.0
    if largest == 0.0:
        raise ValueError(
            "the Dense layer's bias gradient is zero; its input cannot be read from the "
            "gradient (dW[:, j] / db[j] needs db[j] != 0)."
        )
    units = np.flatnonzero(np.abs(bias) > relative_floor * largest)
    units = units[np.argsort(-np.abs(bias[units]), kind="stable")]
    return (kernel[:, units] / bias[units]).T, bias[units]


def classifier_features(victim, observed_gradient: Sequence) -> np.ndarray:
    """The classifier's input features of a single example, from its gradient.

    For one example the last Dense layer's gradient is `dW = h^T (p - y)`,
    `db = p - y`, so `h = dW db / ||db||^2` exactly (Phong et al. 2017, sec. 3;
    the least-squares combination of every unit's `dW[:, j] / db[j]`).

    Args:
      victim: a `tfleak.models.Victim` whose last Dense layer has a bias.
      observed_gradient: one example's gradient (mean loss), a list of tensors
        matching `victim.trainable_variables`.

    Returns:
      `[features]` float64, the input of the last Dense layer.

    Raises:
      ValueError: no Dense layer with a bias at the end, or a zero bias gradient.
    """
    if victim.classifier is None or victim.classifier_bias_index is None:
        raise ValueError(
            f"{victim.name} has no last Dense layer with a bias; its input features cannot "
            "be read from the gradient."
        )
    kernel = np.asarray(observed_gradient[victim.classifier_kernel_index], np.float64)
    bias = np.asarray(observed_gradient[victim.classifier_bias_index], np.float64)
    energy = float(bias @ bias)
    if energy == 0.0:
        raise ValueError("the classifier's bias gradient is zero; no feature can be read.")
    return kernel @ bias / energy


def _undo_input_layers(layers, values: np.ndarray, image_shape) -> np.ndarray:
    """Maps `[batch, ...]` outputs of `layers` (applied in order) back to their images."""
    for layer in reversed(layers):
        if isinstance(layer, keras.layers.Rescaling):
            scale = np.asarray(layer.scale, np.float64)
            offset = np.asarray(layer.offset, np.float64)
            values = (values - offset) / scale
        elif isinstance(layer, keras.layers.Normalization):
            mean = np.asarray(layer.mean, np.float64)
            std = np.maximum(
                np.sqrt(np.asarray(layer.variance, np.float64)), keras.config.epsilon()
            )
            values = values * std + mean
        elif isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
            shape = tuple(int(d) for d in layer.input.shape[1:])
            values = values.reshape((len(values), *shape))
    return values.reshape((len(values), *image_shape))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How a victim's input is read off its gradient."""

    kind: str  # 'dense' or 'conv'
    below: tuple  # layers below the inverted one, undone afterwards
    layer: object  # the first Dense layer, or the Conv2D
    kernel_index: int
    bias_index: Optional[int]
    activation: str = "linear"  # between the Conv2D and the classifier


@dataclasses.dataclass
class AnalyticRecovery:
    """Closed-form input recovery (Phong et al. 2017; R-GAP for one convolution).

    See the module for the equations. It applies to a functional or
    Sequential model whose first trainable layer is a Dense layer with a bias
    on the flattened image (any batch size), or one `Conv2D` (an activation
    among linear, ReLU, sigmoid and tanh) followed by `Flatten` and the Dense
    classifier with a bias (one example); otherwise `check(victim)` and the
    call raise a `ValueError` naming why.

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
        self._plan(victim, batch_size)

    def _plan(self, victim, batch_size: int) -> _Plan:
        from tfleak.models import as_victim

        victim = as_victim(victim)
        name = victim.name
        if victim.preprocess is not None:
            raise ValueError(
                f"{name} applies a preprocess function before its layers; analytic recovery "
                "can only undo reshaping and rescaling layers. Make the preprocessing a "
                "Rescaling or Normalization layer of the model."
            )
        if not victim.graph:
            raise ValueError(
                f"{name} is a subclassed model; analytic recovery reads the order of the "
                "layers of a functional or Sequential model."
            )
        layers = _flat_layers(victim.network)
        first = next((i for i, layer in enumerate(layers) if layer.trainable_weights), None)
        if first is None:
            raise ValueError(f"{name} has no trainable layer.")
        below, layer = tuple(layers[:first]), layers[first]
        odd = [x for x in below if not isinstance(x, _INVERTIBLE_INPUT_LAYERS)]
        if odd:
            raise ValueError(
                f"{name}: layer {odd[0].name!r} ({type(odd[0]).__name__}) comes before the "
                "first trainable layer and cannot be undone; analytic recovery undoes only "
                "Flatten, Reshape, Rescaling and Normalization."
            )
        if isinstance(layer, keras.layers.Dense):
            return self._dense_plan(victim, below, layer)
        if isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D:
            return self._conv_plan(victim, below, layer, layers[first + 1 :], batch_size)
        raise ValueError(
            f"{name}'s first trainable layer is {layer.name!r} ({type(layer).__name__}), not "
            "a Dense layer with a bias on the flattened image (Flatten -> Dense) or one "
            "Conv2D -> Flatten -> Dense classifier; analytic recovery does not apply."
        )

    def _dense_plan(self, victim, below, layer) -> _Plan:
        name = victim.name
        pixels = int(np.prod(victim.image_shape))
        shape = tuple(layer.input.shape[1:])
        if shape != (pixels,):
            raise ValueError(
                f"{name}'s first Dense layer {layer.name!r} takes inputs shaped {list(shape)}, "
                f"not the flattened image ({pixels} values); put a Flatten layer before it."
            )
        if layer.bias is None:
            raise ValueError(
                f"{name}'s first Dense layer {layer.name!r} has no bias (use_bias=False); "
                "analytic recovery divides the kernel gradient by the bias gradient."
            )
        kernel, bias = _variable_index(victim, layer.kernel), _variable_index(victim, layer.bias)
        if kernel is None or bias is None:
            raise ValueError(f"{name}'s first Dense layer {layer.name!r} is frozen.")
        return _Plan("dense", below, layer, kernel, bias)

    def _conv_plan(self, victim, below, layer, above, batch_size) -> _Plan:
        name = victim.name
        if batch_size != 1:
            raise ValueError(
                f"{name} starts with a Conv2D: analytic recovery through a convolution needs "
                f"one example (the classifier's gradient mixes a batch); got batch_size="
                f"{batch_size}."
            )
        if any(
            not isinstance(x, (keras.layers.Rescaling, keras.layers.Normalization)) for x in below
        ):
            raise ValueError(f"{name}: only rescaling layers may come before its Conv2D.")
        if layer.data_format != "channels_last" or layer.groups != 1:
            raise ValueError(
                f"{name}'s Conv2D {layer.name!r} is channels_first or grouped; analytic "
                "recovery handles channels_last convolutions with groups=1."
            )
        activations = [_activation_name(layer)]
        rest = list(above)
        while rest and isinstance(rest[0], (keras.layers.Activation, keras.layers.ReLU)):
            activations.append(_activation_name(rest.pop(0)))
        chosen = [a for a in activations if a != "linear"]
        if len(chosen) > 1 or (chosen and chosen[0] not in _ACTIVATIONS):
            raise ValueError(
                f"{name}'s Conv2D {layer.name!r} is followed by the activations "
                f"{activations}; analytic recovery inverts one of {', '.join(_ACTIVATIONS)}."
            )
        if (
            len(rest) != 2
            or not isinstance(rest[0], keras.layers.Flatten)
            or rest[1] is not victim.classifier
        ):
            kinds = [type(x).__name__ for x in rest]
            raise ValueError(
                f"{name}: after its Conv2D come {kinds}; analytic recovery through a "
                "convolution needs Conv2D -> Flatten -> Dense classifier (no pooling or "
                "further layers)."
            )
        if victim.classifier_bias_index is None:
            raise ValueError(
                f"{name}'s classifier has no bias; its input features cannot be read from "
                "its gradient."
            )
        pixels = int(np.prod(victim.image_shape))
        if pixels > self.max_pixels:
            raise ValueError(
                f"{name}'s images have {pixels} values, more than max_pixels={self.max_pixels} "
                "for the convolution's dense least-squares system."
            )
        units = int(np.prod(layer.output.shape[1:]))
        taps = int(np.prod(layer.kernel.shape))
        if units + taps < pixels:
            raise ValueError(
                f"{name}'s Conv2D {layer.name!r} has {units} output units and {taps} kernel "
                f"weights, fewer equations than the image's {pixels} values: the image is not "
                "determined by the gradient (a stride or too few filters), so analytic "
                "recovery does not apply."
            )
        kernel = _variable_index(victim, layer.kernel)
        if kernel is None:
            raise ValueError(f"{name}'s Conv2D {layer.name!r} is frozen.")
        activation = chosen[0] if chosen else "linear"
        return _Plan("conv", below, layer, kernel, None, activation)

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
        plan = self._plan(victim, batch_size)
        if ground_truth is not None:
            ground_truth = metrics_lib.check_ground_truth(ground_truth, victim, batch_size)
        gradient = [
            np.asarray(g, np.float64) for g in self.update.gradient_estimate(observed, batch_size)
        ]
        if plan.kind == "dense":
            inputs, note = self._dense_inputs(plan, gradient, batch_size)
        else:
            inputs, note = self._conv_input(victim, plan, gradient)
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
        images = _undo_input_layers(plan.below, inputs, victim.image_shape)
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

    # -- a first Dense layer --------------------------------------------------

    def _dense_inputs(self, plan, gradient, batch_size):
        """`([batch, features] float64 or None, note)`: the first Dense layer's inputs."""
        kernel, bias = gradient[plan.kernel_index], gradient[plan.bias_index]
        if batch_size == 1:
            energy = float(bias @ bias)
            if energy == 0.0:
                return None, "the first Dense layer's bias gradient is zero"
            return (kernel @ bias / energy)[
                None
            ], "one example, from every unit of the first Dense layer"
        ratios, weights = dense_layer_inputs(kernel, bias, self.relative_floor)
        clusters: list[list[int]] = []
        centres: list[np.ndarray] = []
        for unit, ratio in enumerate(ratios):
            if centres:
                stack = np.stack(centres)
                gaps = np.linalg.norm(stack - ratio, axis=1)
                scale = np.maximum(np.linalg.norm(stack, axis=1), 1e-12)
                nearest = int(np.argmin(gaps / scale))
                if gaps[nearest] / scale[nearest] < self.cluster_tolerance:
                    clusters[nearest].append(unit)
                    continue
            clusters.append([unit])
            centres.append(ratio)
        isolated = [c for c in clusters if len(c) >= 2]
        if len(isolated) < batch_size:
            return None, (
                f"{len(isolated)} of {batch_size} examples isolated by two or more units of the "
                "first Dense layer (the others reach only units shared with other examples, "
                "whose gradient mixes them); no image is reported for a mixture"
            )
        isolated = sorted(isolated, key=len, reverse=True)[:batch_size]
        inputs = []
        for members in isolated:
            # Least squares over the units that isolate the example (exact for each).
            w = weights[members]
            inputs.append(ratios[members].T @ (w * w) / float(w @ w))
        return np.stack(inputs), (
            f"{batch_size} examples, each isolated by >= {min(len(c) for c in isolated)} units of "
            "the first Dense layer"
        )

    # -- one convolution under the classifier ---------------------------------

    def _conv_input(self, victim, plan, gradient):
        """`([1, h, w, c] float64, note)`: the convolution's input, by least squares (R-GAP)."""
        import scipy.linalg
        import scipy.sparse

        layer = plan.layer
        features = classifier_features(victim, gradient)
        delta = gradient[victim.classifier_bias_index]  # p - y of the one example
        weights = np.asarray(victim.classifier.kernel, np.float64)
        out_shape = tuple(int(d) for d in layer.output.shape[1:])  # (oh, ow, filters)
        h = features.reshape(out_shape)
        dh = (weights @ delta).reshape(out_shape)  # dL/dh
        peak = float(np.max(np.abs(h))) or 1.0
        if plan.activation == "relu":
            valid = h > 1e-7 * peak
            z, dz = h, dh * valid
        elif plan.activation == "sigmoid":
            hc = np.clip(h, 1e-12, 1 - 1e-12)
            valid = (h > 1e-6) & (h < 1 - 1e-6)
            z, dz = np.log(hc / (1 - hc)), dh * hc * (1 - hc)
        elif plan.activation == "tanh":
            hc = np.clip(h, -1 + 1e-12, 1 - 1e-12)
            valid = np.abs(h) < 1 - 1e-6
            z, dz = np.arctanh(hc), dh * (1 - hc * hc)
        else:
            valid = np.ones_like(h, bool)
            z, dz = h, dh
        if layer.use_bias:
            z = z - np.asarray(layer.bias, np.float64)
        kernel = np.asarray(layer.kernel, np.float64)  # [kh, kw, c, filters]
        below_shape = tuple(int(d) for d in layer.input.shape[1:])  # (H, W, C)
        rows_f, rows_g, columns, taps, inside = _conv_indices(layer, below_shape, out_shape)
        pixels = int(np.prod(below_shape))
        values_f = np.broadcast_to(kernel[None, None], rows_f.shape)
        oh, ow, filters = out_shape
        values_g = np.broadcast_to(dz[:, :, None, None, None, :], rows_g.shape)
        forward = scipy.sparse.csr_matrix(
            (values_f[inside], (rows_f[inside], columns[inside])), shape=(oh * ow * filters, pixels)
        )
        backward = scipy.sparse.csr_matrix(
            (values_g[inside], (rows_g[inside], columns[inside])), shape=(taps, pixels)
        )
        keep = valid.reshape(-1)
        system = scipy.sparse.vstack([forward[keep], backward]).tocsr()
        target = np.concatenate([z.reshape(-1)[keep], gradient[plan.kernel_index].reshape(-1)])
        norms = np.sqrt(np.asarray(system.multiply(system).sum(axis=1))).reshape(-1)
        used = norms > 0
        system = scipy.sparse.diags(1.0 / norms[used]) @ system[used]
        target = target[used] / norms[used]
        if system.shape[0] < pixels:
            raise ValueError(
                f"{victim.name}: the convolution gives {system.shape[0]} equations for "
                f"{pixels} pixel values ({int(keep.sum())} active units and {taps} kernel "
                "gradients); the image is not determined, so analytic recovery does not apply."
            )
        normal = (system.T @ system).toarray()
        factor, info = scipy.linalg.lapack.dpotrf(normal)
        rcond = 0.0
        if info == 0:
            rcond, _ = scipy.linalg.lapack.dpocon(factor, np.abs(normal).sum(axis=0).max())
        note = "one example, through the convolution"
        if rcond < 1e-12:
            # Some directions of the image (e.g. a region every filter leaves inactive) are
            # not determined: a tiny ridge keeps the determined part exact and sets the
            # undetermined directions to zero. The recomputed update then decides success.
            ridge = 1e-9 * float(np.trace(normal)) / pixels
            factor, info = scipy.linalg.lapack.dpotrf(normal + ridge * np.eye(pixels))
            note = (
                f"one example, through the convolution, whose {system.shape[0]} equations "
                f"leave part of the {pixels} pixel values undetermined (reciprocal condition "
                f"number {rcond:.2g}; those directions are set to zero)"
            )
        solution = scipy.linalg.cho_solve((factor, False), system.T @ target)
        return solution.reshape((1, *below_shape)), note

    # -- checking the recovery ------------------------------------------------

    def _verify(self, victim, images, labels, observed) -> tuple[float, float]:
        """`(squared L2 distance, relative distance)` of the recomputed update to the observed."""
        probabilities = tf.one_hot(labels, victim.num_classes)
        recomputed, _ = self.update.simulate(victim, tf.constant(images), probabilities, observed)
        distance = sum(float(tf.reduce_sum(tf.square(r - o))) for r, o in zip(recomputed, observed))
        energy = sum(float(tf.reduce_sum(tf.square(o))) for o in observed)
        return distance, distance / energy


def _conv_indices(layer, below_shape, out_shape):
    """Index arrays of a Conv2D as a sparse matrix, each `[oh, ow, kh, kw, c, filters]`.

    Returns `(forward rows, kernel-gradient rows, pixel columns, kernel size,
    inside)`: output unit `(oy, ox, f)` reads pixel `(oy s + ky d - pad, ...)`
    with weight `K[ky, kx, c, f]`; kernel-gradient entry `(ky, kx, c, f)` sums
    that pixel times `dL/dz[oy, ox, f]`; `inside` drops the zero padding.
    """
    height, width, channels = below_shape
    oh, ow, filters = out_shape
    kh, kw = (int(d) for d in layer.kernel_size)
    sy, sx = (int(d) for d in layer.strides)
    dy, dx = (int(d) for d in layer.dilation_rate)
    if layer.padding == "same":
        top = max((oh - 1) * sy + (kh - 1) * dy + 1 - height, 0) // 2
        left = max((ow - 1) * sx + (kw - 1) * dx + 1 - width, 0) // 2
    else:
        top = left = 0
    oy, ox, ky, kx, c, f = np.meshgrid(
        np.arange(oh), np.arange(ow), np.arange(kh), np.arange(kw), np.arange(channels),
        np.arange(filters), indexing="ij",
    )  # fmt: skip
    iy, ix = oy * sy + ky * dy - top, ox * sx + kx * dx - left
    inside = (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
    columns = (np.clip(iy, 0, height - 1) * width + np.clip(ix, 0, width - 1)) * channels + c
    forward = (oy * ow + ox) * filters + f
    backward = ((ky * kw + kx) * channels + c) * filters + f
    return forward, backward, columns, kh * kw * channels * filters, inside


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
