"""The checkpoint directory `train_resumable` writes, and reads back only if it wrote it.

- `config.json`: the configuration the run was written under (checked by
  `tfleak.training.resumable`).
- `epoch-NNNN.weights.h5`: Keras' weights format (`model.save_weights`): the
  model's variables and its optimizer's (Adam's step count and moments).
- `checkpoint.json`: which weights file holds how many epochs; written last,
  it is the commit point of an epoch. A directory without it (such as one of
  an older TensorFlow-format checkpoint, `checkpoint` + `ckpt-N.index`) holds
  nothing `train_resumable` resumes.
- `history.json`: per-epoch metrics; `best.weights.h5` with early stopping.

Every file is written atomically through `tfleak.io`: a kill leaves the old
file or the new one, never half of one.
"""

from __future__ import annotations

from pathlib import Path

import keras

from tfleak.io import atomic_write, atomic_write_json, read_json

__all__ = [
    "commit_epoch",
    "committed_index",
    "epochs_done",
    "foreign_checkpoint",
    "load_weights",
    "save_weights",
]

# Names the checkpoints this module writes, so it resumes no other.
_FORMAT = "tfleak.train_resumable/keras3-weights.h5"
_INDEX = "checkpoint.json"


def save_weights(model: keras.Model, path: Path) -> None:
    """`model.save_weights` (model and optimizer variables), written atomically."""
    atomic_write(path, model.save_weights)


def load_weights(model: keras.Model, path: Path) -> None:
    """Loads `model.save_weights`'s file into the model and its optimizer (built if need be)."""
    if model.optimizer is not None and not model.optimizer.built:
        # As Keras builds it before a first step under a strategy: on every trainable
        # variable. Its variables must exist for the saved ones to load into them.
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)


def committed_index(checkpoint_dir: Path) -> dict | None:
    """The checkpoint index `train_resumable` wrote in `checkpoint_dir`, or None."""
    index = read_json(checkpoint_dir / _INDEX)
    if not isinstance(index, dict) or index.get("format") != _FORMAT:
        return None
    if not (checkpoint_dir / str(index.get("weights"))).is_file():
        return None
    return index


def foreign_checkpoint(checkpoint_dir: Path) -> str | None:
    """What in `checkpoint_dir` looks like a checkpoint this module did not write."""
    if (checkpoint_dir / "checkpoint").is_file() or any(checkpoint_dir.glob("ckpt-*.index")):
        return "a TensorFlow-format checkpoint (`checkpoint`, `ckpt-N.index`) of an older tfleak"
    return None


def commit_epoch(model: keras.Model, checkpoint_dir: Path, done: int, history: list) -> None:
    """Saves epoch `done`: history, then weights, then the index that points at them."""
    atomic_write_json(checkpoint_dir / "history.json", history)
    weights = f"epoch-{done:04d}.weights.h5"
    save_weights(model, checkpoint_dir / weights)
    atomic_write_json(
        checkpoint_dir / _INDEX, {"format": _FORMAT, "epochs_done": done, "weights": weights}
    )
    for old in checkpoint_dir.glob("epoch-*.weights.h5"):
        if old.name != weights:
            old.unlink()


def epochs_done(checkpoint_dir) -> int:
    """Epochs that `train_resumable`'s checkpoint in `checkpoint_dir` holds (0 if none)."""
    index = committed_index(Path(checkpoint_dir))
    return 0 if index is None else int(index["epochs_done"])
