"""Gradient inversion attacks: DLG, iDLG, Inverting Gradients, GradInversion on one engine,
and closed-form recovery from a Dense layer (`AnalyticRecovery`)."""

from tfleak.attacks import labels, priors, registration
from tfleak.attacks.analytic import AnalyticRecovery
from tfleak.attacks.candidate import DUMMY_INITS, SCHEDULES, Candidate, make_schedule
from tfleak.attacks.dlg import DLG, IDLG
from tfleak.attacks.dummy import DummyData
from tfleak.attacks.engine import GradientInversion
from tfleak.attacks.gradinversion import GRADINVERSION_PRIORS, GradInversion
from tfleak.attacks.inverting_gradients import InvertingGradients
from tfleak.attacks.many import attack_many
from tfleak.attacks.objectives import GRADIENT_DISTANCES, GradientMatching, get_gradient_distance
from tfleak.attacks.result import AttackResult, Snapshot
from tfleak.attacks.settings import (
    BN_TARGETS,
    LBFGS,
    OPTIMIZERS,
    FirstOrder,
    GroupConsistency,
    Objective,
    Trials,
)

__all__ = [
    "labels",
    "priors",
    "registration",
    "AnalyticRecovery",
    "GradientInversion",
    "Objective",
    "LBFGS",
    "FirstOrder",
    "Trials",
    "GroupConsistency",
    "DLG",
    "IDLG",
    "InvertingGradients",
    "GradInversion",
    "attack_many",
    "GRADINVERSION_PRIORS",
    "OPTIMIZERS",
    "BN_TARGETS",
    "SCHEDULES",
    "DUMMY_INITS",
    "Candidate",
    "DummyData",
    "make_schedule",
    "GRADIENT_DISTANCES",
    "GradientMatching",
    "get_gradient_distance",
    "AttackResult",
    "Snapshot",
]
