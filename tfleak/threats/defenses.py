"""Defences of the shared update, and what an adaptive attacker does about them.

Each defence is a small frozen dataclass acting on the client's update (a list
of per-variable tensors, as `FedSGD.share` or `FedAvg.share` gives it), with an
identity limit:

- `GaussianNoise(stddev)`: adds `N(0, stddev^2)` to every entry (DLG, Zhu et
  al. 2019, sec. 5.1). `stddev=0` is the identity.
- `DPSGD(l2_norm_clip, noise_multiplier)`: the client computes DP-SGD's update
  instead of the plain gradient (Abadi et al. 2016, alg. 1): every example's
  gradient clipped to L2 norm `l2_norm_clip`, the sum noised with
  `N(0, (noise_multiplier * l2_norm_clip)^2)` (`tfleak.privacy.query`, with
  tensorflow-privacy's `GaussianSumQuery` semantics), divided by the batch
  size. With a clip above every example's gradient norm and
  `noise_multiplier=0` it is the gradient of the mean loss. First in a chain;
  with FedAvg every local step is a DP-SGD step.
- `Prune(fraction)`: in every variable's tensor, the `fraction` of entries of
  smallest magnitude set to zero (DLG sec. 5.2, gradient pruning). 0 is the
  identity.
- `Quantize(mode)`: 'float16' (round to half precision); 'sign' (signSGD);
  or k bits (an int 2..16): per tensor, `round(g / s * L) * s / L` with
  `s = max |g|` and `L = 2^(k-1) - 1` levels each side of zero (the scale is
  sent along). The error is at most `s / (2 L)`, so many bits approach the
  identity.

`DefendedUpdate(update, defenses, adaptive)` chains them on an update for both
sides: `share` is the client's release (defences applied in order), `simulate`
is the attacker's model of it. A naive attacker (`adaptive=False`) matches its
dummy update to the defended observation as if nothing had been done; an
adaptive one applies each defence's deterministic part to its dummy update
(`Defense.attacker_view`): the pruning mask read off the observed update's
zeros, the quantiser's cells (a dummy value counts as matched anywhere in the
cell that rounds to the observed one; a smooth sign for 'sign'), DP-SGD's
per-example clipping. Noise has no deterministic part.

Strings `NAME:STRENGTH` (`noise:1e-3`, `dpsgd:1.0/0.5` for clip / noise
multiplier, `prune:0.9`, `quantize:8`, `quantize:float16`, `quantize:sign`)
build defences with `parse_defense`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Union

import tensorflow as tf

from tfleak.privacy.accounting import gaussian_epsilon
from tfleak.privacy.query import clipped_sum, gaussian_sum
from tfleak.threats.federated import FedAvg, FedSGD

__all__ = [
    "DEFENSES",
    "Defense",
    "GaussianNoise",
    "DPSGD",
    "Prune",
    "Quantize",
    "DefendedUpdate",
    "parse_defense",
    "parse_defenses",
]

_FORMS = "noise:1e-3, dpsgd:1.0/0.5 (clip/noise multiplier), prune:0.9, quantize:8|float16|sign"


def _finite(value: float, name: str, minimum: float = 0.0, inclusive: bool = True) -> float:
    value = float(value)
    ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
    if not ok:
        relation = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be a finite number {relation} {minimum:g}; got {value}.")
    return value


class Defense:
    """A defence of the shared update: the client's `apply`, the attacker's `attacker_view`."""

    name = ""

    def apply(self, update: Sequence[tf.Tensor], seed: int = 0) -> list:
        """The defended update the client shares (random defences use `seed`)."""
        raise NotImplementedError

    def attacker_view(self, dummy: Sequence[tf.Tensor], observed: Sequence[tf.Tensor]) -> list:
        """The deterministic part applied to the attacker's dummy update (default: none)."""
        del observed
        return list(dummy)

    @property
    def spec(self) -> str:
        """The `NAME:STRENGTH` string that `parse_defense` turns back into this defence."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class GaussianNoise(Defense):
    """Adds Gaussian noise of standard deviation `stddev` (update units) to every entry."""

    stddev: float

    name = "noise"

    def __post_init__(self):
        _finite(self.stddev, "the noise stddev")

    def apply(self, update, seed: int = 0) -> list:
        noisy = []
        for i, u in enumerate(update):
            noise = tf.random.stateless_normal(tf.shape(u), seed=[int(seed), i], dtype=u.dtype)
            noisy.append(u + self.stddev * noise)
        return noisy

    @property
    def spec(self) -> str:
        return f"noise:{self.stddev:g}"


@dataclasses.dataclass(frozen=True)
class Prune(Defense):
    """Sets the `fraction` of smallest-magnitude entries of every tensor to zero.

    Attributes:
      fraction: share of each tensor's entries removed, in [0, 1); a tensor
        of n entries keeps its `n - round(fraction * n)` largest magnitudes.
    """

    fraction: float

    name = "prune"

    def __post_init__(self):
        if not (math.isfinite(float(self.fraction)) and 0.0 <= self.fraction < 1.0):
            raise ValueError(
                f"the pruned fraction must be in [0, 1) (prune:0.9 removes 90 % of each tensor's "
                f"entries); got {self.fraction}."
            )

    def apply(self, update, seed: int = 0) -> list:
        del seed
        pruned = []
        for u in update:
            flat = tf.reshape(u, [-1])
            size = int(flat.shape[0])
            keep = size - int(round(self.fraction * size))
            if keep >= size:
                pruned.append(u)
                continue
            _, indices = tf.math.top_k(tf.abs(flat), k=keep)
            mask = tf.scatter_nd(indices[:, None], tf.ones([keep], u.dtype), [size])
            pruned.append(tf.reshape(flat * mask, tf.shape(u)))
        return pruned

    def attacker_view(self, dummy, observed) -> list:
        """The dummy update where the observed one is nonzero, zero elsewhere (the mask)."""
        return [d * tf.cast(tf.not_equal(o, 0.0), d.dtype) for d, o in zip(dummy, observed)]

    @property
    def spec(self) -> str:
        return f"prune:{self.fraction:g}"


@dataclasses.dataclass(frozen=True)
class Quantize(Defense):
    """Quantises every entry: mode 'float16', 'sign', or a number of bits (int 2..16)."""

    mode: Union[str, int]

    name = "quantize"

    def __post_init__(self):
        if self.mode in ("float16", "sign"):
            return
        if (
            isinstance(self.mode, bool)
            or not isinstance(self.mode, int)
            or not 2 <= self.mode <= 16
        ):
            raise ValueError(
                f"quantize takes 'float16', 'sign' or a number of bits from 2 to 16 "
                f"(e.g. quantize:8; one bit is quantize:sign); got {self.mode!r}."
            )

    def _quantise(self, u: tf.Tensor) -> tf.Tensor:
        if self.mode == "float16":
            return tf.cast(tf.cast(u, tf.float16), u.dtype)
        if self.mode == "sign":
            return tf.sign(u)
        levels = float(2 ** (self.mode - 1) - 1)
        scale = tf.reduce_max(tf.abs(u))
        safe = tf.where(scale > 0, scale, tf.ones_like(scale))
        return tf.round(u / safe * levels) * safe / levels

    def apply(self, update, seed: int = 0) -> list:
        del seed
        return [self._quantise(u) for u in update]

    def attacker_view(self, dummy, observed) -> list:
        """The dummy update seen through the quantiser, differentiably.

        Rounding is piecewise constant, so matching `quantise(d)` gives an
        optimiser no gradient (and L-BFGS's line search no decrease). Instead:
        - k bits and float16: every observed value `o` stands for the cell
          `[o - h, o + h]` of values that round to it (`h = s / (2 L)`, with
          the scale `s = max |o|` the observation keeps; `h = |o| 2^-11` for
          float16), and the view `d - clip(d - o, -h, h)` equals `o` wherever
          `d` rounds to `o`, so the distance counts only how far `d` is outside
          its cell;
        - sign: a smooth sign, `tanh(d / t)` with `t = max |d| / 20` (held
          constant), which is +-1 for all but the smallest entries.
        """
        if self.mode == "sign":
            return [
                tf.tanh(d / tf.stop_gradient(tf.reduce_max(tf.abs(d)) / 20.0 + 1e-12))
                for d in dummy
            ]
        views = []
        for d, o in zip(dummy, observed):
            if self.mode == "float16":
                half_cell = tf.abs(o) * 2.0**-11
            else:
                half_cell = tf.reduce_max(tf.abs(o)) / (2.0 * (2 ** (self.mode - 1) - 1))
            views.append(d - tf.clip_by_value(d - o, -half_cell, half_cell))
        return views

    @property
    def spec(self) -> str:
        return f"quantize:{self.mode}"


@dataclasses.dataclass(frozen=True)
class DPSGD(Defense):
    """DP-SGD on the client: per-example clipping, Gaussian noise on the sum, mean.

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
        _finite(self.l2_norm_clip, "l2_norm_clip", inclusive=False)
        _finite(self.noise_multiplier, "noise_multiplier")

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

    def apply(self, update, seed: int = 0) -> list:
        raise ValueError(
            "dpsgd clips per-example gradients, so it computes the update from the data: put it "
            "first in the chain (DefendedUpdate applies it through private_gradient)."
        )

    def epsilon(self, delta: float = 1e-5, steps: int = 1) -> float:
        """Epsilon at `delta` by RDP accounting of `steps` Gaussian releases that each
        use an example (sampling rate 1: no amplification by sampling).

        Infinite for `noise_multiplier=0`.
        """
        return gaussian_epsilon(self.noise_multiplier, int(steps), delta)

    @property
    def spec(self) -> str:
        return f"dpsgd:{self.l2_norm_clip:g}/{self.noise_multiplier:g}"


DEFENSES = {"noise": GaussianNoise, "dpsgd": DPSGD, "prune": Prune, "quantize": Quantize}


def parse_defense(text: str) -> Defense:
    """Builds a defence from `NAME:STRENGTH` (e.g. 'noise:1e-3', 'dpsgd:1.0/0.5').

    Raises:
      ValueError: naming what is wrong (no strength, an unknown name, a
        strength that is not a number or out of range) and the expected form.
    """
    text = str(text).strip()
    name, colon, strength = text.partition(":")
    name, strength = name.strip().lower(), strength.strip()
    if name not in DEFENSES:
        raise ValueError(
            f"unknown defence {name!r} in {text!r}; choose one of {', '.join(DEFENSES)}, "
            f"written NAME:STRENGTH: {_FORMS}."
        )
    if not colon or not strength:
        raise ValueError(f"defence {text!r} needs a strength, written NAME:STRENGTH: {_FORMS}.")
    try:
        if name == "dpsgd":
            clip, slash, multiplier = strength.partition("/")
            if not slash:
                raise ValueError(
                    f"dpsgd takes the clip norm and the noise multiplier as CLIP/MULTIPLIER "
                    f"(e.g. dpsgd:1.0/0.5); got {text!r}."
                )
            return DPSGD(float(_number(clip, text)), float(_number(multiplier, text)))
        if name == "quantize":
            if strength.lower() in ("float16", "fp16", "sign"):
                return Quantize("float16" if strength.lower() == "fp16" else strength.lower())
            if not strength.isdigit():
                raise ValueError(
                    f"quantize takes 'float16', 'sign' or a number of bits (e.g. quantize:8); "
                    f"got {text!r}."
                )
            return Quantize(int(strength))
        return DEFENSES[name](_number(strength, text))
    except ValueError as error:
        if text in str(error):
            raise
        raise ValueError(f"{text!r}: {error}") from None


def _number(value: str, text: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(
            f"the strength {value!r} in {text!r} is not a number; write NAME:STRENGTH: {_FORMS}."
        ) from None


def parse_defenses(texts: Optional[Sequence[str]]) -> tuple:
    """Defences from a list of `NAME:STRENGTH` strings, in order; `None`, [] or ['none']: ()."""
    texts = [t for t in (texts or []) if str(t).strip().lower() != "none"]
    return tuple(parse_defense(t) for t in texts)


@dataclasses.dataclass(frozen=True)
class DefendedUpdate:
    """An update (`FedSGD` or `FedAvg`) released through a chain of defences.

    Attributes:
      update: the client's update before the defences.
      defenses: applied in order; a `DPSGD` must come first. With FedAvg,
        every local step is a DP-SGD step on its mini-batch (clip each
        example's gradient at the current weights, noise the sum, average)
        and the other defences act on the final weight difference.
      adaptive: whether the attacker's `simulate` applies each defence's
        deterministic part to its dummy update (False: the naive attacker);
        for DP-SGD that is the per-example clipping in every step.

    Raises:
      ValueError: a DP-SGD defence that is not first.
    """

    update: object = dataclasses.field(default_factory=FedSGD)
    defenses: tuple = ()
    adaptive: bool = True

    def __post_init__(self):
        object.__setattr__(self, "defenses", tuple(self.defenses))
        for i, defense in enumerate(self.defenses):
            if not isinstance(defense, Defense):
                raise ValueError(f"defenses must be Defense objects; got {defense!r}.")
            if isinstance(defense, DPSGD):
                if i != 0:
                    raise ValueError(
                        f"{defense.spec} computes the update from per-example gradients; put it "
                        "first in the chain of defences."
                    )

    @property
    def name(self) -> str:
        return self.update.name

    @property
    def dpsgd(self) -> Optional[DPSGD]:
        return self.defenses[0] if self.defenses and isinstance(self.defenses[0], DPSGD) else None

    def steps(self, batch_size: int) -> int:
        return self.update.steps(batch_size)

    def share(self, victim, images, labels, seed: int = 0) -> list:
        """The client's release: the update, then each defence in order (seeded noise)."""
        rest = self.defenses
        if self.dpsgd is not None and isinstance(self.update, FedAvg):
            self.dpsgd.check_victim(victim)
            images = victim.check_images(images)
            probabilities = victim.labels_to_probabilities(labels)
            update = self.update.unroll(victim, images, probabilities, self.dpsgd.noised_mean)
            rest = rest[1:]
        elif self.dpsgd is not None:
            update, rest = self.dpsgd.private_gradient(victim, images, labels), rest[1:]
        else:
            update = self.update.share(victim, images, labels)
        for i, defense in enumerate(rest):
            update = defense.apply(update, seed=seed * 1000 + i)
        return update

    def simulate(self, victim, images, probabilities, observed=None, statistics=False):
        """The attacker's dummy update: naive, or with the defences' deterministic parts."""
        if not self.adaptive:
            return self.update.simulate(victim, images, probabilities, observed, statistics)
        rest = self.defenses
        if self.dpsgd is not None:
            if isinstance(self.update, FedAvg):

                def clipped(victim, weights, x, p):
                    return self.dpsgd.clipped_mean(victim, x, p, weights)

                update = self.update.unroll(victim, images, probabilities, clipped)
            else:
                update = self.dpsgd.clipped_mean(victim, images, probabilities)
            stats = victim.batch_statistics(images) if statistics else []
            rest = rest[1:]
        else:
            update, stats = self.update.simulate(
                victim, images, probabilities, observed, statistics
            )
        for defense in rest:
            update = defense.attacker_view(update, observed)
        return update, stats

    def gradient_estimate(self, observed, batch_size: int) -> list:
        """As the bare update's (the defences' distortion is not undone)."""
        return self.update.gradient_estimate(observed, batch_size)

    def epsilon(self, delta: float = 1e-5, batch_size: Optional[int] = None) -> Optional[float]:
        """DP-SGD's epsilon of the release at `delta`; None without DP-SGD.

        With FedAvg, the Gaussian releases of the local steps that use one
        example compose (the mini-batches of one pass are disjoint, so an
        example is in `ceil(K / mini-batches)` of the K steps); `batch_size`,
        the client's batch, is then required.

        Raises:
          ValueError: FedAvg without `batch_size`.
        """
        if self.dpsgd is None:
            return None
        return self.dpsgd.epsilon(delta, steps=self.uses_per_example(batch_size))

    def uses_per_example(self, batch_size: Optional[int] = None) -> int:
        """How many of the client's gradient steps use one example (the most-used one)."""
        if not isinstance(self.update, FedAvg):
            return 1
        if batch_size is None:
            raise ValueError("FedAvg's epsilon depends on the client's batch: pass batch_size.")
        return self.update.uses_per_example(int(batch_size))
