"""The split target trained with DP-Adam: build, compile, and cut its on-device stage.

The target is `tfleak.split.model`'s on-device and server layers as one
Sequential model without dropout (`dp_target_model`), wrapped in a `DPModel`
(`compile_dp_target`, `build_dp_target`). After training, `cut_on_device`
takes its on-device stage, which `save_on_device` / `load_on_device` store.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import keras

from tfleak.data.omniglot import IMAGE_SIZE, NUM_ALPHABETS
from tfleak.io import atomic_write_bytes
from tfleak.privacy.dp import DPModel
from tfleak.privacy.records import check_variant
from tfleak.split.model import NORMALIZATIONS, on_device_layers, server_layers

__all__ = [
    "dp_target_model",
    "compile_dp_target",
    "build_dp_target",
    "cut_on_device",
    "save_on_device",
    "load_on_device",
]


def _target_layers(num_classes: int, norm: str) -> list:
    return (
        [keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1))]
        + on_device_layers(0.0, output_name="mobile_output", norm=norm)
        + server_layers(num_classes, 0.0)
    )


def dp_target_model(num_classes: int = NUM_ALPHABETS, norm: str = "batch") -> keras.Sequential:
    """The split target as one Sequential model without dropout, for DP training.

    Its on-device stage ends in the layer named `mobile_output` (codes
    `[batch, 1, 1, 32]`); see `cut_on_device`. Input: float32 images
    `[batch, 105, 105, 1]` in [0, 1]; output: class probabilities
    `[batch, num_classes]`.

    Args:
      num_classes: number of classes, >= 2.
      norm: 'batch' (as published) or 'group' (per-example statistics).
    """
    return keras.Sequential(_target_layers(num_classes, norm), name=f"dp_target_{norm}")


def _check_dp_arguments(noise_multiplier, batch_size, num_microbatches, l2_norm_clip, lr):
    num_microbatches = batch_size if num_microbatches is None else num_microbatches
    if not 0 < noise_multiplier < math.inf:
        raise ValueError(
            f"noise_multiplier must be > 0 and finite; got {noise_multiplier}. For training "
            "without DP use the plain target (tfleak.split.TargetModel)."
        )
    for name, value in (("l2_norm_clip", l2_norm_clip), ("learning_rate", lr)):
        if not 0 < value < math.inf:
            raise ValueError(f"{name} must be > 0 and finite; got {value}.")
    if batch_size < 1 or num_microbatches < 1 or batch_size % num_microbatches:
        raise ValueError(
            f"num_microbatches ({num_microbatches}) must divide batch_size ({batch_size}): DP "
            "Adam splits every batch into equal microbatches. Pick a batch size that is a "
            "multiple of it."
        )
    return num_microbatches


def _check_one_replica(model: keras.Model) -> None:
    replicas = model.distribute_strategy.num_replicas_in_sync
    if replicas > 1:
        raise ValueError(
            f"DP training under {replicas} replicas is not supported: each replica would add "
            "its own noise and the accounting would have to combine them (noise multiplier "
            "times sqrt(replicas) on the global batch). Train the DP target with "
            "--strategy=default (one replica)."
        )


def compile_dp_target(
    model: keras.Model,
    noise_multiplier: float,
    batch_size: int = 32,
    num_microbatches: int | None = None,
    l2_norm_clip: float = 1.0,
    learning_rate: float = 0.005,
    variant: str = "per_example",
    jit_compile: bool = False,
) -> DPModel:
    """Wraps `model` in a `DPModel` and compiles it with DP-Adam.

    Loss: sparse categorical cross-entropy of probabilities; metric:
    'accuracy'.

    Args:
      model: a model built under the strategy it will train under, with one
        replica (e.g. `dp_target_model()`).
      noise_multiplier: ratio of the noise standard deviation to
        `l2_norm_clip`, > 0 and finite.
      batch_size: examples per training batch (train with whole batches:
        `drop_remainder=True`).
      num_microbatches: microbatches per batch, dividing `batch_size`; each is
        clipped as one record. None = `batch_size` (one example each, which
        `compute_epsilon` assumes).
      l2_norm_clip: clipping norm of each microbatch's gradient, > 0, finite.
      learning_rate: Adam's step size, > 0.
      variant: a key of `DP_VARIANTS`.
      jit_compile: compile the train step with XLA.

    Returns:
      The compiled `DPModel` (train it; `cut_on_device` cuts it).

    Raises:
      ValueError: a bad argument, or a model under a strategy with more than
        one replica: every replica would clip its share of the batch and add
        its own noise, which the accounting does not cover.
    """
    check_variant(variant)
    num_microbatches = _check_dp_arguments(
        noise_multiplier, batch_size, num_microbatches, l2_norm_clip, learning_rate
    )
    _check_one_replica(model)
    dp_model = DPModel(model, l2_norm_clip, noise_multiplier, num_microbatches, variant)
    dp_model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return dp_model


def build_dp_target(
    noise_multiplier: float,
    *,
    variant: str = "per_example",
    norm: str = "batch",
    batch_size: int = 32,
    num_microbatches: int | None = None,
    l2_norm_clip: float = 1.0,
    learning_rate: float = 0.005,
    num_classes: int = NUM_ALPHABETS,
    jit_compile: bool = False,
) -> DPModel:
    """Builds the split target (`dp_target_model`) and compiles it for DP-Adam.

    Call under the strategy scope it will train under (one replica).

    Args:
      noise_multiplier: noise standard deviation / `l2_norm_clip`, > 0.
      variant: a key of `DP_VARIANTS`.
      norm: 'batch' (as published) or 'group' (per-example statistics; the
        epsilon holds).
      batch_size: examples per batch; train with `drop_remainder=True`.
      num_microbatches: microbatches per batch, dividing `batch_size`; None =
        one example each (per-example clipping, as `compute_epsilon` assumes).
      l2_norm_clip: clipping norm, > 0.
      learning_rate: Adam's step size, > 0.
      num_classes: number of classes.
      jit_compile: compile the train step with XLA.

    Returns:
      A compiled `DPModel` around the Sequential target, whose on-device stage
      ends in the layer `mobile_output` (`cut_on_device`).

    Raises:
      ValueError: an unknown variant or norm, or a bad argument.
    """
    check_variant(variant)
    if norm not in NORMALIZATIONS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMALIZATIONS)}.")
    num_microbatches = _check_dp_arguments(
        noise_multiplier, batch_size, num_microbatches, l2_norm_clip, learning_rate
    )
    return compile_dp_target(
        dp_target_model(num_classes, norm),
        noise_multiplier,
        batch_size,
        num_microbatches,
        l2_norm_clip,
        learning_rate,
        variant,
        jit_compile,
    )


def cut_on_device(model: keras.Model, layer_name: str = "mobile_output") -> keras.Model:
    """The on-device stage of a Sequential/functional target: inputs to `layer_name`.

    Args:
      model: the target (a `DPModel` is cut through the model it wraps).
      layer_name: the stage's last layer.

    Returns:
      A functional model sharing the target's layers, images
      `[batch, 105, 105, 1]` -> codes `[batch, 1, 1, 32]`.

    Raises:
      ValueError: the model has no layer `layer_name`.
    """
    if isinstance(model, DPModel):
        model = model.model
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise ValueError(f"model {model.name!r} has no layer {layer_name!r}; its layers: {names}.")
    return keras.Model(model.inputs[0], model.get_layer(layer_name).output, name="on_device")


def save_on_device(model: keras.Model, path) -> Path:
    """Saves the cut stage in the native Keras format (`.keras`: config + weights, no code).

    Written atomically (`tfleak.io.atomic_write_bytes`), so a kill leaves the old file or
    the new one.

    Raises:
      ValueError: `path` does not end in '.keras'.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"save to a '.keras' file (native Keras format); got {str(path)!r}.")
    with tempfile.TemporaryDirectory() as folder:
        saved = Path(folder) / path.name
        model.save(saved)
        return atomic_write_bytes(path, saved.read_bytes())


def load_on_device(path) -> keras.Model:
    """Loads a stage saved by `save_on_device`, refusing serialized code (`safe_mode`)."""
    return keras.models.load_model(path, compile=False, safe_mode=True)
