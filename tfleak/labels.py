"""Label restoration: reading the private labels off the shared gradient.

iDLG (Zhao, Mopuri, Bilen, 2020, sec. 3.2): for one example with cross-entropy
loss, the gradient of the last layer's kernel `W` (Keras layout
`[features, classes]`) is `dW[:, c] = a * (p_c - y_c)` and that of its bias is
`db_c = p_c - y_c`, where `a` is the layer's input and `p` the softmax output.
Only the true class has `p_c - y_c < 0`. The paper reads the label off the
kernel's column sums, which assumes `sum(a) > 0` (non-negative features, e.g.
after a ReLU or sigmoid); tfleak reads it off the bias gradient when the layer
has a bias, which needs no assumption on the features, and otherwise off the
kernel's columns by sign agreement: the true class's column points against
every other column (`<dW[:, c*], dW[:, j]> < 0` for all j), whatever the sign
of `a`.

Every strategy is a function `(victim, observed_gradient, batch_size) ->
labels [batch_size] int64`, registered by name in `LABEL_STRATEGIES`, and
raises `ValueError` when its assumption fails instead of guessing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["restore_label_idlg", "LABEL_STRATEGIES"]


def restore_label_idlg(
    victim, observed_gradient: Sequence[tf.Tensor], batch_size: int = 1
) -> np.ndarray:
    """Restores the label of a single example from the last layer's gradient (iDLG).

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


# name -> function(victim, observed_gradient, batch_size) -> labels [batch].
# 'optimize' (labels optimised with the data) and 'known' (the attacker is
# given them) are handled by the attacks themselves.
LABEL_STRATEGIES = {"idlg": restore_label_idlg}
