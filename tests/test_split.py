"""The split target, its attacker, and resumable training, on real Omniglot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from tfleak import split
from tfleak.data.omniglot import omniglot_scheme


@pytest.fixture(scope="module")
def scheme(shared_data):
    return omniglot_scheme("offline", shared_data)


@pytest.mark.parametrize("batch", [1, 3])
def test_code_and_reconstruction_shapes(batch):
    target = split.TargetModel()
    images = tf.random.uniform([batch, 105, 105, 1])
    code = target.mobile_step(images)
    assert code.shape == (batch, 1, 1, 32)
    assert target.server_step(code).shape == (batch, 50)
    np.testing.assert_allclose(target(images).numpy().sum(axis=1), 1.0, rtol=1e-5)
    attacker = split.AttackModel(target.on_device_model)
    assert attacker(code).shape == (batch, 105, 105, 1)


def test_attacker_beats_mean_image_baseline(scheme):
    """A briefly trained attacker inverts unseen Tagalog codes better than the mean image.

    Predicting the attacker's mean training image scores MSE ~0.070 on the Tagalog
    test images (strokes are ~8% of pixels); the attacker has to recover where
    the strokes of each test image are from its 32 numbers.
    """
    keras.utils.set_random_seed(0)
    target = split.compile_target(split.TargetModel())
    split.train_resumable(
        target, scheme["target_train"].take(1024), epochs=1, batch_size=32, log=None
    )
    attacker = split.compile_attacker(split.AttackModel(target.on_device_model), 0.01)
    split.train_resumable(attacker, scheme["attacker_train"], epochs=6, batch_size=32, log=None)
    metrics, originals, reconstructions = split.evaluate_attack(
        attacker, target.on_device_model, scheme["attacker_test"]
    )
    baseline = split.mean_image_baseline_mse(scheme["attacker_train"], scheme["attacker_test"])
    assert originals.shape == reconstructions.shape == (340, 105, 105, 1)
    assert 0.06 < baseline < 0.08
    assert metrics["mse"] < baseline, (metrics, baseline)


class _Crash(keras.callbacks.Callback):
    """Raises during the second epoch, as a killed run would stop."""

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == 6:  # 4 steps per epoch: mid epoch 2.
            raise RuntimeError("killed")


def _train(scheme, checkpoint_dir, callbacks=(), seed=7):
    keras.utils.set_random_seed(7)  # A new process builds the same initial model.
    target = split.compile_target(split.TargetModel())
    run = split.train_resumable(
        target,
        scheme["target_train"].take(128),
        epochs=3,
        batch_size=32,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        validation_data=scheme["target_val"].take(32),
        callbacks=callbacks,
        log=None,
    )
    return target, run


def test_killed_and_resumed_training_matches_uninterrupted(scheme, tmp_path):
    """Same weights, Adam state and metrics, although dropout and shuffling are random."""
    uninterrupted, run = _train(scheme, tmp_path / "once")
    with pytest.raises(RuntimeError, match="killed"):
        _train(scheme, tmp_path / "killed", callbacks=[_Crash()])
    resumed, resumed_run = _train(scheme, tmp_path / "killed")
    assert resumed_run.resumed_from_epoch == 1
    assert [h["loss"] for h in resumed_run.history] == pytest.approx(
        [h["loss"] for h in run.history], rel=1e-6
    )
    for a, b in zip(uninterrupted.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for model in (uninterrupted, resumed):
        assert int(model.optimizer.iterations) == 12
    for a, b in zip(uninterrupted.trainable_variables, resumed.trainable_variables):
        for slot in ("m", "v"):  # Adam's moments, restored with the weights.
            np.testing.assert_allclose(
                resumed.optimizer.get_slot(b, slot).numpy(),
                uninterrupted.optimizer.get_slot(a, slot).numpy(),
                rtol=1e-5,
                atol=1e-7,
            )
    # Shuffling and dropout do matter: another seed ends elsewhere from the same start.
    other, _ = _train(scheme, tmp_path / "other", seed=8)
    assert not np.allclose(other.get_weights()[0], uninterrupted.get_weights()[0], atol=1e-6)


def test_train_resumable_refuses_too_little_data(scheme):
    target = split.compile_target(split.TargetModel())
    with pytest.raises(ValueError, match="no whole batch of 32"):
        split.train_resumable(
            target, scheme["target_val"].take(8), epochs=1, batch_size=32, drop_remainder=True
        )


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "model_inversion.py"


def _run_example(data_dir, *flags):
    return subprocess.run(
        [sys.executable, str(EXAMPLE), f"--data_dir={data_dir}", *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_example_runs_end_to_end_and_reruns_to_the_same_results(scheme, shared_data, tmp_path):
    flags = [
        "--limit=64",
        "--target_epochs=1",
        "--attacker_epochs=1",
        "--dp_epochs=1",
        "--noise_multipliers=0.7",
        f"--output_dir={tmp_path}",
    ]
    first = _run_example(shared_data, *flags)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["noise_multiplier"] for row in results["rows"]] == [None, 0.7]
    assert set(results["rows"][1]) == {
        "noise_multiplier", "epsilon", "epsilon_classic", "train_accuracy", "val_accuracy",
        "attacker_mse", "attacker_psnr", "attacker_ssim",
    }  # fmt: skip
    assert results["rows"][1]["epsilon"] < results["rows"][1]["epsilon_classic"]
    assert results["scheme"]["attacker_shared_images"] == 0
    assert 0 < results["baseline_mse"] < 1
    assert (tmp_path / "reconstructions.png").stat().st_size > 10_000
    assert (tmp_path / "models" / "dp_noise0.7.keras").is_file()
    # Run again: every phase restores from its checkpoint and ends with the same table.
    again = _run_example(shared_data, *flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout
    rerun = json.loads((tmp_path / "results.json").read_text())
    assert rerun["rows"] == results["rows"]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--noise_multipliers=0.7,0", "--noise_multipliers must all be > 0"),
        ("--num_microbatches=5", "does not divide --batch_size=32"),
        ("--scheme=nope", "scheme"),
    ],
)
def test_example_explains_bad_flags(flag, message, shared_data, tmp_path):
    completed = _run_example(shared_data, flag, f"--output_dir={tmp_path}")
    assert completed.returncode != 0
    assert message in completed.stderr + completed.stdout
