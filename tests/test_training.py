"""Trained victims: one short fit on real CIFAR-10 (JPEG) is cached, resumed and reused."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

from tfleak.io import read_json
from tfleak.models.resnet import resnet, resnet20
from tfleak.training.victims import CACHE_DIR_ENV, default_cache_dir, train_victim


@pytest.fixture(scope="module")
def cifar10_dir(shared_data):
    if not (shared_data / "cifar10" / "train").is_dir():
        pytest.fail(f"CIFAR-10 (JPEG) missing from {shared_data}; see its README.")
    return shared_data


# A small ResNet (one block a stage, 4-16 channels) keeps the fit to seconds; 256
# images in batches of 128 are 2 SGD steps an epoch.
small_resnet = functools.partial(resnet, 8, width=4)
quick = dict(limit=256, verbose=0)


def test_one_epoch_is_cached_and_the_next_call_loads_it(cifar10_dir, tmp_path, monkeypatch):
    model, accuracy = train_victim(
        small_resnet, "resnet8", 1, cifar10_dir, cache_dir=tmp_path, **quick
    )
    (weights,) = tmp_path.glob("resnet8_seed0_epochs1_*.weights.h5")
    (record_path,) = tmp_path.glob("resnet8_seed0_epochs1_*.json")
    record = read_json(record_path)
    assert record["test_accuracy"] == pytest.approx(accuracy)
    assert 0.0 <= accuracy <= 1.0 and len(record["seconds_per_epoch"]) == 1
    assert record["steps_per_epoch"] == 2 and record["resumed_after_epoch"] == 0
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert not list(tmp_path.glob("*.partial.*"))  # nor the per-epoch checkpoint

    def no_training(*args, **kwargs):
        raise AssertionError("a cached victim must not be trained again")

    monkeypatch.setattr(keras.Model, "fit", no_training)
    again, cached_accuracy = train_victim(
        small_resnet, "resnet8", 1, cifar10_dir, cache_dir=tmp_path, **quick
    )
    assert cached_accuracy == pytest.approx(accuracy)
    for trained, loaded in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(trained, loaded)
    # Other training settings are another cache entry, trained afresh.
    with pytest.raises(AssertionError, match="must not be trained"):
        train_victim(small_resnet, "resnet8", 1, cifar10_dir, cache_dir=tmp_path, limit=128)


class _Killed(Exception):
    pass


class _KillAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise _Killed(f"killed after epoch {epoch}")


@pytest.mark.slow
def test_a_killed_run_resumes_after_its_last_epoch_and_ends_as_an_unbroken_one(
    cifar10_dir, tmp_path
):
    unbroken, unbroken_accuracy = train_victim(
        small_resnet, "resnet8", 2, cifar10_dir, cache_dir=tmp_path / "unbroken", **quick
    )
    with pytest.raises(_Killed):
        train_victim(
            small_resnet,
            "resnet8",
            2,
            cifar10_dir,
            cache_dir=tmp_path / "killed",
            callbacks=[_KillAfterFirstEpoch()],
            **quick,
        )
    (checkpoint,) = (tmp_path / "killed").glob("*.partial.weights.h5")
    resumed, resumed_accuracy = train_victim(
        small_resnet, "resnet8", 2, cifar10_dir, cache_dir=tmp_path / "killed", **quick
    )
    assert not checkpoint.exists()
    (record_path,) = (tmp_path / "killed").glob("*.json")
    record = read_json(record_path)
    assert record["resumed_after_epoch"] == 1 and len(record["seconds_per_epoch"]) == 1
    # Epoch 2 sees the same order and crops either way, from the same weights and momentum.
    for a, b in zip(unbroken.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert resumed_accuracy == pytest.approx(unbroken_accuracy, abs=1 / 256)


def test_zero_epochs_is_the_fresh_model_and_bad_input_says_what_to_fix(tmp_path, monkeypatch):
    model, accuracy = train_victim(resnet20, None, 0, data_dir=None, cache_dir=tmp_path)
    assert accuracy is None and model.name == "resnet20"
    np.testing.assert_array_equal(model.get_weights()[1], resnet20(seed=0).get_weights()[1])
    with pytest.raises(ValueError, match="epochs must be a whole number >= 0"):
        train_victim(resnet20, "resnet20", -1, tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar10/train"):
        train_victim(resnet20, "resnet20", 1, tmp_path, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="data_dir is required"):
        train_victim(resnet20, "resnet20", 1, None, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cannot key a cache file"):
        train_victim(resnet20, "../evil", 1, tmp_path)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        train_victim(resnet20, "resnet20", 1, tmp_path, batch_size=0)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path / "victims"
