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
- `tv_norms`: total variation as DeepInversion defines it (`loss_var_l2` in
  NVlabs/DeepInversion; GradInversion's R_TV, eq. 4): the L2 norms of the
  differences of horizontal, vertical and both diagonal neighbours over the
  whole batch, summed. A sum over pixels, so it grows with the image size
  and the batch (as in the papers, whose weights assume 224 x 224 images).
- `l2_norms`: DeepInversion's image L2 prior (`loss_l2`; GradInversion's
  R_l2): the L2 norm of every image, averaged over the batch.
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
  fixed between refreshes, as the paper writes it: the L2 norm
  `||x_s - E(x_G)||_2` over the start's batch (not squared, not a mean).
  Zero until the attack has formed a consensus (after its warm-up). Its
  earlier form, a mean squared distance, is `group_consistency(...,
  form='mean_square')`.

Priors see all starts at once, so a prior that couples starts fits the same
interface.

Papers: Inverting Gradients https://arxiv.org/abs/2003.14053; GradInversion
https://arxiv.org/abs/2104.07586; DeepInversion https://arxiv.org/abs/1912.08795.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import tensorflow as tf

__all__ = [
    "PriorContext",
    "total_variation",
    "total_variation_norms",
    "l2_norm",
    "image_norms",
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


def total_variation_norms(data: tf.Tensor, context: Optional[PriorContext] = None) -> tf.Tensor:
    """DeepInversion's total variation per start, `[starts]` float32 >= 0.

    `||x[i, j+1] - x[i, j]||_2 + ||x[i+1, j] - x[i, j]||_2
    + ||x[i+1, j+1] - x[i, j]||_2 + ||x[i+1, j] - x[i, j+1]||_2`, each norm over
    the batch, pixel pairs and channels of one start (`loss_var_l2` of
    DeepInversion, Yin et al. CVPR 2020, https://arxiv.org/abs/1912.08795;
    GradInversion's R_TV). A constant image scores 0; a vertical step edge
    of height 1 across an `h`-row single-channel image scores
    `sqrt(h) + 0 + 2 sqrt(h - 1)`.
    """
    dx = data[:, :, :, 1:, :] - data[:, :, :, :-1, :]
    dy = data[:, :, 1:, :, :] - data[:, :, :-1, :, :]
    down_right = data[:, :, 1:, 1:, :] - data[:, :, :-1, :-1, :]
    down_left = data[:, :, 1:, :-1, :] - data[:, :, :-1, 1:, :]
    return tf.add_n([_norm(d) for d in (dx, dy, down_right, down_left)])


def image_norms(data: tf.Tensor, context: Optional[PriorContext] = None) -> tf.Tensor:
    """Mean over the batch of every image's L2 norm, `[starts]` float32 >= 0.

    `mean_b ||x_b||_2`, the norm over the image's pixels and channels
    (DeepInversion's `loss_l2`; GradInversion's R_l2). An image of ones of
    size h x w x c scores `sqrt(h w c)`.
    """
    return tf.reduce_mean(
        tf.norm(tf.reshape(data, tf.concat([tf.shape(data)[:2], [-1]], 0)), axis=-1), axis=1
    )


def _norm(tensor: tf.Tensor) -> tf.Tensor:
    """The L2 norm over all but the first axis, finite-gradient at 0, `[starts]`."""
    return tf.sqrt(tf.reduce_sum(tf.square(tensor), axis=[1, 2, 3, 4]) + 1e-24)


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


def group_consistency(
    data: tf.Tensor, context: PriorContext, form: str = "mean_square"
) -> tf.Tensor:
    """Distance of every start from the group's consensus, `[starts]` float32 >= 0.

    `form='norm'` (the 'group' prior, GradInversion eq. 8):
    `||x_s - consensus||_2` over the batch, pixels and channels of start `s`;
    its pull on the pixels has unit length whatever the distance.
    `form='mean_square'`: `mean (x_s - consensus)^2`, a pull proportional
    to the distance. Either times `context.consensus_weight`; zero without a
    consensus. The consensus is a constant here (no gradient flows into it).

    Raises:
      ValueError: an unknown `form`.
    """
    if form not in ("norm", "mean_square"):
        raise ValueError(f"unknown form {form!r}; choose norm or mean_square.")
    if context is None or context.consensus is None:
        return tf.zeros(tf.shape(data)[:1])
    consensus = tf.stop_gradient(context.consensus)[None]
    if form == "norm":
        value = _norm(data - consensus)
    else:
        value = tf.reduce_mean(tf.square(data - consensus), axis=[1, 2, 3, 4])
    if context.consensus_weight is not None:
        value = value * context.consensus_weight
    return value


# In the order error messages list them: the original four, then
# DeepInversion's norm forms of TV and L2.
PRIORS = {
    "bn": batch_norm_statistics,
    "group": functools.partial(group_consistency, form="norm"),
    "l2": l2_norm,
    "tv": total_variation,
    "l2_norms": image_norms,
    "tv_norms": total_variation_norms,
}


def get_prior(name: str):
    """The prior registered as `name`.

    Raises:
      ValueError: unknown name (the message lists the registered ones).
    """
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; choose one of {', '.join(PRIORS)}.")
    return PRIORS[name]
