"""Omniglot from the real release zips: tfds' ids and order, checksums, disjoint schemes."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfleak.data import files
from tfleak.data.omniglot import (
    MNIST_ALPHABET_ID,
    OMNIGLOT_ALPHABETS,
    describe_scheme,
    load_omniglot,
    mnist_surrogate,
    omniglot_scheme,
    split_alphabets,
    split_by_alphabet,
)


@pytest.fixture(scope="module")
def data_dir(shared_data) -> Path:
    return shared_data


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """tfds must never be asked to download here: pretend there is no network."""
    monkeypatch.setattr(files, "network_available", lambda *args, **kwargs: False)


def test_small1_matches_tfds_builder(data_dir, tmp_path):
    """Same ids, images and order as tfds' omniglot builder gives for 'small1'."""
    from tensorflow_datasets.core import hashing
    from tensorflow_datasets.image_classification import omniglot as tfds_omniglot

    with zipfile.ZipFile(data_dir / "omniglot" / "images_background_small1.zip") as zipped:
        zipped.extractall(tmp_path)
    hasher = hashing.Hasher("small1")
    expected = sorted(
        (hasher.hash_key(key), alphabet, char_id, label, path)
        for alphabet, char_id, label, path, key in tfds_omniglot._walk_omniglot_dir(tmp_path)
    )
    elements = list(load_omniglot("small1", data_dir))
    assert len(elements) == len(expected) == 2720
    for element, (_, alphabet, char_id, label, _) in zip(elements, expected):
        assert OMNIGLOT_ALPHABETS[int(element["alphabet"])] == alphabet
        assert int(element["alphabet_char_id"]) == char_id
        assert int(element["label"]) == label
    # Images as tfds decodes them: 3 channels of the 1-bit PNG, in {0, 255}.
    first = elements[0]["image"].numpy()
    reference = tf.io.decode_png(tf.io.read_file(str(expected[0][4])), channels=3).numpy()
    assert first.shape == (105, 105, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, reference)
    assert set(np.unique(first)) <= {0, 255}


def test_alphabet_ids_index_the_50_sorted_names():
    assert len(OMNIGLOT_ALPHABETS) == 50 and list(OMNIGLOT_ALPHABETS) == sorted(OMNIGLOT_ALPHABETS)
    assert OMNIGLOT_ALPHABETS.index("Greek") == 21  # 'Glagolitic', 'Grantha' come before.


def test_small_sets_share_greek_and_latin(data_dir):
    """The measured overlap: small1 and small2 share 1,000 byte-identical images."""
    assert split_alphabets("small1", data_dir) == (
        "Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"
    )  # fmt: skip
    assert set(split_alphabets("small1", data_dir)) & set(split_alphabets("small2", data_dir)) == {
        "Greek",
        "Latin",
    }
    by_image = load_omniglot("small2", data_dir, exclude_images_of=("small1",))
    by_alphabet = load_omniglot("small2", data_dir, exclude_alphabets_of=("small1",))
    assert sum(1 for _ in by_image) == sum(1 for _ in by_alphabet) == 3120 - 1000


def test_offline_scheme_is_disjoint(data_dir):
    datasets = omniglot_scheme("offline", data_dir)
    summary = describe_scheme("offline", datasets)
    counts = {key: summary[key]["images"] for key in datasets}
    assert counts == {
        "target_train": 2270,
        "target_val": 450,
        "attacker_train": 1780,
        "attacker_test": 340,
    }
    assert summary["attacker_shared_images"] == 0
    assert summary["attacker_train"]["alphabets"] == ["Japanese_(katakana)", "Sanskrit"]
    assert summary["attacker_test"]["alphabets"] == ["Tagalog"]
    target = set(summary["target_train"]["alphabets"])
    assert not target & {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
    image, alphabet = next(iter(datasets["attacker_test"]))
    assert image.shape == (105, 105, 1) and image.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) == 1.0
    assert OMNIGLOT_ALPHABETS[int(alphabet)] == "Tagalog"


def test_zip_found_in_data_dir_itself(data_dir, tmp_path):
    (tmp_path / "images_background_small2.zip").symlink_to(
        data_dir / "omniglot" / "images_background_small2.zip"
    )
    assert sum(1 for _ in load_omniglot("small2", tmp_path, alphabets=["Tagalog"])) == 340


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda d: omniglot_scheme("nope", d),
            ValueError,
            "unknown Omniglot scheme 'nope'.*offline",
        ),
        (lambda d: load_omniglot("small3", d), ValueError, "unknown Omniglot split"),
        (lambda d: load_omniglot("small1", d, alphabets=["Klingon"]), ValueError, "Klingon"),
        (lambda d: load_omniglot("small1", d / "missing"), FileNotFoundError, "does not exist"),
    ],
)
def test_bad_input_is_explained(data_dir, call, error, message):
    with pytest.raises(error, match=message):
        call(data_dir)


def test_missing_zip_is_explained_without_network(tmp_path):
    with pytest.raises(FileNotFoundError, match="images_background_small1.zip.*no network"):
        load_omniglot("small1", tmp_path)


def test_corrupt_zip_is_refused(data_dir, tmp_path):
    corrupt = tmp_path / "omniglot" / "images_background_small1.zip"
    corrupt.parent.mkdir()
    shutil.copy(data_dir / "omniglot" / "images_background_small1.zip", corrupt)
    data = bytearray(corrupt.read_bytes())
    data[1000] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt or not the original Omniglot release"):
        load_omniglot("small1", tmp_path)


def test_mnist_surrogates_look_like_omniglot_pages(data_dir):
    """1-bit black strokes on white 105 x 105 paper, the digit within the central 70 px."""
    images = np.stack([image.numpy() for image, _ in mnist_surrogate(data_dir, count=20)])
    labels = [int(label) for _, label in mnist_surrogate(data_dir, count=20)]
    assert images.shape == (20, 105, 105, 1) and images.dtype == np.float32
    assert set(np.unique(images)) == {0.0, 1.0} and labels == [MNIST_ALPHABET_ID] * 20
    assert np.all(images[:, :17] == 1.0) and np.all(images[:, :, -18:] == 1.0)
    ink = 1.0 - images.mean()
    assert 0.05 < ink < 0.3  # Omniglot characters: about 8% ink; digits scaled up: more.
    with pytest.raises(ValueError, match="count in"):
        mnist_surrogate(data_dir, count=0)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        mnist_surrogate(data_dir / "omniglot", count=5)


def test_split_by_alphabet_holds_one_alphabet_out(data_dir):
    datasets = omniglot_scheme("offline", data_dir)
    kept, held_out = split_by_alphabet(datasets["attacker_train"], ["Sanskrit"])
    kept_ids = {int(alphabet) for _, alphabet in kept}
    held_ids = {int(alphabet) for _, alphabet in held_out}
    assert kept_ids == {OMNIGLOT_ALPHABETS.index("Japanese_(katakana)")}
    assert held_ids == {OMNIGLOT_ALPHABETS.index("Sanskrit")}
    assert sum(1 for _ in kept) + sum(1 for _ in held_out) == 1780
    with pytest.raises(ValueError, match="Klingon"):
        split_by_alphabet(datasets["attacker_train"], ["Klingon"])
