"""Resumable Keras training that only resumes what it wrote itself.

`train_resumable` fits a compiled model one epoch at a time and checkpoints
after every epoch, so a killed run (or one paused with SIGSTOP) continues from
its last whole epoch with the same weights, optimizer state and history as an
uninterrupted run (what the checkpoint directory holds:
`tfleak.training.checkpoints`).

The configuration the run was written under is stored beside it
(`config.json`): a later call under another configuration refuses to resume
it (or, if asked, starts afresh and says so) instead of silently continuing
someone else's run.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfleak.io import atomic_write_json, json_safe, read_json
from tfleak.training.checkpoints import (
    commit_epoch,
    committed_index,
    foreign_checkpoint,
    load_weights,
    save_weights,
)

__all__ = [
    "ConfigMismatchError",
    "ON_CONFIG_CHANGE",
    "TrainingRun",
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


def _reseed(model: keras.Model, epoch_seed: int) -> None:
    """Makes every random op of an epoch a function of `epoch_seed`.

    Keras layers draw their randomness (dropout, augmentation) from seed
    generators whose states are the model's variables that are not weights;
    each gets its own seed derived from `epoch_seed`. Stateful TensorFlow ops
    in a `train_step` (`tf.random.normal`) restart from the global seed when
    the train function is traced anew.
    """
    weights = {id(v) for v in model.weights}
    states = [v for v in model.variables if id(v) not in weights]
    seeds = np.random.SeedSequence(epoch_seed).generate_state(max(len(states), 1))
    for state, value in zip(states, seeds):
        state.assign(np.array([value % 2**31, 0]).astype(state.dtype))
    tf.random.set_seed(epoch_seed)
    model.make_train_function(force=True)


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


def _model_description(model: keras.Model) -> str:
    parameters = sum(int(np.prod(weight.shape)) for weight in model.weights)
    return f"{type(model).__name__}, {parameters} parameters"


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

    After every epoch the model's and its optimizer's variables (Adam's step
    count and moments) are saved with `model.save_weights` in `checkpoint_dir`,
    then the epoch count; a later call with the same directory and
    configuration restores them and continues with the next epoch. A resumed
    run ends with the same weights as an uninterrupted one because everything
    random in an epoch is a function of `(seed, epoch)`: the shuffle order,
    the layers' seed generators (dropout, augmentation) and the stateful
    random ops of a `train_step` (DP noise, code noise).

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
        `batch_size`, `drop_remainder`, the number of training examples and
        the model's class and parameter count are always added; `epochs` is
        not (a run may be extended).
      on_config_change: 'refuse' (raise `ConfigMismatchError`) or 'restart'
        (delete the old checkpoint, train from scratch and log it).
      validation_data: unbatched elements evaluated after every epoch.
      drop_remainder: drop the last, smaller batch (DP microbatching needs it).
      early_stopping: `(metric, patience)`, e.g. `('val_loss', 5)`: stop when
        the metric (lower is better) has not improved for `patience` epochs
        and restore the model (and optimizer) of its best epoch (kept as
        `best.weights.h5` beside the checkpoint). The history keeps every
        epoch run; the returned run's `final` is the best epoch's record.
      callbacks: extra Keras callbacks for every epoch's `fit`.
      log: called with one progress line per epoch; None is silent.
      name: what the progress lines call the model.

    Returns:
      A `TrainingRun` with the history of the epochs trained.

    Raises:
      ValueError: `epochs` or `batch_size` < 1, fewer than one batch of data,
        an unknown `on_config_change`, or a checkpoint with more epochs than
        `epochs`.
      ConfigMismatchError: the directory holds a checkpoint written under
        another config, or one this function did not write, and
        `on_config_change='refuse'`.
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; got {epochs}, {batch_size}.")
    if on_config_change not in ON_CONFIG_CHANGE:
        raise ValueError(
            f"on_config_change must be one of {ON_CONFIG_CHANGE}; got {on_config_change!r}."
        )
    if model.optimizer is None:
        raise ValueError(f"{name}: compile the model before training it.")
    size = _count(dataset)
    if size < batch_size and drop_remainder:
        raise ValueError(f"{size} training examples make no whole batch of {batch_size}.")
    if size == 0:
        raise ValueError(f"{name}: the training dataset is empty.")
    if not model.built:
        # Keras builds a model on its first call; a checkpoint loads only into a built one.
        element = next(iter(dataset.take(1).batch(1)))
        model(element[0] if isinstance(element, (tuple, list)) else element, training=False)
    full_config = json_safe(
        dict(
            config or {},
            seed=seed,
            batch_size=batch_size,
            drop_remainder=drop_remainder,
            train_examples=size,
            early_stopping=list(early_stopping or ()),
            model=_model_description(model),
        )
    )
    run = TrainingRun()
    index = None
    history_path = best_path = None
    best = {"value": float("inf"), "epoch": 0}
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        history_path = checkpoint_dir / "history.json"
        best_path = checkpoint_dir / "best.weights.h5"
        config_path = checkpoint_dir / "config.json"
        index = committed_index(checkpoint_dir)
        stored = read_json(config_path)
        problem = None
        if index is not None and stored != full_config:
            changes = "; ".join(_differences(stored or {}, full_config))
            problem = f"a run written under another configuration ({changes})"
        elif index is None and foreign_checkpoint(checkpoint_dir):
            problem = foreign_checkpoint(checkpoint_dir) + ", which this version cannot resume"
        if problem:
            if on_config_change == "refuse":
                raise ConfigMismatchError(
                    f"{name}: {checkpoint_dir} holds {problem}. Use another output directory, "
                    "delete this one, or pass --on_config_change=restart to discard it."
                )
            if log:
                log(f"{name}: {checkpoint_dir} holds {problem}; discarding it and training "
                    "from scratch")  # fmt: skip
            shutil.rmtree(checkpoint_dir)
            checkpoint_dir.mkdir(parents=True)
            index = None
            run.restarted = True
        atomic_write_json(config_path, full_config)
        if index is not None:
            run.resumed_from_epoch = int(index["epochs_done"])
            if run.resumed_from_epoch > epochs:
                raise ValueError(
                    f"{name}: {checkpoint_dir} already holds {run.resumed_from_epoch} epochs, "
                    f"more than the {epochs} asked for; ask for >= {run.resumed_from_epoch} "
                    "epochs or use another output directory."
                )
            load_weights(model, checkpoint_dir / index["weights"])
            # history.json is written before the index: it may hold one epoch more.
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
                    f"{name}: resumed from {checkpoint_dir / index['weights']} after epoch "
                    f"{run.resumed_from_epoch}/{epochs}"
                )
    steps = size // batch_size if drop_remainder else -(-size // batch_size)
    validation = None
    if validation_data is not None:
        # Batches counted up front, so Keras knows where an epoch of (filtered) data ends.
        validation = validation_data.batch(batch_size).apply(
            tf.data.experimental.assert_cardinality(-(-_count(validation_data) // batch_size))
        )
    stopped = early_stopping is not None and (
        run.resumed_from_epoch - best["epoch"] >= early_stopping[1] and best["epoch"] > 0
    )
    for epoch in range(run.resumed_from_epoch, epochs):
        if stopped:
            break
        epoch_seed = _epoch_seed(seed, epoch)
        _reseed(model, epoch_seed)
        batches = dataset.shuffle(size, seed=epoch_seed, reshuffle_each_iteration=False)
        batches = batches.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)
        batches = batches.apply(tf.data.experimental.assert_cardinality(steps))
        start = time.perf_counter()
        fitted = model.fit(
            batches,
            initial_epoch=epoch,
            epochs=epoch + 1,
            validation_data=validation,
            shuffle=False,  # Shuffled above, as a function of (seed, epoch).
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
                    save_weights(model, best_path)
                else:
                    best["weights"] = model.get_weights()
            stopped = epoch + 1 - best["epoch"] >= patience
        if checkpoint_dir is not None:
            commit_epoch(model, checkpoint_dir, epoch + 1, run.history)
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
            load_weights(model, best_path)
        if log and best["epoch"] != len(run.history):
            log(
                f"{name}: early stopping kept epoch {best['epoch']} "
                f"({early_stopping[0]} {best['value']:.4f})"
            )
        run.best_epoch = best["epoch"]
    return run
