"""Unique labels from the signs of the last layer's gradient: iDLG (one example), iDLG's
column sums extended to batches, and GradInversion's rule.

With non-negative features (after a ReLU) a class `c` absent from the batch has
no negative entry in its kernel column `dW[:, c]`; these rules rank the
classes by how negative their column is.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tfleak.attacks.labels.last_layer import check_batch_size, last_layer_gradient

__all__ = ["restore_label_idlg", "restore_labels_gradinversion", "restore_labels_idlg_batch"]


def restore_label_idlg(
    victim, observed_gradient: Sequence[tf.Tensor], batch_size: int = 1
) -> np.ndarray:
    """Restores the label of a single example from the last layer's gradient (iDLG).

    For one example `dW[:, c] = a * (p_c - y_c)` and `db_c = p_c - y_c`: only the
    true class has `p_c - y_c < 0` (Zhao, Mopuri, Bilen, "iDLG: Improved Deep
    Leakage from Gradients", 2020, sec. 3.2). The paper reads the label off the
    kernel's column sums, which assumes `sum(a) > 0`; tfleak reads it off the
    bias gradient when the layer has a bias, which needs no assumption on the
    features, and otherwise off the kernel's columns by sign agreement: the true
    class's column points against every other column (`<dW[:, c*], dW[:, j]> <
    0` for all j), whatever the sign of `a`.

    Args:
      victim: a `tfleak.models.Victim` (it locates the last Dense layer).
      observed_gradient: the shared gradient of one example, a list of tensors
        matching `victim.trainable_variables`.
      batch_size: must be 1.

    Returns:
      `[1]` int64 array with the restored label.

    Raises:
      ValueError: a batch of more than one example, or a last-layer gradient
        that does not single out one class (e.g. all zeros).
    """
    if batch_size != 1:
        raise ValueError(
            f"iDLG restores the label of a single example; got batch_size={batch_size}. "
            "Use label_strategy='optimize', 'known', or a batch restoration method."
        )
    bias_index = victim.classifier_bias_index
    if bias_index is not None:
        bias_gradient = np.asarray(observed_gradient[bias_index], np.float64)
        negative = np.flatnonzero(bias_gradient < 0)
        if negative.size == 1:
            return negative.astype(np.int64)
    kernel = np.asarray(observed_gradient[victim.classifier_kernel_index], np.float64)
    gram = kernel.T @ kernel  # [classes, classes]
    np.fill_diagonal(gram, 0.0)
    against = np.flatnonzero(np.all((gram < 0) | np.eye(len(gram), dtype=bool), axis=1))
    if against.size != 1:
        raise ValueError(
            "the last layer's gradient does not single out one class (it is zero or not the "
            "gradient of one example's cross entropy); iDLG cannot restore the label. Use "
            "label_strategy='optimize'."
        )
    return against.astype(np.int64)


def _unique_rule(victim, observed_gradient, batch_size, statistic, name) -> np.ndarray:
    """The `batch_size` classes whose per-class `statistic` is most negative.

    With non-negative features a class absent from the batch has no negative
    entry in its kernel column, so its statistic (min or sum over features) is
    >= 0; a present class's is usually negative. More than `batch_size`
    negative classes therefore means signed features, and raises. Fewer is
    not proof of repeated labels (a class the model already predicts strongly
    can hide: `sum_i a_i p_ic >= a_j` entrywise), so the rule then fills the
    batch from the classes with the smallest non-negative statistic, as the
    papers do; with repeated labels that answer is wrong by construction.
    """
    batch_size = check_batch_size(batch_size)
    if batch_size > victim.num_classes:
        raise ValueError(
            f"{name} restores {batch_size} unique labels, but the model has only "
            f"{victim.num_classes} classes, so labels must repeat; use label_strategy='counts'."
        )
    kernel, _ = last_layer_gradient(victim, observed_gradient)
    values = statistic(kernel)  # [classes]
    negative = int(np.sum(values < 0))
    if negative > batch_size:
        raise ValueError(
            f"{negative} classes have a negative last-layer gradient but the batch holds "
            f"{batch_size} examples: the last layer's input features are not non-negative "
            f"(no ReLU before it), which {name} assumes. Use label_strategy='counts' (it needs "
            "a bias) or 'optimize'."
        )
    order = np.argsort(values, kind="stable")
    return order[:batch_size].astype(np.int64)


def restore_labels_gradinversion(
    victim, observed_gradient: Sequence[tf.Tensor], batch_size: int
) -> np.ndarray:
    """Restores a batch of unique labels with GradInversion's rule.

    Yin, Mallya, Vahdat, Alvarez, Kautz, Molchanov, "See through Gradients:
    Image Batch Recovery via GradInversion", CVPR 2021, Sec. 3.1 (batch label
    restoration): with the kernel gradient in PyTorch's `[classes, features]`
    layout `dW_{m,n}` (m a class), `y_hat = argsort_m(min_n dW_{m,n})[:B]`. In
    Keras' `[features, classes]` layout the minimum is over axis 0. The paper's
    assumptions: non-negative features (a ReLU before the last layer), so an
    absent class has no negative entry in its column; and unique labels. When
    fewer than `B` classes have a negative minimum (labels repeat, or a class
    the model already favours hides), the rest of the batch is filled with the
    classes of smallest non-negative minimum, as the paper's argsort does.

    Args:
      victim: a `tfleak.models.Victim` (it locates the last Dense layer).
      observed_gradient: the shared gradient of the batch, a list of float
        tensors matching `victim.trainable_variables` (mean cross-entropy).
      batch_size: examples in the batch, `B`, 1 <= B <= `victim.num_classes`.

    Returns:
      `[B]` int64 array of distinct labels, most negative minimum first (the
      batch's order cannot be read from a gradient).

    Raises:
      ValueError: `B` above the number of classes; more than `B` classes with
        a negative column (the features are not non-negative); a zero,
        non-finite or mis-shaped gradient. Repeated labels cannot be detected
        (see the note above) and give `B` distinct labels, some wrong.
    """
    return _unique_rule(
        victim, observed_gradient, batch_size, lambda k: k.min(axis=0), "GradInversion's rule"
    )


def restore_labels_idlg_batch(
    victim, observed_gradient: Sequence[tf.Tensor], batch_size: int
) -> np.ndarray:
    """Restores a batch of unique labels with iDLG's column sums, extended to batches.

    iDLG (Zhao et al. 2020, sec. 3.2) reads one label as the class whose kernel
    column sums to a negative value; GradInversion (Yin et al. 2021, Table 1)
    extends it to batches as its baseline: `y_hat = argsort_c(sum_f
    dW[f, c])[:B]`. Since `sum_f dW[f, c] = (1/B) sum_i s_i (p_ic - y_ic)` with
    `s_i = sum_f a_if`, an example whose features sum to less than the
    batch's p-weighted average hides its class more easily than under the
    minimum. Same assumptions and fill rule as `restore_labels_gradinversion`.

    Args:
      victim: a `tfleak.models.Victim`.
      observed_gradient: the shared gradient of the batch, a list of float
        tensors matching `victim.trainable_variables`.
      batch_size: `B`, 1 <= B <= `victim.num_classes`.

    Returns:
      `[B]` int64 array of distinct labels, most negative sum first.

    Raises:
      ValueError: as `restore_labels_gradinversion`.
    """
    return _unique_rule(
        victim, observed_gradient, batch_size, lambda k: k.sum(axis=0), "iDLG extended to batches"
    )
