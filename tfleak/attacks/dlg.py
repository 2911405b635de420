"""Deep Leakage from Gradients (DLG) and improved DLG (iDLG), on the shared engine.

DLG (Zhu, Liu, Han, NeurIPS 2019, Algorithm 1) recovers a private batch and its
labels from the gradient it produced, by optimising dummy data and dummy
labels until their gradient matches (eq. 4):

    x'*, y'* = argmin_{x', y'} || dL(F(x', W), y') / dW - g ||^2

iDLG (Zhao, Mopuri, Bilen, 2020) first reads the label of a single example off
the last layer's gradient (`tfleak.attacks.labels.restore_label_idlg`) and then
optimises the data alone.

L-BFGS, as the paper uses, runs through `tfp.optimizer.lbfgs_minimize` inside
one `tf.function`. DLG is seed-sensitive (one start converges, another stays
noise), so a round whose starts stall or diverge is followed by a round from
new random starts, up to `restarts` times (`tfleak.attacks.trials`). A NaN is
a diverged start, not a crash. Success is judged without the ground truth:
the gradient distance must fall below `tolerance` times the distance of a
zero guess.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfleak.attacks.base import OPTIMIZERS, GradientInversion

__all__ = ["DLG", "IDLG", "OPTIMIZERS"]


@dataclasses.dataclass
class DLG(GradientInversion):
    """Deep Leakage from Gradients; its `repr` lists every hyperparameter.

    The defaults are the paper's (L-BFGS on the squared L2 gradient distance,
    labels optimised) with tfleak's restarts. Differences from the paper:
    dummy data start from U[0, 1] ('uniform', a valid image) rather than
    N(0, 1), which on LeNet converged less often; and L-BFGS keeps 100
    correction pairs, PyTorch's default. See `GradientInversion` for every
    attribute; measured on LeNet and 32x32 photographs, `tolerance` 1e-7 meant
    PSNR 29.3-32.5 dB and 1e-8 about 35-44 dB.
    """

    optimizer: str = "lbfgs"
    iterations: int = 3000
    restarts: int = 4
    boxed: bool = False
    distance: str = "l2"
    label_strategy: str = "optimize"
    tolerance: float = 1e-8
    stall_ratio: Optional[float] = 0.5


@dataclasses.dataclass
class IDLG(DLG):
    """iDLG: the label is restored from the gradient, then DLG on the data."""

    label_strategy: str = "idlg"
