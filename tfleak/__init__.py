"""tfleak: how much private data leaks from what a Keras model shares.

Gradient leakage (DLG, iDLG) on victims that expose `gradient(x, y)`, model
inversion on a split model, and what differential privacy buys back.
"""

from tfleak import attacks, data, distribute, labels, metrics, models, plotting
from tfleak.attacks import DLG, IDLG, AttackResult, DummyData
from tfleak.distribute import get_strategy
from tfleak.models import MLP, LeNet, SingleDense

__version__ = "0.1.0"

__all__ = [
    "attacks",
    "data",
    "distribute",
    "labels",
    "metrics",
    "models",
    "plotting",
    "DLG",
    "IDLG",
    "AttackResult",
    "DummyData",
    "get_strategy",
    "LeNet",
    "MLP",
    "SingleDense",
]
