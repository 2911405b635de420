"""What an attack reads before it optimises: the shared update, the labels, batch-norm targets.

Each function checks its input against the victim and says what to pass
instead when it does not fit.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tfleak.attacks.labels import LABEL_STRATEGIES

__all__ = ["batch_norm_targets", "check_observation", "fixed_labels"]


def fixed_labels(strategy: str, victim, observed, batch_size: int, labels) -> Optional[np.ndarray]:
    """The labels an attack holds fixed: `[batch]` int64, or None when it optimises them.

    Args:
      strategy: 'optimize', 'known' or a key of `LABEL_STRATEGIES`.
      victim: the `Victim`.
      observed: the shared gradient (under FedAvg, the mean local gradient).
      batch_size: examples in the batch.
      labels: the true labels, for 'known'.

    Raises:
      ValueError: 'known' without labels, or labels that do not fit the batch
        or the victim's classes; a restoration method that refuses the batch.
    """
    if strategy == "optimize":
        return None
    if strategy == "known":
        if labels is None:
            raise ValueError(
                "label_strategy='known' needs the true labels: pass labels=[...] (the "
                "attacker knows them), or use label_strategy='optimize' or a restoration "
                f"method ({', '.join(LABEL_STRATEGIES)})."
            )
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if labels.size != batch_size:
            raise ValueError(f"{labels.size} labels for a batch of {batch_size}.")
        victim.labels_to_probabilities(tf.constant(labels))  # range check
        return labels
    return np.asarray(LABEL_STRATEGIES[strategy](victim, observed, batch_size), np.int64)


def batch_norm_targets(objective, victim, batch_statistics) -> tuple:
    """`((mean, variance), ...)` per batch-norm layer for the 'bn' prior, or `()`.

    Args:
      objective: the attack's `tfleak.attacks.settings.Objective`.
      victim: the `Victim`.
      batch_statistics: what the client shared, for `bn_target='shared'`.

    Raises:
      ValueError: 'shared' without statistics, or one pair per layer missing.
    """
    if "bn" not in objective.priors or not victim.batch_norm_layers:
        return ()
    if objective.bn_target == "moving":
        return tuple((tf.identity(m), tf.identity(v)) for m, v in victim.moving_statistics())
    if batch_statistics is None:
        raise ValueError(
            "bn_target='shared' matches the batch statistics the client shared: pass "
            "batch_statistics=victim.batch_statistics(x), or use bn_target='moving'."
        )
    if len(batch_statistics) != len(victim.batch_norm_layers):
        raise ValueError(
            f"{len(batch_statistics)} batch statistics for "
            f"{len(victim.batch_norm_layers)} batch-norm layers."
        )
    return tuple(
        (tf.constant(m, tf.float32), tf.constant(v, tf.float32)) for m, v in batch_statistics
    )


def check_observation(observed: Sequence[tf.Tensor]) -> None:
    """Raises ValueError for a shared gradient that is not finite or is all zeros."""
    finite = all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in observed)
    if not finite:
        raise ValueError(
            "the shared gradient holds NaN or inf values; there is nothing to invert. Check the "
            "client's loss (and the defence applied to the update)."
        )
    if all(not bool(tf.reduce_any(g != 0)) for g in observed):
        raise ValueError(
            "the shared gradient is all zeros (a saturated or untrained loss, or a defence that "
            "removed it); an all-zero gradient carries no information about the batch."
        )
