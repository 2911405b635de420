"""iLRG (Ma et al., ICLR 2023): repeated labels from one embedding per class and a
least-squares solve for the class counts."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tfleak.attacks.labels.last_layer import (
    check_batch_size,
    last_layer_gradient_with_bias,
    round_to_total,
    softmax,
)

__all__ = ["estimate_class_counts_ilrg", "restore_labels_ilrg"]


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
    batch_size = check_batch_size(batch_size)
    kernel, bias = last_layer_gradient_with_bias(
        victim, observed_gradient, "iLRG divides the kernel gradient by the bias gradient"
    )
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
    predictions = softmax(embeddings.T @ weights + offsets)  # [classes (embedding), classes]
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
    rounded = round_to_total(counts, int(batch_size))
    return np.repeat(np.arange(victim.num_classes), rounded).astype(np.int64)


# name -> function(victim, observed_gradient, batch_size) -> labels [batch].
