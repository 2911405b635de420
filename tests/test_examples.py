"""examples/dlg.py as a user runs it: files written, numbers right, clear errors."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from absl import app, flags

import tfleak
from tfleak.data import files

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dlg.py"


def strict_json(text):
    """`json.loads` that refuses NaN and Infinity, as strict JSON readers do."""

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def dlg_script():
    spec = importlib.util.spec_from_file_location("dlg_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(dlg_script):
    def run(*argv):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["dlg.py", *argv])
        return dlg_script.main([])

    yield run
    flags.FLAGS.unparse_flags()


def test_main_job_on_a_real_mnist_digit(run, shared_data, tmp_path):
    run(
        "--dataset=mnist",
        f"--data_dir={shared_data}",
        "--index=0",
        "--alg=idlg",
        f"--output_dir={tmp_path}",
    )
    metrics = strict_json((tmp_path / "metrics.json").read_text())
    assert {
        "psnr",
        "ssim",
        "mse",
        "label_true",
        "label_pred",
        "label_correct",
        "seconds",
        "iterations",
        "restarts_used",
        "gradient_distance",
    } <= set(metrics)
    assert metrics["psnr"] >= 30.0 and metrics["success"] is True
    assert metrics["label_true"] == metrics["label_pred"] == 7 and metrics["label_correct"]
    assert (tmp_path / "reconstruction.png").stat().st_size > 0
    assert (tmp_path / "progress.gif").stat().st_size > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--image=/nonexistent/photo.jpg"], "does not exist; pass a PNG or JPEG path"),
        (["--dataset=digits", "--index=5000"], r"index 5000 is out of range .* 0\.\.1796"),
        (["--dataset=digits", "--label=10"], r"label 10 is outside the model's classes 0\.\.9"),
        (["--dataset=mnist"], "no network to download it; pass --data_dir"),
        (["--iterations=0"], "iterations must be at least 1; got 0"),
        (["--restarts=-1"], "restarts must be >= 0; got -1"),
        (["--image={tmp}"], "is a directory, not an image file"),
        (["--dataset=folder"], "dataset 'folder' needs data_dir"),
    ],
)
def test_bad_input_is_a_clear_usage_error(run, monkeypatch, tmp_path, argv, message):
    monkeypatch.setattr(files, "_tfds_prepared", lambda name, data_dir: False)
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    with pytest.raises(app.UsageError, match=message):
        run(*argv, f"--output_dir={tmp_path / 'out'}")


def test_unknown_dataset_or_model_is_refused_by_the_flags(run):
    with pytest.raises(flags.IllegalFlagValueError, match="value should be one of"):
        run("--dataset=svhn")
    with pytest.raises(flags.IllegalFlagValueError, match="value should be one of"):
        run("--model=resnet")


class _RecordingAttack:
    """Stands in for tfleak.DLG / IDLG: records that an attack was built and run."""

    built = []

    def __init__(self, **hyperparameters):
        _RecordingAttack.built.append(hyperparameters)

    def __call__(self, victim, observed, ground_truth=None):
        raise AssertionError("the attack ran although --output_dir was unusable")


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_unusable_output_dir_fails_before_the_attack(run, monkeypatch, tmp_path, kind):
    monkeypatch.setattr(tfleak, "DLG", _RecordingAttack)
    monkeypatch.setattr(tfleak, "IDLG", _RecordingAttack)
    _RecordingAttack.built.clear()
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output directory should be")
    # Running as root, permissions cannot make a directory unwritable; a
    # directory under a file cannot be created by anyone.
    output_dir = blocker if kind == "file" else blocker / "dlg"
    message = "is a file, not a directory" if kind == "file" else "is not writable"
    with pytest.raises(app.UsageError, match=f"--output_dir .*{message}"):
        run("--dataset=digits", f"--output_dir={output_dir}")
    assert _RecordingAttack.built == []  # refused before any attack was built


class _NonFiniteAttack:
    """An attack whose every start diverged: no image, inf distances (as tfleak reports it)."""

    def __init__(self, **hyperparameters):
        self.hyperparameters = hyperparameters

    def __call__(self, victim, observed, ground_truth=None):
        return types.SimpleNamespace(
            reconstruction=None,
            labels=None,
            success=False,
            gradient_distance=float("inf"),
            relative_distance=float("inf"),
            iterations=1,
            restarts_used=0,
            seconds=0.1,
            history=[],
            metrics={},
            message="failed: every start diverged",
        )


def test_metrics_json_is_strict_when_every_start_diverged(run, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(tfleak, "DLG", _NonFiniteAttack)
    run("--dataset=digits", "--index=0", f"--output_dir={tmp_path}")
    text = (tmp_path / "metrics.json").read_text()
    metrics = strict_json(text)  # No NaN or Infinity in the file.
    assert metrics["psnr"] is None and metrics["mse"] is None
    assert metrics["relative_distance"] is None and metrics["label_pred"] is None
    assert metrics["success"] is False
    assert "FAILED: failed: every start diverged" in capsys.readouterr().out
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in metrics.values())
    assert not list(tmp_path.glob(".*.tmp"))  # Written atomically: no temporary left.


def test_a_usage_error_prints_one_line_and_a_help_pointer(tmp_path):
    # As a user runs it: the script quiets TensorFlow itself.
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run(
        [sys.executable, str(EXAMPLE), "--iterations=0", f"--output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert completed.returncode == 2
    # Nothing else: no flag help, no TensorFlow start-up lines (I0000 ...).
    assert completed.stderr.splitlines() == [
        "dlg.py: error: iterations must be at least 1; got 0.",
        "Run `dlg.py --help` for the flags.",
    ]
    assert "--iterations" not in completed.stdout  # No flag help.
    assert not list(tmp_path.iterdir())  # Nothing written.
