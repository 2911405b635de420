"""Many independent attacks on one victim, run as one graph (and across replicas).

An audit or a study attacks many observations of one victim: one shared
update per client batch. `attack_many(attack, victim, observations)` runs
them together through the same restart loop as a single attack (one attack
is a batch of one); see `GradientInversion.attack_many` for the layout, the
strategy and the errors.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["attack_many"]


def attack_many(attack, victim, observed_gradients: Sequence[Sequence], **kwargs) -> list:
    """`attack.attack_many(victim, observed_gradients, **kwargs)`: every attack at once.

    Args:
      attack: a `GradientInversion` (DLG, IDLG, InvertingGradients, ...).
      victim: the victim all observations came from.
      observed_gradients: A >= 1 shared updates of one batch size.
      **kwargs: `batch_size`, `labels`, `ground_truths`, `strategy`, `verbose`,
        `layout` ('auto', 'grouped': a weight copy per attack, see
        `tfleak.attacks.stacked`; 'per_attack').

    Returns:
      A list of A `AttackResult`s, in the order of `observed_gradients`.
    """
    return attack.attack_many(victim, observed_gradients, **kwargs)
