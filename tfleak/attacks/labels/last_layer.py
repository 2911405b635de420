"""The last Dense layer's gradient, read and checked, and the arithmetic the rules share.

Every rule reads the gradient of the last Dense layer under the mean
cross-entropy loss of a batch of `B` examples (`tfleak.attacks.labels`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = [
    "check_batch_size",
    "last_layer_gradient",
    "last_layer_gradient_with_bias",
    "round_to_total",
    "softmax",
]


def check_batch_size(batch_size) -> int:
    """`batch_size` as an int; ValueError unless it is an integer >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size must be an integer; got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    return int(batch_size)


def last_layer_gradient(victim, observed_gradient) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """`(dW [features, classes], db [classes] or None)` as float64, checked.

    Raises:
      ValueError: a mis-shaped kernel gradient, or a gradient that is not
        finite or is zero.
    """
    kernel = np.asarray(observed_gradient[victim.classifier_kernel_index], np.float64)
    if kernel.ndim != 2 or kernel.shape[1] != victim.num_classes:
        raise ValueError(
            f"the last Dense layer's kernel gradient must be shaped [features, "
            f"{victim.num_classes}]; got {list(kernel.shape)}. Pass the gradient of "
            "victim.trainable_variables, in their order."
        )
    bias_index = victim.classifier_bias_index
    bias = None if bias_index is None else np.asarray(observed_gradient[bias_index], np.float64)
    if not np.all(np.isfinite(kernel)) or (bias is not None and not np.all(np.isfinite(bias))):
        raise ValueError("the last layer's gradient holds NaN or infinity; no label can be read.")
    if not np.any(kernel) and (bias is None or not np.any(bias)):
        raise ValueError(
            "the last layer's gradient is zero (a loss of 0, or a frozen layer); no label can "
            "be read from it."
        )
    return kernel, bias


def last_layer_gradient_with_bias(victim, observed_gradient, why: str) -> tuple:
    """`last_layer_gradient` for a rule that needs the bias gradient.

    Raises:
      ValueError: the last Dense layer has no bias (`why` says what the rule
        reads off it), or as `last_layer_gradient`.
    """
    if victim.classifier_bias_index is None:
        raise ValueError(
            f"the last Dense layer of {victim.name} has no bias, and {why}; use a model whose "
            "last layer has a bias (use_bias=True), or label_strategy='gradinversion' for "
            "unique labels."
        )
    return last_layer_gradient(victim, observed_gradient)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of float64 `logits`."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def round_to_total(counts: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers summing to `total`, nearest to `counts` (largest remainders)."""
    clipped = np.clip(counts, 0.0, None)
    rounded = np.floor(clipped).astype(np.int64)
    while rounded.sum() < total:
        rounded[np.argmax(clipped - rounded)] += 1
    while rounded.sum() > total:
        candidates = np.where(rounded > 0, clipped - rounded, np.inf)
        rounded[np.argmin(candidates)] -= 1
    return rounded
