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

Modules: `unique` ('idlg', 'idlg_batch', 'gradinversion'), `counts`, `ilrg`, and
`last_layer` (the checked last-layer gradient they all read).
"""

from tfleak.attacks.labels.counts import estimate_class_counts, restore_labels_counts
from tfleak.attacks.labels.ilrg import estimate_class_counts_ilrg, restore_labels_ilrg
from tfleak.attacks.labels.unique import (
    restore_label_idlg,
    restore_labels_gradinversion,
    restore_labels_idlg_batch,
)

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
