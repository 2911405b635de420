"""Resumable Keras training that only resumes what it can trust.

`train_resumable` fits a compiled model one epoch at a time and checkpoints
after every epoch, so a killed run (or one paused with SIGSTOP) continues from
its last whole epoch. A checkpoint directory remembers the configuration it was
written under (`config.json`); a later call with a different configuration
refuses to resume it (or, if asked, starts afresh and says so) instead of
silently continuing someone else's run. Everything a rerun reads back is
written atomically: `history.json` and `config.json` through `tfleak.io`,
the weights through `tf.train.CheckpointManager`, which writes temporary files
and renames them and updates its `checkpoint` index file atomically.
"""

from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from tensorflow import keras

from tfleak.io import atomic_write_bytes, atomic_write_json, json_safe, read_json

__all__ = [
    "ConfigMismatchError",
    "ON_CONFIG_CHANGE",
    "TrainingRun",
    "epochs_done",
    "train_resumable",
]

# What a rerun with a different configuration does: refuse, or start afresh.
ON_CONFIG_CHANGE = ("refuse", "restart")


class ConfigMismatchError(ValueError):
    """A checkpoint directory holds a run written under another configuration."""


@dataclass
class TrainingRun:
    """What `train_resumable` did.

    Attributes:
      history: one dict per epoch (all epochs, also those of an earlier,
        interrupted run): Keras' metrics, `epoch` (1-based) and `seconds`.
      resumed_from_epoch: epochs already done when this call started.
      restarted: True when an old run under another configuration was
        discarded (`on_config_change='restart'`).
      best_epoch: with early stopping, the 1-based epoch whose weights the
        model ends with; None without.
    """

    history: list = field(default_factory=list)
    resumed_from_epoch: int = 0
    restarted: bool = False
    best_epoch: int | None = None

    @property
    def final(self) -> dict:
        """The metrics of the epoch the model ends with (the best one under early stopping)."""
        if not self.history:
            return {}
        return self.history[self.best_epoch - 1] if self.best_epoch else self.history[-1]

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall-clock seconds of the epochs this call ran (first epoch excluded
        when there are more, as it includes tracing); 0 when it ran none."""
        seconds = [h["seconds"] for h in self.history[self.resumed_from_epoch :] if "seconds" in h]
        return float(np.mean(seconds[1:] if len(seconds) > 1 else seconds)) if seconds else 0.0


class _Progress(keras.callbacks.Callback):
    """Logs the step within an epoch at most every `seconds`, for slow (DP) epochs."""

    def __init__(self, log: Callable[[str], None], prefix: str, steps: int, seconds: float = 30):
        super().__init__()
        self.log, self.prefix, self.steps, self.seconds = log, prefix, steps, seconds
        self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.last >= self.seconds:
            self.last = time.perf_counter()
            self.log(f"{self.prefix}: step {batch + 1}/{self.steps}")


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
        for k in keys
        if old.get(k, "<unset>") != new.get(k, "<unset>")
    ]


def _count(dataset: tf.data.Dataset) -> int:
    size = int(dataset.cardinality())
    if size < 0:
        size = int(dataset.reduce(0, lambda count, _: count + 1))
    return size


def train_resumable(
    model: keras.Model,
    dataset: tf.data.Dataset,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    checkpoint_dir=None,
    config: dict | None = None,
    on_config_change: str = "refuse",
    validation_data: tf.data.Dataset | None = None,
    drop_remainder: bool = False,
    early_stopping: tuple[str, int] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    log: Callable[[str], None] | None = print,
    name: str = "model",
) -> TrainingRun:
    """Trains a compiled model epoch by epoch, checkpointing so a killed run resumes.

    After every epoch the model, its optimizer (Adam moments, step count) and
    the epoch count are saved with a `tf.train.CheckpointManager` in
    `checkpoint_dir`; a later call with the same directory and configuration
    restores them and continues with the next epoch. A resumed run ends with
    the same weights as an uninterrupted one because everything random in an
    epoch is a function of `(seed, epoch)`: the shuffle order, and the stateful
    random ops (dropout, DP noise), whose kernels are re-created from the
    global seed `(seed, epoch)` by retracing the train function each epoch.

    Args:
      model: a compiled, built Keras model (built under the strategy scope
        it is to train under).
      dataset: unbatched, finite training elements `(x, y)`; cache it, it is
        iterated once per epoch.
      epochs: total number of epochs, >= 1.
      batch_size: global batch size (split across replicas by Keras).
      seed: integer seed of shuffling and of the random ops.
      checkpoint_dir: where to keep the checkpoint; None trains without one.
      config: JSON-able dict of everything that makes this run what it is
        (model, optimizer, data, seed...). Stored beside the checkpoint; a
        checkpoint stored under another config is not resumed. `seed`,
        `batch_size`, `drop_remainder` and the number of training examples
        are always added; `epochs` is not (a run may be extended).
      on_config_change: 'refuse' (raise `ConfigMismatchError`) or 'restart'
        (delete the old checkpoint, train from scratch and log it).
      validation_data: unbatched elements evaluated after every epoch.
      drop_remainder: drop the last, smaller batch (DP microbatching needs it).
      early_stopping: `(metric, patience)`, e.g. `('val_loss', 5)`: stop when
        the metric (lower is better) has not improved for `patience` epochs
        and restore the weights of its best epoch (kept as `best_weights.npz`
        beside the checkpoint). The history keeps every epoch run; the
        returned run's `final` is the best epoch's record.
      callbacks: extra Keras callbacks for every epoch's `fit`.
      log: called with one progress line per epoch; None is silent.
      name: what the progress lines call the model.

    Returns:
      A `TrainingRun` with the history of the epochs trained.

    Raises:
      ValueError: `epochs` or `batch_size` < 1, fewer than one batch of data,
        an unknown `on_config_change`, or a checkpoint with more epochs than
        `epochs`.
      ConfigMismatchError: the checkpoint was written under another config and
        `on_config_change='refuse'`.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; got {epochs}, {batch_size}.")
    if on_config_change not in ON_CONFIG_CHANGE:
        raise ValueError(
            f"on_config_change must be one of {ON_CONFIG_CHANGE}; got {on_config_change!r}."
        )
    size = _count(dataset)
    if size < batch_size and drop_remainder:
        raise ValueError(f"{size} training examples make no whole batch of {batch_size}.")
    if size == 0:
        raise ValueError(f"{name}: the training dataset is empty.")
    full_config = json_safe(
        dict(
            config or {},
            seed=seed,
            batch_size=batch_size,
            drop_remainder=drop_remainder,
            train_examples=size,
            early_stopping=list(early_stopping or ()),
        )
    )
    run = TrainingRun()
    checkpoint = manager = None
    history_path = best_path = None
    done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
    best = {"value": float("inf"), "epoch": 0}
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        history_path = checkpoint_dir / "history.json"
        best_path = checkpoint_dir / "best_weights.npz"
        config_path = checkpoint_dir / "config.json"
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epochs_done=done)
        manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=1)
        stored = read_json(config_path)
        if manager.latest_checkpoint and stored is not None and stored != full_config:
            changes = "; ".join(_differences(stored, full_config))
            if on_config_change == "refuse":
                raise ConfigMismatchError(
                    f"{name}: {checkpoint_dir} holds a run written under another configuration "
                    f"({changes}). Use another output directory, delete this one, or pass "
                    "--on_config_change=restart to discard it."
                )
            if log:
                log(
                    f"{name}: configuration changed ({changes}); discarding {checkpoint_dir} "
                    "and training from scratch"
                )
            shutil.rmtree(checkpoint_dir)
            checkpoint_dir.mkdir(parents=True)
            manager = tf.train.CheckpointManager(checkpoint, str(checkpoint_dir), max_to_keep=1)
            run.restarted = True
        atomic_write_json(config_path, full_config)
        if manager.latest_checkpoint:
            # Partial: an optimizer restored after its last epoch never creates its slots.
            checkpoint.restore(manager.latest_checkpoint).expect_partial()
            run.resumed_from_epoch = int(done.numpy())
            if run.resumed_from_epoch > epochs:
                raise ValueError(
                    f"{name}: {checkpoint_dir} already holds {run.resumed_from_epoch} epochs, "
                    f"more than the {epochs} asked for; ask for >= {run.resumed_from_epoch} "
                    "epochs or use another output directory."
                )
            # history.json is written before the checkpoint: it may hold one epoch more.
            history = read_json(history_path, default=[]) or []
            run.history = history[: run.resumed_from_epoch]
            for missing in range(len(run.history), run.resumed_from_epoch):
                run.history.append({"epoch": missing + 1, "history_lost": True})
            if early_stopping and run.history:
                scored = [h for h in run.history if early_stopping[0] in h]
                if scored:
                    top = min(scored, key=lambda h: h[early_stopping[0]])
                    best = {"value": top[early_stopping[0]], "epoch": top["epoch"]}
            if log:
                log(
                    f"{name}: resumed from {manager.latest_checkpoint} after epoch "
                    f"{run.resumed_from_epoch}/{epochs}"
                )
    steps = size // batch_size if drop_remainder else -(-size // batch_size)
    validation = None if validation_data is None else validation_data.batch(batch_size)
    stopped = early_stopping is not None and (
        run.resumed_from_epoch - best["epoch"] >= early_stopping[1] and best["epoch"] > 0
    )
    for epoch in range(run.resumed_from_epoch, epochs):
        if stopped:
            break
        epoch_seed = _epoch_seed(seed, epoch)
        tf.random.set_seed(epoch_seed)
        model.train_function = None  # Retrace: random kernels restart from epoch_seed.
        batches = dataset.shuffle(size, seed=epoch_seed, reshuffle_each_iteration=False)
        batches = batches.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)
        start = time.perf_counter()
        fitted = model.fit(
            batches,
            initial_epoch=epoch,
            epochs=epoch + 1,
            validation_data=validation,
            callbacks=list(callbacks)
            + ([_Progress(log, f"{name} epoch {epoch + 1}/{epochs}", steps)] if log else []),
            verbose=0,
        )
        record = {key: float(values[-1]) for key, values in fitted.history.items()}
        record.update(epoch=epoch + 1, seconds=time.perf_counter() - start)
        run.history.append(record)
        if early_stopping:
            metric, patience = early_stopping
            if metric not in record:
                raise ValueError(
                    f"{name}: early stopping monitors {metric!r}, which training does not "
                    f"report (it reports {sorted(record)}); pass validation_data."
                )
            if record[metric] < best["value"]:
                best = {"value": record[metric], "epoch": epoch + 1}
                if best_path is not None:
                    _save_weights_atomically(model, best_path)
                else:
                    best["weights"] = model.get_weights()
            stopped = epoch + 1 - best["epoch"] >= patience
        if manager is not None:
            atomic_write_json(history_path, run.history)  # Before the checkpoint; see above.
            checkpoint.epochs_done.assign(epoch + 1)
            manager.save()
        if log:
            metrics = ", ".join(
                f"{key} {value:.4f}"
                for key, value in record.items()
                if key not in ("epoch", "seconds")
            )
            log(f"{name} epoch {epoch + 1}/{epochs}: {metrics} ({record['seconds']:.1f} s)")
    if early_stopping and best["epoch"] > 0:
        if "weights" in best:
            model.set_weights(best["weights"])
        elif best_path is not None and best_path.is_file():
            _load_weights(model, best_path)
        if log and best["epoch"] != len(run.history):
            log(
                f"{name}: early stopping kept epoch {best['epoch']} "
                f"({early_stopping[0]} {best['value']:.4f})"
            )
        run.best_epoch = best["epoch"]
    return run


def epochs_done(checkpoint_dir) -> int:
    """Epochs that `train_resumable`'s checkpoint in `checkpoint_dir` holds (0 if none)."""
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if latest is None:
        return 0
    return int(tf.train.load_variable(latest, "epochs_done/.ATTRIBUTES/VARIABLE_VALUE"))


def _save_weights_atomically(model: keras.Model, path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, *model.get_weights())
    atomic_write_bytes(path, buffer.getvalue())


def _load_weights(model: keras.Model, path: Path) -> None:
    with np.load(path) as saved:
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
