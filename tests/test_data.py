"""Loaders read the real files a user has locally, and refuse bad input clearly."""

from __future__ import annotations

import numpy as np
import pytest

from tfleak.data import files, load_dataset, load_example, load_image_file


def test_mnist_from_the_original_idx_files(mnist):
    assert mnist.images.shape == (10_000, 28, 28, 1)
    assert mnist.images.dtype == np.float32
    assert 0.0 <= mnist.images.min() and mnist.images.max() == 1.0
    # The first test digits of MNIST are 7, 2, 1, 0, 4.
    assert mnist.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert mnist.num_classes == 10


def test_sample_images_need_no_network():
    sample = load_dataset("sample", image_size=32)
    assert sample.images.shape == (3, 32, 32, 3)
    assert 0.0 <= sample.images.min() and sample.images.max() <= 1.0


def test_index_out_of_range(shared_data):
    with pytest.raises(ValueError, match=r"index 10000 is out of range .* 0\.\.9999"):
        load_example("mnist", 10_000, data_dir=str(shared_data))


def test_mnist_without_network_or_data_dir_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(files, "_tfds_prepared", lambda name, data_dir: False)
    with pytest.raises(ValueError, match="no network to download it; pass --data_dir"):
        load_dataset("mnist")


def test_missing_data_dir():
    with pytest.raises(FileNotFoundError, match="does not exist; pass an existing --data_dir"):
        load_dataset("mnist", data_dir="/nonexistent/tfleak-data")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; choose one of sample"):
        load_dataset("svhn")


def test_image_file_that_does_not_exist(tmp_path):
    with pytest.raises(ValueError, match="does not exist; pass a PNG or JPEG path"):
        load_image_file(tmp_path / "missing.png")


def test_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match="is not an image PIL can read"):
        load_image_file(path)
