"""DP-SGD as the client's rule for computing its update (Abadi et al. 2016, alg. 1).

`DPSGD(l2_norm_clip, noise_multiplier)`: the client computes DP-SGD's update
instead of the plain gradient: every example's gradient clipped to L2 norm
`l2_norm_clip`, the sum noised with `N(0, (noise_multiplier * l2_norm_clip)^2)`
(`tfleak.privacy.query`, with tensorflow-privacy's `GaussianSumQuery`
semantics), divided by the batch size. With a clip above every example's
gradient norm and `noise_multiplier=0` it is the gradient of the mean loss.
It comes first in a `tfleak.threats.defenses.DefendedUpdate` chain; with
FedAvg every local step is a DP-SGD step. An adaptive attacker applies its
deterministic part, the per-example clipping (`clipped_mean`).
"""

from __future__ import annotations

import dataclasses

from tfleak.privacy.accounting import gaussian_epsilon
from tfleak.privacy.query import clipped_sum, gaussian_sum
from tfleak.threats.transforms import check_finite

__all__ = ["DPSGD"]


@dataclasses.dataclass(frozen=True)
class DPSGD:
    """DP-SGD on the client: per-example clipping, Gaussian noise on the sum, mean.

    A client rule, not a `Defense`: it computes the update from the data
    (`private_gradient`), so it comes first in a `DefendedUpdate` chain, which
    applies it (and, for an adaptive attacker, its `clipped_mean`).

    `update = (sum_i clip(g_i, C) + N(0, (z C)^2 I)) / B` with `clip(g, C) = g
    min(1, C / ||g||_2)` over all variables together (Abadi et al. 2016, alg. 1;
    tensorflow-privacy's `GaussianSumQuery` clips and noises).

    Attributes:
      l2_norm_clip: C, the largest L2 norm of one example's gradient (in
        gradient units), > 0.
      noise_multiplier: z, the ratio of the noise standard deviation to the
        clipping norm, >= 0.

    The accounted release (`epsilon`) is one Gaussian mechanism on one batch,
    every example present (sampling rate 1, no amplification by sampling): the
    client's single FedSGD update, as the attacker sees it. Inside FedAvg every
    local step is such a step on its mini-batch (`DefendedUpdate`), and an
    example's privacy loss composes over the steps that use it. The per-example
    gradients come from one forward pass of the whole batch, so with batch
    normalisation on batch statistics an example's gradient depends on the
    others and the clip bounds no example's influence: such victims are refused.
    """

    l2_norm_clip: float
    noise_multiplier: float

    name = "dpsgd"

    def __post_init__(self):
        check_finite(self.l2_norm_clip, "l2_norm_clip", inclusive=False)
        check_finite(self.noise_multiplier, "noise_multiplier")

    def check_victim(self, victim) -> None:
        """Raises ValueError for a victim whose examples are coupled by batch statistics."""
        if victim.batch_norm_layers and victim.batch_norm == "train":
            raise ValueError(
                f"{victim.name} normalises with batch statistics, so one example's gradient "
                "depends on the others and DP-SGD's per-example clip bounds nothing; use "
                "as_victim(model, batch_norm='eval') (--batch_norm=eval) or a model without "
                "batch normalisation."
            )

    def _per_example(self, victim, images, probabilities, weights=None) -> list:
        return victim.example_gradients_at(weights, images, probabilities)

    def noised_mean(self, victim, weights, images, probabilities, seed=None) -> list:
        """One DP-SGD step's update at weight tensors `weights` (None: the victim's own).

        `(sum_i clip(g_i, C) + N(0, (z C)^2 I)) / B`; `seed` None draws the
        noise from TF's global generator.
        """
        records = self._per_example(victim, images, probabilities, weights)
        noised = gaussian_sum(
            records, self.l2_norm_clip, self.noise_multiplier * self.l2_norm_clip, seed
        )
        return [n / float(images.shape[0]) for n in noised]

    def private_gradient(self, victim, images, labels, seed=None) -> list:
        """The client's DP-SGD update on its batch (random: TF's global seed, or `seed`).

        Args:
          victim: the `tfleak.models.Victim`.
          images: `[batch, h, w, c]` float32 in [0, 1].
          labels: `[batch]` int or `[batch, classes]` probabilities.
          seed: optional int for reproducible noise.

        Returns:
          One float32 tensor per trainable variable.
        """
        self.check_victim(victim)
        images = victim.check_images(images)
        probabilities = victim.labels_to_probabilities(labels)
        return self.noised_mean(victim, None, images, probabilities, seed)

    def clipped_mean(self, victim, images, probabilities, weights=None) -> list:
        """The deterministic part: the mean of the clipped per-example gradients, no noise.

        `weights`: optional weight tensors to compute at (a FedAvg local step).
        """
        records = self._per_example(victim, images, probabilities, weights)
        return [t / float(images.shape[0]) for t in clipped_sum(records, self.l2_norm_clip)]

    def epsilon(self, delta: float = 1e-5, steps: int = 1) -> float:
        """Epsilon at `delta` by RDP accounting of `steps` Gaussian releases that each
        use an example (sampling rate 1: no amplification by sampling).

        Infinite for `noise_multiplier=0`.
        """
        return gaussian_epsilon(self.noise_multiplier, int(steps), delta)

    @property
    def spec(self) -> str:
        return f"dpsgd:{self.l2_norm_clip:g}/{self.noise_multiplier:g}"
