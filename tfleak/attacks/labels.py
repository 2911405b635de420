"""Label restoration: reading the private labels off the shared gradient.

All methods read the gradient of the last Dense layer under the mean
cross-entropy loss of a batch of `B` examples. In Keras' layout the kernel is
`W [features, classes]` and, with `a_i` the layer's input (the features) and
`p_i = softmax(a_i W + b)` for example `i`,

    dW = (1/B) sum_i a_i (p_i - y_i)^T      [features, classes]
    db = (1/B) sum_i (p_i - y_i)             [classes]

A class `c` absent from the batch has `y_ic = 0`, so with non-negative features
(after a ReLU, as in ResNets' global average pooling) its column `dW[:, c]`
has no negative entry, and `db_c = mean_i p_ic > 0`. The methods:

- 'idlg' (`restore_label_idlg`): one example (Zhao, Mopuri, Bilen, 2020).
- 'idlg_batch' (`restore_labels_idlg_batch`): iDLG's column sums extended to
  batches, the baseline of GradInversion's Table 1. Unique labels.
- 'gradinversion' (`restore_labels_gradinversion`): GradInversion's rule (Yin
  et al., CVPR 2021, Sec. 3.1). Unique labels.
- 'counts' (`restore_labels_counts`): class counts from the bias gradient,
  which recovers repeated labels (Geng et al. 2021's count rule, with the
  model's mean prediction read off the gradient as in iLRG, Ma et al. 2023).
- 'ilrg' (`restore_labels_ilrg`): iLRG (Ma et al., ICLR 2023): one embedding
  per class recovered from the last layer's gradient equations, its
  prediction, and the class counts from a least-squares solve. Repeats too.

Every strategy is a function `(victim, observed_gradient, batch_size) ->
labels [batch_size] int64`, registered by name in `LABEL_STRATEGIES`, and
raises `ValueError` when its assumption fails instead of guessing. A shared
gradient does not say which example had which label (it is a sum over the
batch), so batch methods return the label multiset in no particular order
(score it with `tfleak.metrics.label_multiset_accuracy`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

__all__ = [
    "restore_label_idlg",
    "restore_labels_idlg_batch",
    "restore_labels_gradinversion",
    "restore_labels_counts",
    "restore_labels_ilrg",
    "estimate_class_counts",
    "estimate_class_counts_ilrg",
    "LABEL_STRATEGIES",
]


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


# -- shared checks ---------------------------------------------------------------


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size must be an integer; got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
    return int(batch_size)


def _last_layer(victim, observed_gradient) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """`(dW [features, classes], db [classes] or None)` as float64, checked."""
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
    batch_size = _check_batch_size(batch_size)
    if batch_size > victim.num_classes:
        raise ValueError(
            f"{name} restores {batch_size} unique labels, but the model has only "
            f"{victim.num_classes} classes, so labels must repeat; use label_strategy='counts'."
        )
    kernel, _ = _last_layer(victim, observed_gradient)
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


# -- unique labels ---------------------------------------------------------------


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


# -- repeated labels -------------------------------------------------------------


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _round_to_total(counts: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers summing to `total`, nearest to `counts` (largest remainders)."""
    clipped = np.clip(counts, 0.0, None)
    rounded = np.floor(clipped).astype(np.int64)
    while rounded.sum() < total:
        rounded[np.argmax(clipped - rounded)] += 1
    while rounded.sum() > total:
        candidates = np.where(rounded > 0, clipped - rounded, np.inf)
        rounded[np.argmin(candidates)] -= 1
    return rounded


def estimate_class_counts(victim, observed_gradient: Sequence[tf.Tensor], batch_size: int):
    """Real-valued class counts of the batch, before rounding (see `restore_labels_counts`).

    Args:
      victim, observed_gradient, batch_size: as `restore_labels_counts`.

    Returns:
      `[classes]` float64 array `n_c = B (p_hat_c - db_c)`, summing to `B`.

    Raises:
      ValueError: as `restore_labels_counts`, except the consistency check.
    """
    batch_size = _check_batch_size(batch_size)
    if victim.classifier_bias_index is None:
        raise ValueError(
            f"the last Dense layer of {victim.name} has no bias, and the class counts are "
            "read off the bias gradient; use a model whose last layer has a bias "
            "(use_bias=True), or label_strategy='gradinversion' for unique labels."
        )
    kernel, bias = _last_layer(victim, observed_gradient)
    energy = float(bias @ bias)
    if energy == 0.0:
        raise ValueError("the last layer's bias gradient is zero; no class counts can be read.")
    # Mean feature: dW ~= a_bar db^T when the examples' features are alike; least squares.
    mean_feature = kernel @ bias / energy  # [features]
    weights = victim.classifier.kernel.numpy().astype(np.float64)  # [features, classes]
    offsets = victim.classifier.bias.numpy().astype(np.float64)
    mean_prediction = _softmax(mean_feature @ weights + offsets)  # [classes]
    return batch_size * (mean_prediction - bias)


def restore_labels_counts(
    victim, observed_gradient: Sequence[tf.Tensor], batch_size: int
) -> np.ndarray:
    """Restores a batch's labels, repeats included, by counting each class.

    The bias gradient of the mean cross-entropy gives every class's count
    exactly, given the model's mean prediction on the batch:

        db_c = p_bar_c - n_c / B   =>   n_c = B (p_bar_c - db_c),

    the count rule of Geng et al., "Towards General Deep Leakage in Federated
    Learning" (2021, Sec. 3, zero-shot batch label restoration, which estimates
    `p_bar` from dummy data) and the right-hand side of iLRG's linear system
    (Ma et al., "Instance-wise Batch Label Restoration via Gradients in
    Federated Learning", ICLR 2023, Sec. 3: `B db = (P - I)^T n`). Like iLRG,
    tfleak estimates the prediction from the gradient itself: iLRG recovers a
    mean embedding per class as `dW[:, c] / db_c`; here one mean feature is
    fitted over all classes, `a_bar = dW db / ||db||^2` (least squares of `dW ~
    a_bar db^T`), and `p_hat = softmax(a_bar W + b)` with the victim's own
    weights. (iLRG's per-class embeddings divide by `db_c`, which is near 0
    whenever a class's share of the batch is near the model's prediction for
    it; on CIFAR-10 with repeated labels that made them less accurate.) The
    real counts are rounded to integers summing to `B` by largest remainders.

    Assumption: the batch's features are alike enough that the prediction on
    their mean is their mean prediction, which holds for an untrained model
    (on a fresh ResNet-20 the two differ by < 0.002 per class on CIFAR-10) and
    degrades as the model learns class-specific features. Non-negative
    features are not needed; a bias is. The error of `n_c` grows with `B`.

    Args:
      victim: a `tfleak.models.Victim` whose last Dense layer has a bias and
        returns the logits (no layer after it).
      observed_gradient: the shared gradient of the batch, a list of float
        tensors matching `victim.trainable_variables`, of the batch's *mean*
        cross-entropy (as `Victim.gradient` computes it).
      batch_size: `B` >= 1; labels may repeat and `B` may exceed the classes.

    Returns:
      `[B]` int64 array of labels, sorted, each class repeated by its count.

    Raises:
      ValueError: the last layer has no bias; a zero, non-finite or
        mis-shaped gradient; or a class count below -1, which no batch of `B`
        examples under a mean loss produces (the gradient is not of a mean
        cross-entropy over `B` examples, or the model is far from the
        assumption).
    """
    counts = estimate_class_counts(victim, observed_gradient, batch_size)
    if counts.min() < -1.0:
        worst = int(np.argmin(counts))
        raise ValueError(
            f"class {worst}'s estimated count is {counts[worst]:.2f}, below -1: the gradient is "
            f"not that of a mean cross-entropy over {batch_size} examples, or the model's "
            "features differ too much between examples for the count rule. Check batch_size, "
            "or use label_strategy='optimize'."
        )
    rounded = _round_to_total(counts, int(batch_size))
    return np.repeat(np.arange(victim.num_classes), rounded).astype(np.int64)


def estimate_class_counts_ilrg(victim, observed_gradient: Sequence[tf.Tensor], batch_size: int):
    """iLRG's real-valued class counts, before rounding (see `restore_labels_ilrg`).

    Args:
      victim, observed_gradient, batch_size: as `restore_labels_ilrg`.

    Returns:
      `[classes]` float64 array, the least-squares solution `n` of iLRG's
      system (it sums to `B` up to the residual of the fit).

    Raises:
      ValueError: as `restore_labels_ilrg`, except the consistency check.
    """
    batch_size = _check_batch_size(batch_size)
    if victim.classifier_bias_index is None:
        raise ValueError(
            f"the last Dense layer of {victim.name} has no bias, and iLRG divides the kernel "
            "gradient by the bias gradient; use a model whose last layer has a bias "
            "(use_bias=True), or label_strategy='gradinversion' for unique labels."
        )
    kernel, bias = _last_layer(victim, observed_gradient)
    if not np.any(bias):
        raise ValueError("the last layer's bias gradient is zero; no class counts can be read.")
    # iLRG's embeddings e_c = dW[:, c] / db_c: exact when the batch's features coincide.
    # A class with db_c = 0 exactly (its share equals its predicted mass) gets the
    # least-squares mean feature instead of a division by zero.
    tiny = np.finfo(np.float64).tiny
    mean_feature = kernel @ bias / float(bias @ bias)
    safe = np.abs(bias) > tiny
    embeddings = np.where(
        safe[None, :], kernel / np.where(safe, bias, 1.0)[None, :], mean_feature[:, None]
    )  # [features, classes]
    weights = victim.classifier.kernel.numpy().astype(np.float64)  # [features, classes]
    offsets = victim.classifier.bias.numpy().astype(np.float64)
    predictions = _softmax(embeddings.T @ weights + offsets)  # [classes (embedding), classes]
    classes = victim.num_classes
    # B db = (P^T - I) n and 1^T n = B, solved jointly by least squares (pseudo-inverse).
    system = np.vstack([np.ones((1, classes)), predictions.T - np.eye(classes)])
    values = np.concatenate([[float(batch_size)], batch_size * bias])
    return np.linalg.pinv(system) @ values


def restore_labels_ilrg(
    victim, observed_gradient: Sequence[tf.Tensor], batch_size: int
) -> np.ndarray:
    """Restores a batch's labels, repeats included, with iLRG.

    Ma, Sun, Cui, Li, Guan, Liu, "Instance-wise Batch Label Restoration via
    Gradients in Federated Learning", ICLR 2023, Sec. 3. Under the mean
    cross-entropy of `B` examples the last layer's gradient is, in Keras'
    `[features, classes]` layout, `dW = (1/B) sum_i a_i (p_i - y_i)^T` and `db
    = (1/B) sum_i (p_i - y_i)`. iLRG recovers one embedding per class by
    solving each column's gradient equations for a feature vector,

        e_c = dW[:, c] / db_c = sum_i a_i (p_ic - y_ic) / sum_i (p_ic - y_ic),

    a weighted mean of the batch's features, which equals their common value
    when the examples' features coincide (the untrained model the paper
    assumes); the prediction on it is `P[c] = softmax(e_c W + b)` with the
    victim's own weights. Reading `P[c]` as the mean prediction of class `c`'s
    examples, the class counts `n` satisfy the linear system

        B db = (P^T - I) n,    1^T n = B,

    which iLRG solves by least squares (Moore-Penrose pseudo-inverse). The
    real counts are clipped at 0 and rounded to integers summing to `B` by
    largest remainders. `restore_labels_counts` instead fits one mean feature
    to the whole batch; iLRG's division by `db_c` makes it sensitive to a
    class whose share of the batch is close to the model's predicted mass for
    it (`db_c ~ 0`), and on a trained model, whose examples' features differ
    by class, the embeddings and hence the counts are far off (see
    `docs/results/label_restoration.md`).

    Args:
      victim: a `tfleak.models.Victim` whose last Dense layer has a bias and
        returns the logits (no layer after it).
      observed_gradient: the shared gradient of the batch, a list of float
        tensors matching `victim.trainable_variables`, of the batch's *mean*
        cross-entropy (as `Victim.gradient` computes it).
      batch_size: `B` >= 1; labels may repeat and `B` may exceed the classes.

    Returns:
      `[B]` int64 array of labels, sorted, each class repeated by its count.

    Raises:
      ValueError: the last layer has no bias; a zero, non-finite or
        mis-shaped gradient; or a class count below -1, which no batch of `B`
        examples under a mean loss produces (the gradient is not of a mean
        cross-entropy over `B` examples, or the examples' features differ too
        much for one embedding per class, as on a trained model).
    """
    counts = estimate_class_counts_ilrg(victim, observed_gradient, batch_size)
    if not np.all(np.isfinite(counts)) or counts.min() < -1.0:
        worst = int(np.nanargmin(counts)) if np.any(np.isfinite(counts)) else 0
        raise ValueError(
            f"iLRG's estimated count of class {worst} is {counts[worst]:.2f}, below -1: the "
            f"gradient is not that of a mean cross-entropy over {batch_size} examples, or the "
            "examples' features differ too much for one embedding per class (a trained "
            "model). Check batch_size, or use label_strategy='counts' or 'optimize'."
        )
    rounded = _round_to_total(counts, int(batch_size))
    return np.repeat(np.arange(victim.num_classes), rounded).astype(np.int64)


# name -> function(victim, observed_gradient, batch_size) -> labels [batch].
# 'optimize' (labels optimised with the data) and 'known' (the attacker is
# given them) are handled by the attacks themselves.
LABEL_STRATEGIES = {
    "idlg": restore_label_idlg,
    "idlg_batch": restore_labels_idlg_batch,
    "gradinversion": restore_labels_gradinversion,
    "counts": restore_labels_counts,
    "ilrg": restore_labels_ilrg,
}
