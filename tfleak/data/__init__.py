"""Datasets: private examples for gradient leakage, CIFAR-10 for training victims, and
Omniglot for model inversion."""

from tfleak.data.batches import LABEL_MODES, sample_batch
from tfleak.data.cifar10 import CIFAR10_CLASSES, cifar10_arrays, cifar10_dataset
from tfleak.data.dataset import ImageDataset
from tfleak.data.decode import decode_image, load_image_file
from tfleak.data.files import DATA_DIR_ENV, network_available, resolve_data_dir
from tfleak.data.folders import index_image_folder, load_image_folder
from tfleak.data.images import (
    DATASETS,
    load_dataset,
    load_example,
    load_examples,
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
    "CIFAR10_CLASSES",
    "cifar10_arrays",
    "cifar10_dataset",
    "ImageDataset",
    "load_dataset",
    "load_examples",
    "load_example",
    "load_image_file",
    "decode_image",
    "index_image_folder",
    "load_image_folder",
    "LABEL_MODES",
    "sample_batch",
    "OMNIGLOT_SCHEMES",
    "describe_scheme",
    "load_omniglot",
    "omniglot_scheme",
]
