"""Differentially private training of the split target, and what epsilon it buys.

DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016)
clips each example's gradient to L2 norm `l2_norm_clip`, adds Gaussian noise
of standard deviation `noise_multiplier * l2_norm_clip` to the sum, and steps
with Adam (tensorflow-privacy's `DPKerasAdamOptimizer`). The privacy spent is
counted with the Renyi-DP accountant of the sampled Gaussian mechanism
(Mironov, Talwar, Zhang 2019) from `dp_accounting`.

Caveat the published experiment shares: the target keeps its batch
normalization layers, whose training-mode statistics mix the examples of a
batch, so an example's clipped gradient also depends on the others and the
epsilon below is the accountant's number for this training procedure, not a
proof for it. (Group normalization, or batch norm in inference mode, would
restore per-example gradients.)
"""

from __future__ import annotations

import math
from pathlib import Path

import dp_accounting
import numpy as np
import tensorflow_privacy
from tensorflow import keras

from tfleak.data.omniglot import IMAGE_SIZE, NUM_ALPHABETS
from tfleak.split import on_device_layers, server_layers

__all__ = [
    "RDP_ORDERS",
    "EPSILON_CONVERSIONS",
    "compute_epsilon",
    "dp_target_model",
    "compile_dp_target",
    "cut_on_device",
    "save_on_device",
    "load_on_device",
]

# The RDP orders of tensorflow-privacy's tutorials, which the published table used.
RDP_ORDERS = (
    (1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5) + tuple(range(5, 64)) + (128, 256, 512)
)


def _classic_epsilon(orders: np.ndarray, rdp: np.ndarray, delta: float) -> float:
    """Mironov (2017), Proposition 3: eps = min over orders of rdp - log(delta) / (order - 1)."""
    return float(np.min(rdp - math.log(delta) / (orders - 1)))


def _tight_epsilon(orders: np.ndarray, rdp: np.ndarray, delta: float) -> float:
    """Canonne, Kamath, Steinke (2020), Proposition 12, as `dp_accounting` computes it."""
    return float(dp_accounting.rdp.compute_epsilon(orders, rdp, delta)[0])


# name -> RDP-to-(epsilon, delta) conversion.
EPSILON_CONVERSIONS = {"rdp": _tight_epsilon, "classic": _classic_epsilon}


def compute_epsilon(
    n: int,
    batch_size: int,
    epochs: float,
    noise_multiplier: float,
    delta: float = 1e-5,
    conversion: str = "rdp",
    orders=RDP_ORDERS,
) -> float:
    """Epsilon of DP-SGD training, by the RDP accountant of `dp_accounting`.

    Counts `epochs * (n // batch_size)` steps (whole batches, as training with
    `drop_remainder=True` takes), each a Poisson-sampled Gaussian mechanism with
    sampling probability `batch_size / n` (the usual approximation of shuffled
    batches). One microbatch per example, so the sensitivity is the clip norm.

    Args:
      n: number of training examples, >= batch_size.
      batch_size: examples per step, >= 1.
      epochs: passes over the data, > 0 (may be fractional).
      noise_multiplier: ratio of the noise standard deviation to the clipping
        norm, > 0.
      delta: the delta of (epsilon, delta)-DP, in (0, 1); usually < 1 / n.
      conversion: how RDP becomes epsilon: 'rdp' (today's tighter conversion,
        Canonne-Kamath-Steinke 2020; report this) or 'classic' (Mironov 2017,
        as older tensorflow-privacy and the published table computed it).
      orders: RDP orders to optimise over.

    Returns:
      Epsilon (a float > 0; smaller is more private).

    Raises:
      ValueError: an argument out of range or an unknown conversion.

    Example: n = 13,180, batch 32, 20 epochs, noise 0.7 / 0.5 / 0.3 give
    3.39 / 11.34 / 82.1 ('rdp') and 4.02 / 12.46 / 84.6 ('classic').
    """
    if conversion not in EPSILON_CONVERSIONS:
        raise ValueError(
            f"unknown epsilon conversion {conversion!r}; choose one of "
            f"{', '.join(EPSILON_CONVERSIONS)}."
        )
    if batch_size < 1 or n < batch_size:
        raise ValueError(f"need 1 <= batch_size <= n; got batch_size {batch_size}, n {n}.")
    if epochs <= 0:
        raise ValueError(f"epochs must be > 0; got {epochs}.")
    if noise_multiplier <= 0:
        raise ValueError(
            f"noise_multiplier must be > 0 (without noise there is no finite epsilon); "
            f"got {noise_multiplier}."
        )
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1); got {delta}.")
    steps = int(epochs * (n // batch_size))
    accountant = dp_accounting.rdp.RdpAccountant(list(orders))
    event = dp_accounting.PoissonSampledDpEvent(
        batch_size / n, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    accountant.compose(event, steps)
    return EPSILON_CONVERSIONS[conversion](
        np.asarray(accountant.orders, np.float64), np.asarray(accountant.rdp), delta
    )


def dp_target_model(num_classes: int = NUM_ALPHABETS) -> keras.Sequential:
    """The split target as one Sequential model without dropout, for DP training.

    Its on-device stage ends in the layer named `mobile_output` (codes
    `[batch, 1, 1, 32]`); see `cut_on_device`. Input: float32 images
    `[batch, 105, 105, 1]` in [0, 1]; output: class probabilities.
    """
    return keras.Sequential(
        [keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1))]
        + on_device_layers(0.0, output_name="mobile_output")
        + server_layers(num_classes, 0.0),
        name="dp_target",
    )


def compile_dp_target(
    model: keras.Model,
    noise_multiplier: float,
    batch_size: int = 32,
    num_microbatches: int | None = None,
    l2_norm_clip: float = 1.0,
    learning_rate: float = 0.005,
) -> keras.Model:
    """Compiles `model` with DP Adam and a per-example cross-entropy.

    Args:
      model: a model built under the strategy it will train under, with one
        replica.
      noise_multiplier: ratio of the noise standard deviation to
        `l2_norm_clip`, > 0.
      batch_size: examples per training batch (train with whole batches:
        `drop_remainder=True`).
      num_microbatches: microbatches per batch, dividing `batch_size`; each is
        clipped as one record. None = `batch_size` (one example each, which
        `compute_epsilon` assumes).
      l2_norm_clip: clipping norm of each microbatch's gradient, > 0.
      learning_rate: Adam's step size.

    Raises:
      ValueError: a bad argument, or a model under a strategy with more than
        one replica (see below).

    More than one replica is refused: every replica would clip its share of
    the batch and add its own noise N(0, (noise_multiplier * clip)^2), and the
    all-reduce sums R such noises over R times the examples, so the step's
    effective noise multiplier is noise_multiplier * sqrt(R) on a batch of
    R * batch_size only if the per-replica losses are scaled exactly right --
    which tensorflow-privacy 0.9 does not check. Train DP with one replica.
    """
    num_microbatches = batch_size if num_microbatches is None else num_microbatches
    if noise_multiplier <= 0:
        raise ValueError(
            f"noise_multiplier must be > 0; got {noise_multiplier}. For training without "
            "DP use the plain target (tfleak.split.TargetModel)."
        )
    if l2_norm_clip <= 0 or learning_rate <= 0:
        raise ValueError(
            f"need l2_norm_clip and learning_rate > 0; got {l2_norm_clip}, {learning_rate}."
        )
    if batch_size < 1 or num_microbatches < 1 or batch_size % num_microbatches:
        raise ValueError(
            f"num_microbatches ({num_microbatches}) must divide batch_size ({batch_size}): DP "
            "Adam splits every batch into equal microbatches. Pick a batch size that is a "
            "multiple of it."
        )
    replicas = model.distribute_strategy.num_replicas_in_sync
    if replicas > 1:
        raise ValueError(
            f"DP training under {replicas} replicas is not supported: each replica would add "
            "its own noise and the accounting would have to combine them (noise multiplier "
            "times sqrt(replicas) on the global batch), which tensorflow-privacy 0.9 does not "
            "do. Train the DP target with --strategy=default (one replica)."
        )
    model.compile(
        optimizer=tensorflow_privacy.DPKerasAdamOptimizer(
            l2_norm_clip=l2_norm_clip,
            noise_multiplier=noise_multiplier,
            num_microbatches=num_microbatches,
            learning_rate=learning_rate,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(reduction=keras.losses.Reduction.NONE),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def cut_on_device(model: keras.Model, layer_name: str = "mobile_output") -> keras.Model:
    """The on-device stage of a Sequential/functional target: inputs to `layer_name`.

    Raises:
      ValueError: the model has no layer `layer_name`.
    """
    names = [layer.name for layer in model.layers]
    if layer_name not in names:
        raise ValueError(f"model {model.name!r} has no layer {layer_name!r}; its layers: {names}.")
    return keras.Model(model.inputs, model.get_layer(layer_name).output, name="on_device")


def save_on_device(model: keras.Model, path) -> Path:
    """Saves the cut stage in the native Keras format (`.keras`: config + weights, no code)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"save to a '.keras' file (native Keras format); got {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def load_on_device(path) -> keras.Model:
    """Loads a stage saved by `save_on_device`, refusing serialized code (`safe_mode`)."""
    return keras.models.load_model(path, compile=False, safe_mode=True)
