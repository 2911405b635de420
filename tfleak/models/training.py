"""Training a CIFAR-10 victim lives in `tfleak.training.victims`; its names stay importable
here."""

from tfleak.training.victims import CACHE_DIR_ENV, default_cache_dir, train_victim

__all__ = ["CACHE_DIR_ENV", "default_cache_dir", "train_victim"]
