"""tfleak: how much private data leaks from what a Keras model shares.

Gradient leakage (closed-form recovery, DLG, iDLG, Inverting Gradients, GradInversion) on
any Keras classifier wrapped by `as_victim`, from one gradient (FedSGD) or local steps (FedAvg),
through defences of the shared update (`tfleak.threats.defenses`); model inversion on
a split (on-device / server) model, and what differential privacy buys back.
The public API, one name per line:
"""

from tfleak.cli import quiet_tensorflow_startup as _quiet_tensorflow_startup

_quiet_tensorflow_startup()

# ruff: noqa: E402

from tfleak import attacks
from tfleak import data
from tfleak import distribute
from tfleak import metrics
from tfleak import models
from tfleak import plotting
from tfleak import privacy
from tfleak import split
from tfleak import threats
from tfleak.attacks import labels
from tfleak.attacks import priors
from tfleak.threats import defenses
from tfleak.threats import federated
from tfleak.attacks import AnalyticRecovery
from tfleak.attacks import DLG
from tfleak.attacks import GradientInversion
from tfleak.attacks import IDLG
from tfleak.attacks import AttackResult
from tfleak.attacks import DummyData
from tfleak.attacks import GradInversion
from tfleak.attacks import InvertingGradients
from tfleak.attacks import attack_many
from tfleak.threats.defenses import DefendedUpdate
from tfleak.audit import AuditReport
from tfleak.audit import audit
from tfleak.distribute import get_strategy
from tfleak.threats.federated import FedAvg
from tfleak.threats.federated import FedSGD
from tfleak.models import MLP
from tfleak.models import LeNet
from tfleak.models import SingleDense
from tfleak.models import Victim
from tfleak.models import as_victim
from tfleak.models import trained_victim
from tfleak.privacy import DPModel
from tfleak.privacy import compute_epsilon
from tfleak.privacy import gaussian_epsilon
from tfleak.split import AttackModel
from tfleak.split import TargetModel

__version__ = "0.1.0"

__all__ = [
    "attacks",
    "data",
    "defenses",
    "distribute",
    "federated",
    "labels",
    "metrics",
    "models",
    "plotting",
    "priors",
    "privacy",
    "split",
    "threats",
    "AnalyticRecovery",
    "DLG",
    "GradientInversion",
    "IDLG",
    "AttackResult",
    "DummyData",
    "GradInversion",
    "InvertingGradients",
    "attack_many",
    "AuditReport",
    "audit",
    "DefendedUpdate",
    "get_strategy",
    "FedAvg",
    "FedSGD",
    "LeNet",
    "MLP",
    "SingleDense",
    "Victim",
    "as_victim",
    "trained_victim",
    "DPModel",
    "compute_epsilon",
    "gaussian_epsilon",
    "AttackModel",
    "TargetModel",
]
