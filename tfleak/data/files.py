"""Where dataset files are found: a local data directory, or tfds with a network.

A user with a local data directory (`--data_dir`, or the environment variable
`TFLEAK_DATA_DIR`) holding the original release files reads them with no
network; otherwise `tensorflow_datasets` prepares the data, which needs a
network the first time. An offline `tfds.load` retries for minutes before it
fails, so it is only called when the data is already prepared or the network
answers.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Optional, Sequence

__all__ = [
    "DATA_DIR_ENV",
    "resolve_data_dir",
    "find_release_file",
    "verify_sha256",
    "network_available",
    "load_tfds",
]

DATA_DIR_ENV = "TFLEAK_DATA_DIR"


def resolve_data_dir(data_dir: Optional[str] = None) -> Optional[Path]:
    """Returns `data_dir`, else `$TFLEAK_DATA_DIR`, else None.

    Raises:
      FileNotFoundError: the directory given does not exist, or is a file.
    """
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise FileNotFoundError(
            f"data directory {str(path)!r} is a file, not a directory; pass a directory "
            f"as --data_dir (or {DATA_DIR_ENV}) that holds the dataset's files."
        )
    if not path.is_dir():
        raise FileNotFoundError(
            f"data directory {str(path)!r} does not exist; pass an existing --data_dir "
            f"(or set {DATA_DIR_ENV}) that holds the dataset's original release files."
        )
    return path


def find_release_file(data_dir: Path, filename: str, subdirs: Sequence[str] = ()) -> Optional[Path]:
    """Finds `filename` in `data_dir` or one of its `subdirs` (e.g. 'mnist').

    Also looks in `downloads/`, where tfds keeps the files it fetched.
    """
    for folder in ("", *subdirs, "downloads"):
        path = data_dir / folder / filename
        if path.is_file():
            return path
    return None


def verify_sha256(path: Path, expected: str) -> None:
    """Raises ValueError if `path`'s SHA-256 is not `expected` (a corrupt download)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"{path} is corrupt or not the original release: its SHA-256 is "
            f"{digest.hexdigest()}, expected {expected}. Download it again."
        )


def network_available(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    """True if a TCP connection to `host`:443 opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_tfds(name: str, split: str, data_dir: Optional[Path] = None, **kwargs):
    """`tfds.load(name, split=split, ...)`, refusing fast when it would hang offline.

    Loads directly if tfds already prepared `name` (in `data_dir` or tfds' own
    default directory); downloads it only if the network answers.

    Raises:
      ValueError: the data is not prepared and there is no network.
    """
    import tensorflow_datasets as tfds

    if not _tfds_prepared(name, data_dir) and not network_available():
        raise ValueError(
            f"dataset {name!r} is not prepared locally and there is no network to "
            f"download it; pass --data_dir (or set {DATA_DIR_ENV}) to a directory with "
            "its original release files."
        )
    return tfds.load(
        name, split=split, data_dir=None if data_dir is None else str(data_dir), **kwargs
    )


def _tfds_prepared(name: str, data_dir: Optional[Path]) -> bool:
    """Whether tfds already prepared `name` in `data_dir` (or its default directory)."""
    import tensorflow_datasets as tfds

    return tfds.builder(name, data_dir=None if data_dir is None else str(data_dir)).is_prepared()
