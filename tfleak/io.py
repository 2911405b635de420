"""Files a run reads back: written atomically, as strict JSON.

A run killed in the middle of a write must leave either the old file or the
new one, never half of one: every writer here writes a temporary file in the
same directory, flushes it to disk and renames it over the target
(`os.replace` is atomic on POSIX and Windows); `atomic_write` does the same
for a writer that wants a path, such as Keras' `model.save`. JSON is strict:
no `NaN` or `Infinity`, which many readers reject; a non-finite float becomes
`null`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "json_safe",
    "read_json",
    "check_writable_dir",
]

PathLike = Union[str, os.PathLike]


def _replace_atomically(path: PathLike, write: Callable[[Path], None], suffix: str) -> Path:
    """Calls `write(temporary)` for a file beside `path`, syncs it, renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        # mkstemp makes the file private (0600); give it the mode open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        write(temporary)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Has `write` write a file, and puts it at `path` so that a kill leaves the old or the new.

    For writers that want a path rather than bytes, such as Keras'
    `model.save` (which needs the `.keras` suffix) and `model.save_weights`
    (`.weights.h5`): `write` is called with a temporary path in the same
    directory that ends in the same suffixes as `path`
    (`.<name>.<random>.tmp<suffixes>`), which already exists, empty, and may be
    overwritten. The file is then flushed to disk and renamed over `path`; if
    `write` raises, the temporary file is removed and `path` is untouched.

    Args:
      path: the file to write; parent folders are created.
      write: called once as `write(temporary_path)`; must write one file there.

    Returns:
      `path` as a `Path`.
    """
    return _replace_atomically(path, write, ".tmp" + "".join(Path(path).suffixes))


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Writes `data` to `path` so that a kill leaves the old file or the new one.

    Returns:
      `path` as a `Path`.
    """
    return _replace_atomically(path, lambda temporary: temporary.write_bytes(data), ".tmp")


def atomic_write_text(path: PathLike, text: str) -> Path:
    """`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """`value` with numpy scalars and arrays as Python ones and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: PathLike, value: Any) -> Path:
    """Writes `value` as strict, indented JSON (non-finite floats as null), atomically."""
    text = json.dumps(json_safe(value), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def read_json(path: PathLike, default: Any = None) -> Any:
    """Reads JSON written by `atomic_write_json`; `default` if missing or unreadable.

    A file that does not parse (written by an older, non-atomic version and cut
    short) counts as missing, so a rerun starts that piece again instead of
    crashing.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return default


def check_writable_dir(path: PathLike, flag: str = "output_dir") -> Path:
    """Creates `path` if needed and proves it writable, before any long work.

    Raises:
      ValueError: `path` exists and is not a directory.
      PermissionError: `path` cannot be created or written.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"--{flag} {str(path)!r} is a file, not a directory; pass a directory path."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise PermissionError(
            f"--{flag} {str(path)!r} is not writable ({error.strerror or error}); pass a "
            "directory you can write to."
        ) from error
    return path
