"""Deep Leakage from Gradients (DLG) and improved DLG (iDLG), on the shared engine.

DLG (Zhu, Liu, Han, NeurIPS 2019, Algorithm 1) recovers a private batch and its
labels from the gradient it produced, by optimising dummy data and dummy
labels until their gradient matches (eq. 4):

    x'*, y'* = argmin_{x', y'} || dL(F(x', W), y') / dW - g ||^2

iDLG (Zhao, Mopuri, Bilen, 2020) first reads the label of a single example off
the last layer's gradient (`tfleak.attacks.labels.restore_label_idlg`) and then
optimises the data alone.

L-BFGS, as the paper uses, runs inside one `tf.function`
(`tfleak.attacks.lbfgs`): by default with Armijo backtracking from the unit
step, one gradient-distance evaluation an iteration as in the paper's PyTorch
loop (`line_search='hager_zhang'` takes tfp's line search instead). DLG is
seed-sensitive (one start converges, another stays noise), so a trial whose
starts stall or diverge is followed by a trial from new random starts, up to
`restarts` times (`tfleak.attacks.trials`). A NaN is a diverged start, not a
crash. Success is judged without the ground truth: the gradient distance must
fall below `tolerance` times the distance of a zero guess.

Papers: DLG https://arxiv.org/abs/1906.08935; iDLG https://arxiv.org/abs/2001.02610.
"""

from __future__ import annotations

from tfleak.attacks.engine import GradientInversion
from tfleak.attacks.settings import LBFGS, Objective, Trials

__all__ = ["DLG", "IDLG"]


class DLG(GradientInversion):
    """Deep Leakage from Gradients; its `repr` lists every hyperparameter.

    The paper's choices: L-BFGS on the squared L2 gradient distance, labels
    optimised with the data. tfleak adds restarts: a trial whose starts stall
    (objective shrank by less than half over 300 iterations) is followed by
    one from new random starts. Differences from the paper: dummy data start
    from U[0, 1] ('uniform', a valid image) rather than N(0, 1), which on
    LeNet converged less often; L-BFGS keeps 100 correction pairs, PyTorch's
    default. Measured on LeNet and 32x32 photographs, `tolerance` 1e-7 meant
    PSNR 29.3-32.5 dB and 1e-8 about 35-44 dB.

    Args:
      iterations: most L-BFGS iterations per trial.
      restarts: further trials after one that stalled.
      label_strategy: 'optimize' (DLG) or a restoration method.
      update: what the client shared (default `FedSGD()`).
      seed: seed of the first start.
      **settings: any other flat setting (`tfleak.attacks.settings.FLAT_SETTINGS`),
        e.g. `starts=4` or `optimizer='adam'`.
    """

    def __init__(self, *, iterations=3000, restarts=4, label_strategy="optimize", update=None,
                 seed=0, **settings):  # fmt: skip
        super().__init__(
            objective=Objective("l2"),
            solver=LBFGS(iterations),
            trials=Trials(restarts=restarts, seed=seed, tolerance=1e-8, stall_ratio=0.5),
            label_strategy=label_strategy,
            update=update,
        )
        self._apply(settings)


class IDLG(DLG):
    """iDLG: the label is restored from the gradient (`labels.restore_label_idlg`), then DLG
    on the data. Takes DLG's arguments; `label_strategy` defaults to 'idlg'."""

    def __init__(self, *, label_strategy="idlg", **settings):
        super().__init__(label_strategy=label_strategy, **settings)
