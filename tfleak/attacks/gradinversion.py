"""GradInversion (Yin, Mallya, Vahdat, Alvarez, Kautz, Molchanov, CVPR 2021).

"See through Gradients: Image Batch Recovery via GradInversion": batch label
restoration from the last layer's gradient (sec. 3.1,
`tfleak.attacks.labels.restore_gradinversion`), then, for a group G of seeds
optimised together (eq. 2, 6-8):

    x*_g = argmin_{x_g} ||dL(x_g, y)/dW - g||^2 + a_TV R_TV + a_l2 R_l2 + a_BN R_BN
                                                + a_group ||x_g - E_reg(x_G)||^2

with the batch-norm statistics prior R_BN (DeepInversion's, against the
victim's moving statistics), and a group-consistency prior towards the
consensus E_reg, the mean of every seed's image after registering it to the
seeds' pixel-wise mean (`tfleak.attacks.registration`; here by translation, where the
paper uses RANSAC-Flow). Adam with cosine decay after a linear warm-up, and
Langevin updates `x <- x - lr * step + lr * a_n * N(0, I)` (sec. 3.4).

Paper: https://arxiv.org/abs/2104.07586; its priors follow DeepInversion,
https://arxiv.org/abs/1912.08795.
"""

from __future__ import annotations

from tfleak.attacks.engine import GradientInversion
from tfleak.attacks.settings import FirstOrder, GroupConsistency, Objective, Trials

__all__ = ["GradInversion", "GRADINVERSION_PRIORS"]

# The paper's weights: a_TV 1e-4, a_l2 1e-6, a_BN 0.1, a_group 0.01.
GRADINVERSION_PRIORS = {"tv": 1e-4, "l2": 1e-6, "bn": 0.1, "group": 0.01}


class GradInversion(GradientInversion):
    """GradInversion with the paper's hyperparameters, scaled to a CPU; `repr` lists them all.

    The paper's choices (sec. 4): Adam at peak step size 0.1 (in [0, 1] pixel
    units) with cosine decay after a linear warm-up; Langevin noise a_n = 0.2;
    a_TV 1e-4, a_l2 1e-6, a_BN 0.1 (the first batch-norm layer's term x10, as
    DeepInversion), a_group 0.01; |G| = 8 seeds (`starts`), the consensus
    refreshed every 100 steps after a 100-step warm-up, registered by
    translation; the squared-L2 gradient distance; labels restored by
    GradInversion's rule (unique labels; use `label_strategy='counts'` for
    repeated ones); the batch-norm prior matches the victim's moving
    statistics (`bn_target='shared'` matches statistics a client shared).

    Scaled for a CPU: the paper runs 20,000 iterations on ImageNet with
    ResNet-50 on GPUs; here the default is 2,000 with a 50-step warm-up; pass
    `iterations=20_000` for the paper's budget. The priors here are means over
    pixels (see `tfleak.attacks.priors`), where the paper's are sums or norms,
    and the gradient term is not rescaled: the weights are the paper's
    numbers, but they weigh less against the gradient distance than in the
    paper.

    Args:
      iterations: Adam steps per trial.
      starts: seeds in the group (|G|).
      priors: prior name -> weight (default `GRADINVERSION_PRIORS`).
      learning_rate: peak step size, in [0, 1] pixel units.
      label_strategy: a restoration method, 'known' or 'optimize'.
      update: what the client shared (default `FedSGD()`).
      seed: seed of the first start.
      **settings: any other flat setting (`tfleak.attacks.settings.FLAT_SETTINGS`),
        e.g. `registration='none'` or `bn_target='shared'`.
    """

    def __init__(self, *, iterations=2000, starts=8, priors=None, learning_rate=0.1,
                 label_strategy="gradinversion", update=None, seed=0, **settings):  # fmt: skip
        super().__init__(
            objective=Objective(
                "l2",
                priors=dict(GRADINVERSION_PRIORS if priors is None else priors),
                bn_first_layer_scale=10.0,
                group=GroupConsistency(every=100, warmup=100, registration="translation"),
            ),
            solver=FirstOrder(
                "adam",
                iterations,
                learning_rate,
                schedule="cosine",
                warmup=50,
                langevin=0.2,
                snapshot_every=50,
            ),  # fmt: skip
            trials=Trials(starts=starts, seed=seed, tolerance=1e-3, stop_at_tolerance=False),
            label_strategy=label_strategy,
            update=update,
        )
        self._apply(settings)
