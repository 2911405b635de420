"""Datasets: private examples for gradient leakage, and Omniglot for model inversion."""

from tfleak.data.files import DATA_DIR_ENV, network_available, resolve_data_dir
from tfleak.data.images import (
    DATASETS,
    ImageDataset,
    load_dataset,
    load_example,
    load_image_file,
)

__all__ = [
    "DATA_DIR_ENV",
    "network_available",
    "resolve_data_dir",
    "DATASETS",
    "ImageDataset",
    "load_dataset",
    "load_example",
    "load_image_file",
]
