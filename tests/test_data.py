"""Loaders read the real files a user has locally, and refuse bad input clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tfleak.data import (
    files,
    load_dataset,
    load_example,
    load_examples,
    load_image_file,
    sample_batch,
)


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


# CIFAR-10 (JPEG): the image-folder copy in ../shared/data/cifar10, 1,000 JPEGs per class.

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


@pytest.fixture(scope="module")
def cifar10_dir(shared_data):
    folder = shared_data / "cifar10" / "test"
    if not all((folder / name).is_dir() for name in CIFAR10_NAMES):
        pytest.fail(f"CIFAR-10 JPEG folders missing from {folder} (see ../shared/data/README.md).")
    return shared_data


@pytest.fixture(scope="module")
def cifar10_test(cifar10_dir):
    return load_dataset("cifar10", "test", data_dir=str(cifar10_dir))


def _pil_pixels(path):
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), np.float32) / 255.0


def test_cifar10_jpeg_test_split(cifar10_test):
    assert cifar10_test.images.shape == (10_000, 32, 32, 3)
    assert cifar10_test.images.dtype == np.float32
    assert 0.0 <= cifar10_test.images.min() and cifar10_test.images.max() <= 1.0
    assert np.bincount(cifar10_test.labels).tolist() == [1000] * 10
    assert cifar10_test.num_classes == 10
    assert cifar10_test.class_names == CIFAR10_NAMES
    # Sorted class, then sorted file: the first image is airplane/0000.jpg, the last truck/0999.
    assert cifar10_test.labels[0] == 0 and cifar10_test.labels[-1] == 9
    assert cifar10_test.files[0].endswith("airplane/0000.jpg")
    # Numbers measured on it are reported under the name of what it is.
    assert cifar10_test.description == "CIFAR-10 (JPEG)"


def test_reading_indices_decodes_only_those_files(cifar10_dir, cifar10_test, monkeypatch):
    from tfleak.data import folders

    decoded = []
    decode = folders.decode_image
    monkeypatch.setattr(folders, "decode_image", lambda p, c: decoded.append(p) or decode(p, c))
    # Index = 1000 * label + file number, so 3017 is cat/0017.jpg.
    indices = [3017, 0, 9999, 3017]
    images, labels, num_classes = load_examples("cifar10", indices, data_dir=str(cifar10_dir))
    assert len(decoded) == 4
    assert labels.tolist() == [3, 0, 9, 3] and num_classes == 10
    test = cifar10_dir / "cifar10" / "test"
    for image, path in zip(images, ["cat/0017", "airplane/0000", "truck/0999", "cat/0017"]):
        np.testing.assert_array_equal(image, _pil_pixels(test / f"{path}.jpg"))
    np.testing.assert_array_equal(images, cifar10_test.images[indices])


def test_load_example_reads_one_cifar10_jpeg(cifar10_dir):
    image, label, num_classes = load_example("cifar10", 5_000, data_dir=str(cifar10_dir))
    assert image.shape == (32, 32, 3) and (label, num_classes) == (5, 10)
    with pytest.raises(ValueError, match=r"index 10000 is out of range .* 0\.\.9999"):
        load_example("cifar10", 10_000, data_dir=str(cifar10_dir))


def test_partial_cifar10_copy_is_refused(cifar10_dir, tmp_path):
    for name in CIFAR10_NAMES:
        (tmp_path / "cifar10" / "test" / name).mkdir(parents=True)
        shutil.copy(
            cifar10_dir / "cifar10" / "test" / name / "0000.jpg",
            tmp_path / "cifar10" / "test" / name,
        )
    with pytest.raises(ValueError, match="holds 10 images, but CIFAR-10's test split has 10,000"):
        load_dataset("cifar10", data_dir=str(tmp_path))


# Image folders: one sub-folder per class.


@pytest.fixture
def image_folder(cifar10_dir, tmp_path):
    """cat: 2 JPEGs, dog: 1 JPEG + 1 in a nested folder, ship: a PNG (lossless copy of a JPEG)."""
    from PIL import Image

    source = cifar10_dir / "cifar10" / "test"
    root = tmp_path / "pets"
    for name in ("cat", "dog", "ship"):
        (root / name).mkdir(parents=True)
    shutil.copy(source / "cat" / "0001.jpg", root / "cat" / "b.jpg")
    shutil.copy(source / "cat" / "0000.jpg", root / "cat" / "a.jpg")
    shutil.copy(source / "dog" / "0000.jpg", root / "dog" / "x.jpg")
    (root / "dog" / "more").mkdir()
    shutil.copy(source / "dog" / "0001.jpg", root / "dog" / "more" / "y.jpg")
    with Image.open(source / "ship" / "0000.jpg") as image:
        image.save(root / "ship" / "s.png")
    (root / "ship" / "notes.txt").write_text("not an image: ignored")
    (root / ".DS_Store").write_text("hidden: ignored")
    return root, source


def test_image_folder_labels_and_order(image_folder):
    root, source = image_folder
    dataset = load_dataset("folder", data_dir=str(root), image_size=32)
    assert dataset.class_names == ["cat", "dog", "ship"] and dataset.num_classes == 3
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2]
    names = [Path(f).relative_to(root).as_posix() for f in dataset.files]
    assert names == ["cat/a.jpg", "cat/b.jpg", "dog/more/y.jpg", "dog/x.jpg", "ship/s.png"]
    expected = ["cat/0000", "cat/0001", "dog/0001", "dog/0000", "ship/0000"]
    for image, path in zip(dataset.images, expected):
        np.testing.assert_array_equal(image, _pil_pixels(source / f"{path}.jpg"))
    assert dataset.description == f"image folder {root}"


def test_image_folder_resizes_reads_greyscale_and_indices(image_folder):
    root, _ = image_folder
    full = load_dataset("folder", data_dir=str(root), image_size=16)
    assert full.images.shape == (5, 16, 16, 3)
    some = load_dataset("folder", data_dir=str(root), image_size=16, indices=[4, 1])
    assert some.labels.tolist() == [2, 0] and some.indices.tolist() == [4, 1]
    np.testing.assert_array_equal(some.images, full.images[[4, 1]])
    grey = load_dataset("folder", data_dir=str(root), image_size=16, channels=1)
    assert grey.images.shape == (5, 16, 16, 1)


def test_image_folder_with_split_folders(image_folder, tmp_path):
    root, _ = image_folder
    shutil.copytree(root, tmp_path / "split" / "train")
    dataset = load_dataset("folder", "train", data_dir=str(tmp_path / "split"))
    assert dataset.class_names == ["cat", "dog", "ship"]
    with pytest.raises(
        ValueError, match="holds the splits train but no 'test'; pass --split=train"
    ):
        load_dataset("folder", "test", data_dir=str(tmp_path / "split"))


@pytest.mark.parametrize(
    "layout, error, message",
    [
        (None, FileNotFoundError, "does not exist; pass --data_dir, a folder with one sub-folder"),
        ({"a.jpg": 1}, ValueError, r"has no class sub-folders \(it holds 1 image directly"),
        ({"cat/a.jpg": 1, "dog/notes.txt": 0}, ValueError, "class folder .*dog' holds no image"),
        ({"cat/a.jpg": 1}, ValueError, "has one class folder .*at least 2 classes"),
        (
            {"cat/a.jpg": 1, "dog/b.jpg": 1, "c.jpg": 1},
            ValueError,
            "holds 1 image outside its class folders",
        ),
        ({"cat/a.jpg": 1, "dog/b.jpg": 0}, ValueError, "b.jpg' is not an image PIL can read"),
    ],
)
def test_image_folder_errors(cifar10_dir, tmp_path, layout, error, message):
    root = tmp_path / "data"
    jpeg = cifar10_dir / "cifar10" / "test" / "cat" / "0000.jpg"
    for name, is_image in (layout or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if is_image:
            shutil.copy(jpeg, root / name)
        else:
            (root / name).write_text("not an image")
    with pytest.raises(error, match=message):
        load_dataset("folder", data_dir=str(root))


def test_folder_needs_a_data_dir_and_channels_are_for_folders():
    with pytest.raises(ValueError, match="dataset 'folder' needs data_dir"):
        load_dataset("folder")
    with pytest.raises(ValueError, match="channels is for dataset 'folder'"):
        load_dataset("digits", channels=3)


# Batches for an attack.


def test_sample_batch_unique_draws_distinct_classes(cifar10_test):
    indices = sample_batch(cifar10_test.labels, 10, "unique", seed=1)
    assert len(set(indices.tolist())) == 10
    assert sorted(cifar10_test.labels[indices].tolist()) == list(range(10))
    np.testing.assert_array_equal(indices, sample_batch(cifar10_test.labels, 10, seed=1))
    assert not np.array_equal(indices, sample_batch(cifar10_test.labels, 10, seed=2))
    with pytest.raises(ValueError, match="needs 11 distinct classes but the labels hold only 10"):
        sample_batch(cifar10_test.labels, 11, "unique")


def test_sample_batch_random_allows_repeated_labels():
    labels = np.array([0, 1, 0, 1, 0, 1])
    indices = sample_batch(labels, 6, "random", seed=0)
    assert sorted(indices.tolist()) == list(range(6))  # Every example once, labels repeat.
    assert len(sample_batch(labels, 3, "random", seed=0)) == 3
    with pytest.raises(ValueError, match="batch_size 7 is more than the 6 examples"):
        sample_batch(labels, 7, "random")
    with pytest.raises(ValueError, match="unknown label_mode 'distinct'; choose one of unique"):
        sample_batch(labels, 2, "distinct")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        sample_batch(labels, 0)


# CIFAR-10 (JPEG) for training: decoded by TF to PIL's pixels, epochs seeded by (seed, epoch).


def test_training_pixels_are_the_attack_pixels(cifar10_dir, cifar10_test):
    from tfleak.data import cifar10_arrays

    images, labels = cifar10_arrays(cifar10_dir, "test", limit=64, seed=3)
    rows = np.sort(np.random.default_rng(3).permutation(10_000)[:64])  # the seeded subset
    assert images.shape == (64, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, cifar10_test.labels[rows])
    # TF's default fast DCT is off by up to 5/255; the loader decodes as PIL does.
    np.testing.assert_array_equal(images / np.float32(255.0), cifar10_test.images[rows])


def test_training_epochs_depend_only_on_seed_and_epoch(cifar10_dir):
    from tfleak.data import cifar10_arrays, cifar10_dataset

    arrays = cifar10_arrays(cifar10_dir, "train", limit=40, seed=0)

    def epochs(first, last, seed=0):
        dataset = cifar10_dataset(
            None, "train", 8, seed, training=True, epochs=last, first_epoch=first, arrays=arrays
        )
        return [x.numpy() for x, _ in dataset]

    whole, resumed = epochs(0, 3), epochs(2, 3)
    assert len(whole) == 15 and len(resumed) == 5  # 40 // 8 = 5 steps an epoch
    for a, b in zip(whole[10:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(whole[0], whole[5])  # another order and crops each epoch
    assert not np.array_equal(whole[0], epochs(0, 1, seed=1)[0])
    assert whole[0].shape == (8, 32, 32, 3) and 0.0 <= whole[0].min() and whole[0].max() <= 1.0
    with pytest.raises(ValueError, match="batch_size 64 is more than the 40 training images"):
        cifar10_dataset(None, "train", 64, training=True, arrays=arrays)
