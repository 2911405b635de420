"""examples/gradinversion.py as a user runs it, in a process: real batches, a folder, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "gradinversion.py"


def _run(*argv, timeout=600):
    # As a user runs it: the script quiets TensorFlow itself.
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


def _strict(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_inverting_gradients_on_a_cifar_batch(shared_data, tmp_path):
    process = _run(
        "--attack=inverting_gradients",
        "--model=lenet",
        "--dataset=cifar10",
        f"--data_dir={shared_data}",
        "--batch_size=2",
        "--iterations=100",
        f"--output_dir={tmp_path}",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    metrics = _strict(tmp_path / "metrics.json")
    for key in ("psnr", "ssim", "mse", "psnr_per_image", "label_accuracy", "labels_true",
                "labels_pred", "seconds", "iterations", "success", "hyperparameters"):  # fmt: skip
        assert key in metrics, key
    assert len(metrics["psnr_per_image"]) == 2 and metrics["dataset"] == "CIFAR-10 (JPEG)"
    assert metrics["label_accuracy"] == 1.0  # known labels
    assert metrics["psnr"] > 10.0
    assert metrics["hyperparameters"]["objective"]["distance"] == "cosine"
    assert (tmp_path / "reconstruction.png").stat().st_size > 0
    assert (tmp_path / "progress.gif").stat().st_size > 0
    assert "PSNR" in process.stdout and "Wrote" in process.stdout


@pytest.mark.slow
def test_an_image_folder_of_the_users_own(shared_data, tmp_path):
    folder = tmp_path / "photos"
    for name in ("cat", "ship"):
        (folder / name).mkdir(parents=True)
        for source in sorted((shared_data / "cifar10" / "test" / name).glob("*.jpg"))[:2]:
            shutil.copy(source, folder / name / source.name)
    process = _run(
        "--attack=idlg",
        "--model=lenet",
        "--dataset=folder",
        f"--data_dir={folder}",
        "--indices=3",
        "--iterations=200",
        f"--output_dir={tmp_path / 'out'}",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    metrics = _strict(tmp_path / "out" / "metrics.json")
    assert metrics["labels_true"] == [1] and metrics["labels_pred"] == [1]  # 'ship', restored
    assert metrics["psnr"] >= 15.0  # measured 19.2 dB after 200 L-BFGS iterations


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch_size=0"], "--batch_size must be at least 1"),
        (["--learning_rate=nan"], "--learning_rate must be a finite number"),
        (["--model=lenet", "--trained_epochs=2"], "--trained_epochs trains on CIFAR-10"),
        (["--attack=idlg", "--batch_size=2"], "--attack=idlg restores the label of one image"),
        (["--labels=guess"], "unknown label_strategy 'guess'"),
    ],
)
def test_bad_flags_are_one_line_errors_before_any_work(tmp_path, argv, message):
    process = _run(*argv, f"--output_dir={tmp_path}")
    assert process.returncode == 2
    assert message in process.stderr
    assert len(process.stderr.strip().splitlines()) <= 3, process.stderr
    assert "Attacking" not in process.stdout and not list(tmp_path.glob("*.json"))  # no attack


def test_an_output_dir_that_is_a_file_fails_before_the_attack(tmp_path):
    occupied = tmp_path / "taken"
    occupied.write_text("")
    process = _run("--model=lenet", f"--output_dir={occupied}")
    assert process.returncode == 2
    assert "is a file, not a directory" in process.stderr
