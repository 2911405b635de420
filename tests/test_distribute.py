"""Training the split target and its attacker under MirroredStrategy (two logical CPUs)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _two_cpu_run(script: str, shared_data) -> dict:
    """Runs tests/<script> in a subprocess (the two logical CPUs must exist before
    TensorFlow initialises) and returns the JSON line it prints last."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "tests" / script), str(shared_data)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if completed.returncode != 0:
        pytest.fail(f"{script} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mirrored_run(shared_data) -> dict:
    return _two_cpu_run("_mirrored_run.py", shared_data)


@pytest.mark.slow
def test_target_and_attacker_train_on_two_replicas(mirrored_run):
    assert mirrored_run["replicas"] == 2
    assert mirrored_run["code_shape"] == [2, 1, 1, 32]
    assert math.isfinite(mirrored_run["target_loss"])
    assert math.isfinite(mirrored_run["attacker_loss"]) and mirrored_run["attacker_mse"] < 1


def test_two_replicas_train_the_attacker_like_one(mirrored_run):
    """The attacker's loss is a global-batch mean (`tf.nn.compute_average_loss`), so the
    summed replica gradients equal the one-device gradient: same SGD steps."""
    # A wrong scaling would be off by whole updates (~0.1); float round-off is ~1e-5.
    assert mirrored_run["mirrored_vs_single_max_difference"] < 1e-3


def test_dp_training_refuses_two_replicas(mirrored_run):
    assert "DP training under 2 replicas is not supported" in mirrored_run["dp_error"]


@pytest.mark.slow
def test_attacks_split_across_two_replicas_equal_one_replica(shared_data):
    """Two iDLG attacks on MNIST digits, as one graph on one device and split over
    two logical CPUs (dummy data in L-BFGS tensors, never a mirrored variable): the
    same reconstructions, and the same as the first attack run alone."""
    run = _two_cpu_run("_mirrored_attacks.py", shared_data)
    assert run["replicas"] == 2
    assert run["max_difference"] < 1e-4 and run["alone_difference"] < 1e-4, run
    assert run["psnr_two"] == pytest.approx(run["psnr_one"], abs=0.01)
    assert min(run["psnr_two"]) > 12.0, run  # 30 L-BFGS iterations; measured 14.0 and 14.1 dB
    assert run["labels_two"] == run["true_labels"]
