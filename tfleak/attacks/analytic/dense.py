"""Reading a Dense layer's input off its gradient, in closed form.

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
is how breaching's `AnalyticAttacker` reads a batch. `dense_inputs` then
groups the units whose ratios agree: two or more units giving the same vector
isolate one example (a mixture of examples differs from unit to unit, its
weights being each unit's `delta`s). When fewer than `B` examples are
isolated, no input is returned for the batch (a mixture is not an image of
the batch).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["classifier_features", "dense_inputs", "dense_layer_inputs"]


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


def dense_inputs(
    kernel_gradient,
    bias_gradient,
    batch_size: int,
    relative_floor: float,
    cluster_tolerance: float,
) -> tuple[Optional[np.ndarray], str]:
    """The inputs of a batch's examples to a Dense layer, from its gradient.

    One example: the least-squares combination of every unit. A batch: the
    units' ratios `dW[:, j] / db[j]` are grouped, and each group of two or
    more units that agree isolates one example.

    Args:
      kernel_gradient: `[features, units]` float64, `dL/dW` under the mean loss.
      bias_gradient: `[units]` float64, `dL/db`.
      batch_size: examples behind the gradient.
      relative_floor: units with `|db_j|` below this fraction of the largest
        are left out.
      cluster_tolerance: two units isolate the same example when their input
        vectors differ by less than this fraction of the vector's norm.

    Returns:
      `(inputs [batch, features] float64 or None, note)`: None when fewer
      than `batch_size` examples are isolated; `note` says how they were read.

    Raises:
      ValueError: an all-zero bias gradient for a batch of more than one.
    """
    kernel, bias = kernel_gradient, bias_gradient
    if batch_size == 1:
        energy = float(bias @ bias)
        if energy == 0.0:
            return None, "the first Dense layer's bias gradient is zero"
        return (kernel @ bias / energy)[
            None
        ], "one example, from every unit of the first Dense layer"
    ratios, weights = dense_layer_inputs(kernel, bias, relative_floor)
    clusters: list[list[int]] = []
    centres: list[np.ndarray] = []
    for unit, ratio in enumerate(ratios):
        if centres:
            stack = np.stack(centres)
            gaps = np.linalg.norm(stack - ratio, axis=1)
            scale = np.maximum(np.linalg.norm(stack, axis=1), 1e-12)
            nearest = int(np.argmin(gaps / scale))
            if gaps[nearest] / scale[nearest] < cluster_tolerance:
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
