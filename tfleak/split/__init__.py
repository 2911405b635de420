"""Model inversion on a split (on-device / server) model, and defences of the code.

- `model`: the split target (`TargetModel`), batch- or group-normalized, cut
  after any of its four conv blocks (codes 33x33x32, 13x13x32, 4x4x32, 1x1x32);
  `device_stage` / `server_stage` cut one trained target anywhere, sharing its weights.
- `attack`: the black-box attacker, a decoder learned from device queries (`AttackModel`),
  whose transposed convolutions follow the code's shape (`decoder_layers`).
- `whitebox`: regularised maximum-likelihood inversion of the saved on-device stage.
- `defenses`: noise on the code (Gaussian, clipped Laplace) and NoPeek training.
- `reidentification`: does a reconstruction point back at its own original?
- `study`, `runner`, `report`: the split-learning study (`benchmarks/split_study.py`): its
  steps (train a target, attack one cut, score it), its running order, its tables and figures.
"""

from tfleak.split.attack import (
    AttackModel,
    compile_attacker,
    decoder_layers,
    evaluate_attack,
    mean_image,
    mean_image_baseline_mse,
    reconstruct,
    surrogate_augmentation,
)
from tfleak.split.defenses import CodeNoise, NoPeekTarget, distance_correlation
from tfleak.split.model import (
    BLOCKS,
    CODE_SHAPE,
    CODE_SHAPES,
    CONV_BLOCKS,
    NORMALIZATIONS,
    TargetModel,
    compile_target,
    device_stage,
    on_device_layers,
    server_layers,
    server_stage,
)
from tfleak.split.reidentification import Reidentification, reidentify
from tfleak.split.unsplit import UnSplit
from tfleak.split.whitebox import WhiteBoxInversion, WhiteBoxResult
from tfleak.training import TrainingRun, train_resumable

__all__ = [
    "AttackModel",
    "compile_attacker",
    "decoder_layers",
    "evaluate_attack",
    "mean_image",
    "mean_image_baseline_mse",
    "reconstruct",
    "surrogate_augmentation",
    "CodeNoise",
    "NoPeekTarget",
    "distance_correlation",
    "BLOCKS",
    "CODE_SHAPE",
    "CODE_SHAPES",
    "CONV_BLOCKS",
    "NORMALIZATIONS",
    "TargetModel",
    "UnSplit",
    "compile_target",
    "device_stage",
    "on_device_layers",
    "server_layers",
    "server_stage",
    "Reidentification",
    "reidentify",
    "WhiteBoxInversion",
    "WhiteBoxResult",
    "TrainingRun",
    "train_resumable",
]
