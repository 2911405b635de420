"""Gradient inversion attacks: DLG, iDLG."""

from tfleak.attacks.dlg import DLG, IDLG, OPTIMIZERS
from tfleak.attacks.dummy import DUMMY_INITS, DummyData
from tfleak.attacks.objectives import GRADIENT_DISTANCES, get_gradient_distance
from tfleak.attacks.result import AttackResult, Snapshot

__all__ = [
    "DLG",
    "IDLG",
    "OPTIMIZERS",
    "DUMMY_INITS",
    "DummyData",
    "GRADIENT_DISTANCES",
    "get_gradient_distance",
    "AttackResult",
    "Snapshot",
]
