"""Shared fixtures: the real data in ../shared/data, never the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RELEASE_FILES = (
    "mnist/t10k-images-idx3-ubyte.gz",
    "mnist/t10k-labels-idx1-ubyte.gz",
    "omniglot/images_background_small1.zip",
    "omniglot/images_background_small2.zip",
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (MNIST test set, Omniglot small archives)."""
    missing = [name for name in RELEASE_FILES if not (SHARED_DATA / name).is_file()]
    if missing:
        pytest.fail(
            f"real test data missing from {SHARED_DATA}: {', '.join(missing)}; the tests "
            "read ../shared/data beside the checkout (see its README)."
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
