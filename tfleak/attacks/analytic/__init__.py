"""Exact, closed-form recovery of the private input from a layer's gradient.

- `dense`: a Dense layer's input read off its gradient (Phong et al. 2017),
  for one example or the examples a batch isolates.
- `conv`: one convolution under the classifier, by least squares (R-GAP).
- `plan`: which of the two a victim's layers allow, or why neither does.
- `recovery`: `AnalyticRecovery`, the attack, which checks every recovery by
  recomputing the update.

Papers: Phong et al. 2017, https://eprint.iacr.org/2017/715; R-GAP,
https://arxiv.org/abs/2010.07733.
"""

from tfleak.attacks.analytic.dense import classifier_features, dense_layer_inputs
from tfleak.attacks.analytic.recovery import AnalyticRecovery

__all__ = ["AnalyticRecovery", "classifier_features", "dense_layer_inputs"]
