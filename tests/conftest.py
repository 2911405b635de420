"""Shared fixtures: the real data in ../shared/data, never the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (MNIST test set, Omniglot small archives)."""
    if not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(
            f"real test data not found at {SHARED_DATA}; the tests read ../shared/data "
            "beside the checkout (see its README)."
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def mnist(shared_data):
    """The real MNIST test set through tfleak's loader, as a user with a data dir reads it."""
    from tfleak.data import load_dataset

    return load_dataset("mnist", "test", data_dir=str(shared_data))


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach the network, even on a machine that has one."""
    from tfleak.data import files

    monkeypatch.setattr(files, "network_available", lambda *args, **kwargs: False)
    monkeypatch.delenv(files.DATA_DIR_ENV, raising=False)
