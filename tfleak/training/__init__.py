"""Training: any compiled Keras model, resumably (`resumable`, its checkpoints in
`checkpoints`), and the CIFAR-10 victims the attacks use (`victims`)."""

from tfleak.training.checkpoints import epochs_done
from tfleak.training.resumable import (
    ON_CONFIG_CHANGE,
    ConfigMismatchError,
    TrainingRun,
    train_resumable,
)
from tfleak.training.victims import CACHE_DIR_ENV, default_cache_dir, train_victim

__all__ = [
    "ConfigMismatchError",
    "ON_CONFIG_CHANGE",
    "TrainingRun",
    "epochs_done",
    "train_resumable",
    "CACHE_DIR_ENV",
    "default_cache_dir",
    "train_victim",
]
