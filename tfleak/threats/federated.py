"""What a federated client shares: one gradient (FedSGD) or several local steps (FedAvg).

A client holding a private batch `x` `[B, h, w, c]` with labels `y` sends the
server an update of the model's trainable weights `W_0`:

- `FedSGD`: the gradient of the mean loss, `g(W_0; x, y) = dL(F(x, W_0), y) / dW`
  (what `Victim.gradient` computes; DLG, iDLG and Inverting Gradients attack it).
- `FedAvg`: `K` local SGD steps on the batch, in a fixed order of mini-batches,
  and the weight difference (McMahan et al. 2017; Inverting Gradients, Geiping
  et al. 2020, sec. 5 "Federated averaging"):

      W_{k+1} = W_k - lr * g(W_k; x_{b(k)}, y_{b(k)}),   k = 0 .. K-1,
      shared:  W_K - W_0 = -lr * sum_k g(W_k; x_{b(k)}, y_{b(k)}),

  where `b(k) = k mod ceil(B / local_batch_size)` is the k-th mini-batch:
  consecutive slices of the batch, the last one possibly smaller, no shuffling.
  K = 1 on the whole batch gives `-lr * g(W_0; x, y)`.

Both sides use the same object. The client calls `share(victim, x, y)`; the
attacker calls `simulate(victim, x', y', observed)` inside its objective, which
unrolls the K steps differentiably with respect to the dummy data `x'` and
labels `y'` (as Inverting Gradients' `loss_steps` does through its
`MetaMonkey`): the victim is evaluated at weight *tensors* `W_k`
(`Victim.gradient_at`, Keras 3's `stateless_call`), so gradients flow through
every step and the victim's variables are never assigned. The attacker is
assumed to know K, the local learning rate and batch size, and the order of the
mini-batches (the server sets them in FedAvg).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import tensorflow as tf

__all__ = ["FedSGD", "FedAvg", "parse_update"]


def _gradient_at(victim, weights, images, probabilities) -> list:
    """`g(W; x, y)`: gradient of the mean soft cross entropy at weights `W` (tensors)."""
    return victim.gradient_at(weights, images, probabilities)


@dataclasses.dataclass(frozen=True)
class FedSGD:
    """One gradient of the mean loss on the whole batch (`Victim.gradient`)."""

    name = "gradient"

    @property
    def local_steps(self) -> int:
        return 1

    def steps(self, batch_size: int) -> int:
        """Local steps the client takes on a batch of `batch_size`: always 1."""
        return 1

    def share(self, victim, images, labels, seed: int = 0) -> list:
        """The client's update: `victim.gradient(images, labels)`.

        Args:
          victim: the `tfleak.models.Victim`.
          images: `[batch, h, w, c]` float32 in [0, 1].
          labels: `[batch]` int, or `[batch, classes]` float probabilities.
          seed: unused (the update is deterministic).

        Returns:
          One float32 tensor per trainable variable, of its shape.
        """
        del seed
        return victim.gradient(images, labels)

    def simulate(self, victim, images, probabilities, observed=None, statistics=False):
        """The attacker's differentiable copy of `share`, and the batch-norm statistics.

        Args:
          victim: the victim.
          images: `[batch, h, w, c]` float32 dummy images.
          probabilities: `[batch, classes]` float32 dummy label probabilities.
          observed: the observed update (unused here; defences read it).
          statistics: also return `(mean, variance)` per batch-norm layer.

        Returns:
          `(update, statistics)`: the update as `share` gives it, and a list
          (empty unless `statistics`).
        """
        del observed
        if statistics:
            return victim.gradient_and_statistics(images, probabilities)
        return victim.gradient(images, probabilities), []

    def gradient_estimate(self, observed: Sequence[tf.Tensor], batch_size: int) -> list:
        """The gradient of the mean loss read off an update (for label restoration)."""
        del batch_size
        return list(observed)


@dataclasses.dataclass(frozen=True)
class FedAvg:
    """`K` local SGD steps on the client's batch; shares `W_K - W_0` (see the module).

    Attributes:
      local_steps: K, the number of SGD steps; None: `local_epochs` passes
        over the batch, `ceil(B / local_batch_size)` steps each.
      local_learning_rate: the client's SGD step size (weight units per unit
        of gradient), > 0.
      local_batch_size: examples per local step; None: the whole batch.
      local_epochs: passes over the batch when `local_steps` is None.

    The update is accumulated as `-lr * sum_k g_k` rather than computed as the
    difference of two weight tensors, which is the same number without the
    float32 cancellation of `W_K - W_0`.

    Raises:
      ValueError: a non-positive step count, learning rate, batch size or
        number of epochs, or both `local_steps` and `local_epochs` given.
    """

    local_steps: Optional[int] = None
    local_learning_rate: float = 1e-4
    local_batch_size: Optional[int] = None
    local_epochs: Optional[int] = None

    name = "fedavg"

    def __post_init__(self):
        if self.local_steps is not None and self.local_epochs is not None:
            raise ValueError(
                f"give local_steps ({self.local_steps}) or local_epochs ({self.local_epochs}), "
                "not both: local_steps counts SGD steps, local_epochs passes over the batch."
            )
        for name in ("local_steps", "local_batch_size", "local_epochs"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 or None; got {value}.")
        rate = self.local_learning_rate
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError(f"local_learning_rate must be a finite number > 0; got {rate}.")

    def _batches(self, batch_size: int) -> list[tuple[int, int]]:
        size = (
            batch_size if self.local_batch_size is None else min(self.local_batch_size, batch_size)
        )
        return [(lo, min(lo + size, batch_size)) for lo in range(0, batch_size, size)]

    def steps(self, batch_size: int) -> int:
        """K: local steps the client takes on a batch of `batch_size` examples."""
        if self.local_steps is not None:
            return int(self.local_steps)
        return (self.local_epochs or 1) * len(self._batches(batch_size))

    def uses_per_example(self, batch_size: int) -> int:
        """How many of the K steps use the most-used example: `ceil(K / mini-batches)`."""
        return -(-self.steps(batch_size) // len(self._batches(batch_size)))

    def unroll(self, victim, images, probabilities, gradient_fn=None) -> list:
        """`-lr * sum_k g_k` over the K steps, `g_k = gradient_fn(victim, W_k, x_b(k), y_b(k))`.

        `gradient_fn` defaults to the gradient of the mean loss; a DP-SGD
        client passes its clipped and noised step (`tfleak.threats.defenses`).
        """
        gradient_fn = _gradient_at if gradient_fn is None else gradient_fn
        batch_size = int(images.shape[0])
        batches = self._batches(batch_size)
        weights = victim.current_weights()  # W_0, as tensors
        update = [tf.zeros_like(w) for w in weights]
        for k in range(self.steps(batch_size)):
            lo, hi = batches[k % len(batches)]
            current = weights if k == 0 else [w + u for w, u in zip(weights, update)]
            gradient = gradient_fn(victim, current, images[lo:hi], probabilities[lo:hi])
            update = [u - self.local_learning_rate * g for u, g in zip(update, gradient)]
        return update

    def share(self, victim, images, labels, seed: int = 0) -> list:
        """The client's update `W_K - W_0`.

        Args:
          victim: the `tfleak.models.Victim` (its variables are not changed).
          images: `[batch, h, w, c]` float32 in [0, 1].
          labels: `[batch]` int, or `[batch, classes]` float probabilities.
          seed: unused (the mini-batch order is fixed).

        Returns:
          One float32 tensor per trainable variable, of its shape.

        Raises:
          ValueError: bad images or labels (as `Victim.gradient`).
        """
        del seed
        images = victim.check_images(images)
        return self.unroll(victim, images, victim.labels_to_probabilities(labels))

    def simulate(self, victim, images, probabilities, observed=None, statistics=False):
        """The K steps unrolled on dummy data, differentiable in `images` and `probabilities`.

        The batch-norm statistics (for the 'bn' prior) are those of the whole
        dummy batch at the shared weights `W_0`, the statistics
        `victim.batch_statistics(x)` a client would share.

        Returns:
          `(update, statistics)`, as `FedSGD.simulate`.
        """
        del observed
        update = self.unroll(victim, images, probabilities)
        return update, (victim.batch_statistics(images) if statistics else [])

    def gradient_estimate(self, observed: Sequence[tf.Tensor], batch_size: int) -> list:
        """`-update / (lr * K)`: the mean of the K local gradients.

        Equal to the gradient of the mean loss for K = 1 on the whole batch; an
        approximation otherwise (the weights move between steps, and mini-batches
        of unequal size weigh unequally), which is how label restoration reads a
        FedAvg update (Geng et al. 2021, sec. 3).
        """
        scale = -1.0 / (self.local_learning_rate * self.steps(batch_size))
        return [tf.convert_to_tensor(u) * scale for u in observed]


def parse_update(spec) -> FedSGD | FedAvg:
    """The one parser of what a client shares, from a string (or an update, returned as is).

    Forms: 'gradient' or 'fedsgd' (one gradient); 'fedavg' (`FedAvg()`'s
    defaults: one pass over the batch at local learning rate 1e-4);
    'fedavg:K/LR' (K local steps at learning rate LR on the whole batch);
    'fedavg:K/LR/B' (mini-batches of B examples), e.g. 'fedavg:2/0.01'.

    Raises:
      ValueError: an unknown form, or values FedAvg refuses.
    """
    if isinstance(spec, (FedSGD, FedAvg)):
        return spec
    text = str(spec).strip().lower()
    if text in ("gradient", "fedsgd"):
        return FedSGD()
    name, _, values = text.partition(":")
    if name == "fedavg":
        if not values:
            return FedAvg()
        parts = values.split("/")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            steps, rate = int(parts[0]), float(parts[1])
            size = int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ValueError(
                f"cannot read {spec!r}; write fedavg:K/LR or fedavg:K/LR/B, e.g. fedavg:2/0.01."
            ) from None
        return FedAvg(local_steps=steps, local_learning_rate=rate, local_batch_size=size)
    raise ValueError(
        f"unknown update {spec!r}; use 'gradient' (FedSGD), 'fedavg', 'fedavg:K/LR' or "
        "'fedavg:K/LR/B', or a tfleak.threats.federated.FedSGD / FedAvg."
    )
