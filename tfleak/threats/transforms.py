"""Defences that transform the update after the client computed it.

Each is a small frozen `Defense` dataclass acting on the client's update (a
list of per-variable tensors, as `FedSGD.share` or `FedAvg.share` gives it),
with an identity limit; `attacker_view` is what an adaptive attacker applies to
its dummy update (the defence's deterministic part):

- `GaussianNoise(stddev)`: adds `N(0, stddev^2)` to every entry (DLG, Zhu et
  al. 2019, sec. 5.1). `stddev=0` is the identity. Noise has no
  deterministic part.
- `Prune(fraction)`: in every variable's tensor, the `fraction` of entries of
  smallest magnitude set to zero (DLG sec. 5.2, gradient pruning). 0 is the
  identity. The attacker reads the mask off the observed update's zeros.
- `Quantize(mode)`: 'float16' (round to half precision); 'sign' (signSGD);
  or k bits (an int 2..16): per tensor, `round(g / s * L) * s / L` with
  `s = max |g|` and `L = 2^(k-1) - 1` levels each side of zero (the scale is
  sent along). The error is at most `s / (2 L)`, so many bits approach the
  identity. The attacker sees the quantiser's cells (a dummy value counts as
  matched anywhere in the cell that rounds to the observed one; a smooth sign
  for 'sign').

DP-SGD changes how the client computes its update rather than transforming
it: it is `tfleak.threats.dpsgd.DPSGD`, not a `Defense`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence, Union

import tensorflow as tf

__all__ = ["Defense", "GaussianNoise", "Prune", "Quantize", "check_finite"]


def check_finite(value: float, name: str, minimum: float = 0.0, inclusive: bool = True) -> float:
    """`value` as a float; ValueError naming `name` unless finite and >= (or >) `minimum`."""
    value = float(value)
    ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
    if not ok:
        relation = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be a finite number {relation} {minimum:g}; got {value}.")
    return value


class Defense:
    """A transform of the computed update: the client's `apply`, the attacker's `attacker_view`."""

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
        check_finite(self.stddev, "the noise stddev")

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
