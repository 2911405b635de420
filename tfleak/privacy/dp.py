"""Differentially private training of the split target: DP-Adam, four ways.

tensorflow-privacy 0.9.0 offers several implementations of DP-SGD/DP-Adam
(clip each example's gradient to `l2_norm_clip`, add Gaussian noise of
standard deviation `noise_multiplier * l2_norm_clip` to the sum, step with
Adam). They differ in cost and, with batch normalization, in what an
"example's gradient" means (`DP_VARIANTS`):

- 'optimizer' (`DPKerasAdamOptimizer`, as published) and
  'vectorized_optimizer' (`VectorizedDPKerasAdamOptimizer`): the model runs on
  the whole batch and each microbatch's gradient is a row of the Jacobian of
  the per-microbatch losses. With batch norm in training mode, every
  example's loss depends on the whole batch's statistics, so one example's
  "gradient" also carries the others': the clipping does not bound one
  example's influence and the epsilon is the accountant's number, not a proof.
- 'dp_model' / 'dp_model_xla' (`DPSequential`, `make_dp_model_class`, with and
  without XLA): `tf.vectorized_map` runs the model on each microbatch alone.
  With one example per microbatch a batch norm layer then normalizes that
  example by its own statistics (a batch of one) while computing its
  gradient, and the full-batch forward pass updates the moving statistics,
  which the server's inference uses: training and inference disagree, and the
  moving statistics are computed from the private batch without noise.

Group normalization (`norm='group'`) has no batch statistics at all: every
variant then clips true per-example gradients, and the epsilon holds.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
try:  # TEMPORARY while tfleak.privacy.dp is ported
    import tensorflow_privacy
except ImportError:
    tensorflow_privacy = None
from tensorflow import keras

from tfleak.data.omniglot import IMAGE_SIZE, NUM_ALPHABETS
from tfleak.split.model import NORMALIZATIONS, on_device_layers, server_layers

__all__ = [
    "DP_VARIANTS",
    "dp_target_model",
    "compile_dp_target",
    "build_dp_target",
    "per_example_gradients",
    "jacobian_per_example_gradients",
    "cut_on_device",
    "save_on_device",
    "load_on_device",
]

# name -> what it computes (see the module docstring).
DP_VARIANTS = {
    "optimizer": "DPKerasAdamOptimizer: Jacobian of per-microbatch losses of the whole batch",
    "vectorized_optimizer": "VectorizedDPKerasAdamOptimizer: the same Jacobian, vectorized",
    "dp_model": "DPSequential(use_xla=False): vectorized_map over microbatches run alone",
    "dp_model_xla": "DPSequential(use_xla=True): the same, train_step compiled with XLA",
}


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
    `[batch, 105, 105, 1]` in [0, 1]; output: class probabilities.

    Args:
      num_classes: number of classes.
      norm: 'batch' (as published) or 'group' (per-example statistics).
    """
    return keras.Sequential(_target_layers(num_classes, norm), name=f"dp_target_{norm}")


def _check_dp_arguments(noise_multiplier, batch_size, num_microbatches, l2_norm_clip, lr):
    num_microbatches = batch_size if num_microbatches is None else num_microbatches
    if not noise_multiplier > 0 or noise_multiplier == float("inf"):
        raise ValueError(
            f"noise_multiplier must be > 0 and finite; got {noise_multiplier}. For training "
            "without DP use the plain target (tfleak.split.TargetModel)."
        )
    for name, value in (("l2_norm_clip", l2_norm_clip), ("learning_rate", lr)):
        if not 0 < value < float("inf"):
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
            "times sqrt(replicas) on the global batch), which tensorflow-privacy 0.9 does not "
            "do. Train the DP target with --strategy=default (one replica)."
        )


def compile_dp_target(
    model: keras.Model,
    noise_multiplier: float,
    batch_size: int = 32,
    num_microbatches: int | None = None,
    l2_norm_clip: float = 1.0,
    learning_rate: float = 0.005,
    vectorized: bool = False,
) -> keras.Model:
    """Compiles `model` with tensorflow-privacy's DP Adam optimizer ('optimizer' variants).

    Args:
      model: a model built under the strategy it will train under, with one
        replica (e.g. `dp_target_model()`).
      noise_multiplier: ratio of the noise standard deviation to
        `l2_norm_clip`, > 0.
      batch_size: examples per training batch (train with whole batches:
        `drop_remainder=True`).
      num_microbatches: microbatches per batch, dividing `batch_size`; each is
        clipped as one record. None = `batch_size` (one example each, which
        `compute_epsilon` assumes).
      l2_norm_clip: clipping norm of each microbatch's gradient, > 0.
      learning_rate: Adam's step size.
      vectorized: `VectorizedDPKerasAdamOptimizer` instead of `DPKerasAdamOptimizer`.

    Raises:
      ValueError: a bad argument, or a model under a strategy with more than
        one replica: every replica would clip its share of the batch and add
        its own noise, which tensorflow-privacy 0.9 does not account for.
    """
    num_microbatches = _check_dp_arguments(
        noise_multiplier, batch_size, num_microbatches, l2_norm_clip, learning_rate
    )
    _check_one_replica(model)
    optimizer = (
        tensorflow_privacy.VectorizedDPKerasAdamOptimizer
        if vectorized
        else tensorflow_privacy.DPKerasAdamOptimizer
    )
    model.compile(
        optimizer=optimizer(
            l2_norm_clip=l2_norm_clip,
            noise_multiplier=noise_multiplier,
            num_microbatches=num_microbatches,
            learning_rate=learning_rate,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(reduction=keras.losses.Reduction.NONE),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def build_dp_target(
    noise_multiplier: float,
    *,
    variant: str = "dp_model",
    norm: str = "batch",
    batch_size: int = 32,
    num_microbatches: int | None = None,
    l2_norm_clip: float = 1.0,
    learning_rate: float = 0.005,
    num_classes: int = NUM_ALPHABETS,
) -> keras.Model:
    """Builds and compiles the DP target with one of `DP_VARIANTS`.

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

    Returns:
      A built, compiled Sequential (a `DPSequential` for the 'dp_model'
      variants) whose on-device stage ends in the layer `mobile_output`.

    Raises:
      ValueError: an unknown variant or norm, or a bad argument.
    """
    if variant not in DP_VARIANTS:
        raise ValueError(f"unknown DP variant {variant!r}; choose one of {', '.join(DP_VARIANTS)}.")
    if norm not in NORMALIZATIONS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMALIZATIONS)}.")
    num_microbatches = _check_dp_arguments(
        noise_multiplier, batch_size, num_microbatches, l2_norm_clip, learning_rate
    )
    if variant in ("optimizer", "vectorized_optimizer"):
        return compile_dp_target(
            dp_target_model(num_classes, norm),
            noise_multiplier,
            batch_size,
            num_microbatches,
            l2_norm_clip,
            learning_rate,
            vectorized=variant == "vectorized_optimizer",
        )
    model = tensorflow_privacy.DPSequential(
        l2_norm_clip=l2_norm_clip,
        noise_multiplier=noise_multiplier,
        num_microbatches=num_microbatches,
        use_xla=variant == "dp_model_xla",
        layers=_target_layers(num_classes, norm),
        name=f"dp_target_{norm}",
    )
    _check_one_replica(model)
    model.compile(
        optimizer=keras.optimizers.legacy.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def per_example_gradients(model: keras.Model, images, labels) -> list[tf.Tensor]:
    """Each example's loss gradient with the model run on that example alone.

    What the 'dp_model' variants clip (before clipping): `tf.vectorized_map`
    over the batch, the model in training mode on a batch of one.

    Args:
      model: a model mapping images `[batch, 105, 105, 1]` to probabilities.
      images: float32 `[batch, 105, 105, 1]` in [0, 1].
      labels: int `[batch]` class ids.

    Returns:
      One tensor per trainable variable, `[batch, *variable.shape]`.
    """
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def one(example):
        image, label = example
        with tf.GradientTape() as tape:
            loss = loss_fn(label[None], model(image[None], training=True))
        return tape.gradient(loss, model.trainable_variables)

    return tf.vectorized_map(one, (tf.convert_to_tensor(images), tf.convert_to_tensor(labels)))


def jacobian_per_example_gradients(model: keras.Model, images, labels) -> list[tf.Tensor]:
    """Each example's loss gradient with the model run on the whole batch.

    What the 'optimizer' variants clip with one example per microbatch: the
    Jacobian of the `[batch]` per-example losses of one training-mode forward
    pass. With batch norm, row i also depends on the other examples.

    Returns:
      One tensor per trainable variable, `[batch, *variable.shape]`.
    """
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=keras.losses.Reduction.NONE)
    with tf.GradientTape(persistent=True) as tape:
        losses = loss_fn(labels, model(images, training=True))
    return tape.jacobian(losses, model.trainable_variables)


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
    """Saves the cut stage in the native Keras format (`.keras`: config + weights, no code).

    Written to a temporary file and renamed, so a kill leaves the old file or the new one.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"save to a '.keras' file (native Keras format); got {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp.keras")
    model.save(temporary)
    temporary.replace(path)
    return path


def load_on_device(path) -> keras.Model:
    """Loads a stage saved by `save_on_device`, refusing serialized code (`safe_mode`)."""
    return keras.models.load_model(path, compile=False, safe_mode=True)
