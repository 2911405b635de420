"""examples/dlg.py as a user runs it: files written, numbers right, clear errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from absl import app, flags

from tfleak.data import files

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dlg.py"


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
    metrics = json.loads((tmp_path / "metrics.json").read_text())
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
    assert metrics["psnr"] >= 30.0
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
        (["--iterations=0"], "--iterations must be at least 1"),
    ],
)
def test_bad_input_is_a_clear_usage_error(run, monkeypatch, tmp_path, argv, message):
    monkeypatch.setattr(files, "_tfds_prepared", lambda name, data_dir: False)
    with pytest.raises(app.UsageError, match=message):
        run(*argv, f"--output_dir={tmp_path}")


def test_unknown_dataset_or_model_is_refused_by_the_flags(run):
    with pytest.raises(flags.IllegalFlagValueError, match="value should be one of"):
        run("--dataset=svhn")
    with pytest.raises(flags.IllegalFlagValueError, match="value should be one of"):
        run("--model=resnet")
