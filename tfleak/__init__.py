"""tfleak: how much private data leaks from what a Keras model shares.

Gradient leakage (DLG, iDLG) on victims that expose `gradient(x, y)`, model
inversion on a split (on-device / server) model, and what differential privacy
buys back. The public API, one name per line:
"""

from tfleak import attacks
from tfleak import data
from tfleak import distribute
from tfleak import labels
from tfleak import metrics
from tfleak import models
from tfleak import plotting
from tfleak import privacy
from tfleak import split
from tfleak.attacks import DLG
from tfleak.attacks import IDLG
from tfleak.attacks import AttackResult
from tfleak.attacks import DummyData
from tfleak.distribute import get_strategy
from tfleak.models import MLP
from tfleak.models import LeNet
from tfleak.models import SingleDense
from tfleak.privacy import compute_epsilon
from tfleak.split import AttackModel
from tfleak.split import TargetModel

__version__ = "0.1.0"

__all__ = [
    "attacks",
    "data",
    "distribute",
    "labels",
    "metrics",
    "models",
    "plotting",
    "privacy",
    "split",
    "DLG",
    "IDLG",
    "AttackResult",
    "DummyData",
    "get_strategy",
    "LeNet",
    "MLP",
    "SingleDense",
    "compute_epsilon",
    "AttackModel",
    "TargetModel",
]
