"""Datasets: private examples for gradient leakage, and Omniglot for model inversion."""

from tfleak.data.files import DATA_DIR_ENV, network_available, resolve_data_dir
from tfleak.data.images import (
    DATASETS,
    ImageDataset,
    load_dataset,
    load_example,
    load_image_file,
)
from tfleak.data.omniglot import (
    OMNIGLOT_SCHEMES,
    describe_scheme,
    load_omniglot,
    omniglot_scheme,
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
    "OMNIGLOT_SCHEMES",
    "describe_scheme",
    "load_omniglot",
    "omniglot_scheme",
]
