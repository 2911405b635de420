"""Label restoration: reading the private labels off the shared gradient.

iDLG (Zhao, Mopuri, Bilen, 2020, sec. 3.2): for one example with cross-entropy
loss, the gradient of the last layer's kernel `W` (Keras layout
`[features, classes]`) is `dW[:, c] = a * (p_c - y_c)`, where `a` is the
layer's input and `p` the softmax output. If `a` is non-negative (after a
sigmoid or ReLU, or raw pixels in [0, 1]), column `c` sums to a negative number
exactly for the true class, where `p_c - 1 < 0`, and to a positive one for
every other class. The label is the column with the smallest sum.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

__all__ = ["restore_label_idlg", "LABEL_STRATEGIES"]


def restore_label_idlg(victim, observed_gradient: Sequence[tf.Tensor]) -> np.ndarray:
    """Restores the label of a single example from the classifier kernel's gradient.

    Args:
      victim: a `tfleak.models.Victim` (its `classifier_kernel_index` locates
        the last layer's kernel in the gradient).
      observed_gradient: the shared gradient of one example, a list of tensors
        matching `victim.trainable_variables`.

    Returns:
      `[1]` int64 array with the restored label.
    """
    kernel_gradient = tf.convert_to_tensor(observed_gradient[victim.classifier_kernel_index])
    column_sums = tf.reduce_sum(kernel_gradient, axis=0)  # [classes]
    return np.array([int(tf.argmin(column_sums))], dtype=np.int64)


# name -> function(victim, observed_gradient) -> labels [batch], or None when
# the labels are optimised jointly with the data (DLG).
LABEL_STRATEGIES = {"optimize": None, "idlg": restore_label_idlg}
