"""Defences of the shared update, chained, and what an adaptive attacker does about them.

A chain is at most one client rule, DP-SGD (`tfleak.threats.dpsgd.DPSGD`,
first), then transforms of the computed update (`tfleak.threats.transforms`:
`GaussianNoise`, `Prune`, `Quantize`), each with an identity limit.

`DefendedUpdate(update, defenses, adaptive)` chains them on an update for both
sides: `share` is the client's release (defences applied in order), `simulate`
is the attacker's model of it. A naive attacker (`adaptive=False`) matches its
dummy update to the defended observation as if nothing had been done; an
adaptive one applies each defence's deterministic part to its dummy update
(`Defense.attacker_view`): the pruning mask read off the observed update's
zeros, the quantiser's cells, DP-SGD's per-example clipping. Noise has no
deterministic part.

Strings `NAME:STRENGTH` (`noise:1e-3`, `dpsgd:1.0/0.5` for clip / noise
multiplier, `prune:0.9`, `quantize:8`, `quantize:float16`, `quantize:sign`)
build defences with `parse_defense`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

from tfleak.threats.dpsgd import DPSGD
from tfleak.threats.federated import FedAvg, FedSGD
from tfleak.threats.transforms import Defense, GaussianNoise, Prune, Quantize

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

DEFENSES = {"noise": GaussianNoise, "dpsgd": DPSGD, "prune": Prune, "quantize": Quantize}


def parse_defense(text: str) -> Union[Defense, DPSGD]:
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
            if not isinstance(defense, (Defense, DPSGD)):
                raise ValueError(f"defenses must be Defense or DPSGD objects; got {defense!r}.")
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
