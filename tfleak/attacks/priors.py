"""Image priors: what an attacker adds to gradient matching to make dummy data look real.

Each prior maps the dummy data of all starts, `[starts, batch, h, w, c]`
float32 (images in [0, 1]), to one value per start, `[starts]`; an attack
minimises `distance + sum_k weight_k * prior_k` (Inverting Gradients eq. 4;
GradInversion eq. 2 and its fidelity priors R_fidelity = a_TV R_TV + a_l2 R_l2
+ a_BN R_BN). Registered by name in `PRIORS`:

- `tv`: total variation (Rudin, Osher, Fatemi 1992), anisotropic, as the
  mean absolute difference of horizontal plus vertical neighbours
  (Inverting Gradients, Geiping et al. 2020, sec. 4).
- `l2`: the squared L2 norm of the batch (GradInversion's R_l2, Yin et al.
  2021, eq. 4), here its mean over pixels so the weight does not depend on the
  image size.
- `bn`: batch-norm statistics (DeepInversion's feature-distribution
  regulariser, Yin et al. 2020, eq. 5, as GradInversion's R_BN, eq. 5): for
  every batch-norm layer l, `||mu_l(x) - mu_l||_2 + ||sigma^2_l(x) - sigma^2_l||_2`
  between the dummy batch's per-channel statistics at the layer's input and
  the target statistics (the victim's moving statistics, known to the server,
  or the client's batch statistics when the threat model says they are shared).
  The first layer's term is multiplied by `first_layer_scale`.
- `group`: group consistency (GradInversion, Yin et al. 2021, sec. 3.3, eq. 8):
  the squared distance of each start (seed) from the group's consensus, the
  registered mean of all seeds (`tfleak.attacks.registration.group_consensus`), held
  fixed between refreshes; here its mean over pixels, like `l2`. Zero until the
  attack has formed a consensus (after its warm-up).

Priors see all starts at once, so a prior that couples starts fits the same
interface.

Papers: Inverting Gradients https://arxiv.org/abs/2003.14053; GradInversion
https://arxiv.org/abs/2104.07586; DeepInversion https://arxiv.org/abs/1912.08795.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import tensorflow as tf

__all__ = [
    "PriorContext",
    "total_variation",
    "l2_norm",
    "batch_norm_statistics",
    "group_consistency",
    "PRIORS",
    "get_prior",
]


@dataclasses.dataclass
class PriorContext:
    """What a prior may look at besides the dummy data.

    Attributes:
      statistics: per batch-norm layer, `(mean [starts, channels],
        variance [starts, channels])` of the dummy batch at that layer's input,
        from the same forward pass as the gradient.
      targets: per batch-norm layer, `(mean [channels], variance [channels])`
        that the statistics should match.
      consensus: `[batch, h, w, c]`, the group's consensus for the `group`
        prior (None: no consensus yet).
      consensus_weight: scalar float32 multiplying the `group` prior, 0 before
        the first consensus is formed and 1 after.
    """

    statistics: Sequence = ()
    targets: Sequence = ()
    consensus: Optional[tf.Tensor] = None
    consensus_weight: Optional[tf.Tensor] = None


def total_variation(data: tf.Tensor, context: Optional[PriorContext] = None) -> tf.Tensor:
    """Anisotropic total variation per start, `[starts]` float32 >= 0.

    `mean |x[i, j+1] - x[i, j]| + mean |x[i+1, j] - x[i, j]|` over the batch,
    channels and pixel pairs of each start. A constant image scores 0.
    """
    dx = tf.abs(data[:, :, :, 1:, :] - data[:, :, :, :-1, :])
    dy = tf.abs(data[:, :, 1:, :, :] - data[:, :, :-1, :, :])
    return tf.reduce_mean(dx, axis=[1, 2, 3, 4]) + tf.reduce_mean(dy, axis=[1, 2, 3, 4])


def l2_norm(data: tf.Tensor, context: Optional[PriorContext] = None) -> tf.Tensor:
    """Mean squared pixel value per start, `[starts]` float32 >= 0."""
    return tf.reduce_mean(tf.square(data), axis=[1, 2, 3, 4])


def batch_norm_statistics(
    data: tf.Tensor, context: PriorContext, first_layer_scale: float = 1.0
) -> tf.Tensor:
    """DeepInversion's feature-statistics distance per start, `[starts]` float32 >= 0.

    Zero exactly when every batch-norm layer's input statistics equal the
    targets; zero for a victim without batch norm.
    """
    total = tf.zeros(tf.shape(data)[:1])
    for index, ((mean, variance), (target_mean, target_variance)) in enumerate(
        zip(context.statistics, context.targets)
    ):
        term = tf.norm(mean - target_mean, axis=-1) + tf.norm(variance - target_variance, axis=-1)
        total += (first_layer_scale if index == 0 else 1.0) * term
    return total


def group_consistency(data: tf.Tensor, context: PriorContext) -> tf.Tensor:
    """Mean squared distance of every start from the consensus, `[starts]` float32 >= 0.

    `mean (x_s - consensus)^2` over the batch and pixels of start `s`, times
    `context.consensus_weight`; zero without a consensus. The consensus is a
    constant here (no gradient flows into it).
    """
    if context is None or context.consensus is None:
        return tf.zeros(tf.shape(data)[:1])
    consensus = tf.stop_gradient(context.consensus)[None]
    value = tf.reduce_mean(tf.square(data - consensus), axis=[1, 2, 3, 4])
    if context.consensus_weight is not None:
        value = value * context.consensus_weight
    return value


PRIORS = {
    "tv": total_variation,
    "l2": l2_norm,
    "bn": batch_norm_statistics,
    "group": group_consistency,
}


def get_prior(name: str):
    """The prior registered as `name`.

    Raises:
      ValueError: unknown name (the message lists the registered ones).
    """
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; choose one of {', '.join(sorted(PRIORS))}.")
    return PRIORS[name]
