"""DP-SGD / DP-Adam for Keras 3 models, and the split target trained with it.

DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016,
algorithm 1) replaces a step's gradient by

    g = (1 / M) * (sum_{j=1..M} clip(g_j, C) + N(0, (sigma C)^2 I)),
    clip(g, C) = g * min(1, C / ||g||_2),

where the batch of B examples is cut into M equal consecutive microbatches,
`g_j` is the gradient of microbatch j's mean loss over all trainable
variables together, C is `l2_norm_clip` and sigma `noise_multiplier`
(`tfleak.privacy.query.gaussian_sum`). Any Keras optimizer then applies `g`
(DP-Adam: Adam). With M = B each record is one example and the privacy
accounting of `tfleak.privacy.accounting` holds.

`DPModel` wraps any Keras model with this `train_step`, in one of two
`DP_VARIANTS`, which differ only when the model mixes the examples of a batch
(batch normalization in training mode):

- 'per_example': each microbatch runs through the model alone
  (`tf.vectorized_map` over `model.stateless_call`): `g_j` is the true
  gradient of microbatch j, which a batch-norm layer then normalises by the
  microbatch's own statistics.
- 'full_batch' (tensorflow-privacy's `DPKerasAdamOptimizer`): one forward pass
  over the whole batch; `g_j` is row j of the Jacobian of the M microbatch
  losses of that pass. With batch norm, each row also carries the other
  examples' influence through the batch statistics, so the clip does not
  bound one example's influence and the epsilon is the accountant's number,
  not a proof.

In both, a training-mode forward pass over the whole batch updates the
moving statistics of batch norm exactly as Keras does on the full batch, and
gives the reported loss and metrics; 'full_batch' uses the pass that gives
the gradients, 'per_example' one extra pass (the per-microbatch passes leave
them alone, unlike tensorflow-privacy's `DPSequential`). Those statistics are
computed from the private batch without noise. Group normalization (`norm='group'`)
has no batch statistics: both variants then clip true per-example gradients.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from tfleak.data.omniglot import IMAGE_SIZE, NUM_ALPHABETS
from tfleak.io import atomic_write_bytes
from tfleak.privacy.query import gaussian_sum
from tfleak.split.model import NORMALIZATIONS, on_device_layers, server_layers

__all__ = [
    "DP_VARIANTS",
    "DPModel",
    "dp_target_model",
    "compile_dp_target",
    "build_dp_target",
    "per_example_gradients",
    "jacobian_per_example_gradients",
    "cut_on_device",
    "save_on_device",
    "load_on_device",
]

# name -> what a microbatch's gradient is (see the module docstring).
DP_VARIANTS = {
    "per_example": "each microbatch run through the model alone (vectorized_map)",
    "full_batch": "row of the Jacobian of per-microbatch losses of one whole-batch pass",
}
# Former variant names (after the tensorflow-privacy 0.9 classes) -> what computes the same.
_FORMER_VARIANTS = {
    "optimizer": "full_batch",
    "vectorized_optimizer": "full_batch",
    "dp_model": "per_example",
    "dp_model_xla": "per_example",
}


def _check_variant(variant: str) -> None:
    if variant not in DP_VARIANTS:
        former = _FORMER_VARIANTS.get(variant)
        hint = f" (what {variant!r} computed is now {former!r})" if former else ""
        raise ValueError(
            f"unknown DP variant {variant!r}; choose one of {', '.join(DP_VARIANTS)}{hint}."
        )


def _microbatches(tensor: tf.Tensor, num_microbatches) -> tf.Tensor:
    """`[B, ...]` -> `[M, B / M, ...]`: M equal consecutive microbatches."""
    shape = tf.shape(tensor)
    return tf.reshape(tensor, tf.concat([[num_microbatches, -1], shape[1:]], 0))


def _values(variables) -> list[tf.Tensor]:
    return [tf.convert_to_tensor(v) for v in variables]


def _alone_gradients(model, microbatch_loss, x, y, num_microbatches) -> list[tf.Tensor]:
    """Records of 'per_example': `[M, *variable.shape]` per trainable variable."""
    trainable = _values(model.trainable_variables)
    non_trainable = _values(model.non_trainable_variables)

    def one(microbatch):
        inputs, targets = microbatch
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            outputs, _ = model.stateless_call(trainable, non_trainable, inputs, training=True)
            loss = microbatch_loss(targets, outputs)
        return tape.gradient(loss, trainable, unconnected_gradients="zero")

    return tf.vectorized_map(
        one, (_microbatches(x, num_microbatches), _microbatches(y, num_microbatches))
    )


def _jacobian_gradients(model, microbatch_loss, x, y, num_microbatches):
    """Records of 'full_batch', the whole batch's outputs and its non-trainable updates."""
    trainable = _values(model.trainable_variables)
    non_trainable = _values(model.non_trainable_variables)
    with tf.GradientTape() as tape:
        tape.watch(trainable)
        outputs, updated = model.stateless_call(trainable, non_trainable, x, training=True)
        losses = tf.vectorized_map(
            lambda pair: microbatch_loss(*pair),
            (_microbatches(y, num_microbatches), _microbatches(outputs, num_microbatches)),
        )  # [M]
    records = tape.jacobian(losses, trainable, unconnected_gradients="zero")
    return records, outputs, updated


class DPModel(keras.Model):
    """Wraps a Keras model so that `fit` trains it with DP-SGD (Abadi et al. 2016, alg. 1).

    `train_step` computes one record per microbatch (see the module
    docstring for the two `variant`s), clips each to global L2 norm
    `l2_norm_clip`, sums them, adds `N(0, (noise_multiplier * l2_norm_clip)^2 I)`,
    divides by the number of microbatches and hands the result to the compiled
    optimizer (`optimizer.apply`): with `keras.optimizers.Adam` this is
    DP-Adam. Compile it as usual; each microbatch's loss is the compiled loss
    of that microbatch (`compute_loss`, a mean over its examples). Predicting
    and evaluating are the wrapped model's. The wrapped model's variables are
    the ones trained (`DPModel.model`).

    Example:
      >>> dp = DPModel(model, l2_norm_clip=1.0, noise_multiplier=0.7)
      >>> dp.compile(keras.optimizers.Adam(5e-3), keras.losses.SparseCategoricalCrossentropy())
      >>> dp.fit(dataset.batch(32, drop_remainder=True), epochs=20)
    """

    def __init__(
        self,
        model: keras.Model,
        l2_norm_clip: float,
        noise_multiplier: float,
        num_microbatches: int | None = None,
        variant: str = "per_example",
        **kwargs,
    ):
        """Wraps `model`.

        Args:
          model: a built Keras model (functional, Sequential or subclassed)
            trained on one replica; sample weights and `add_loss` terms are not
            supported.
          l2_norm_clip: C, the largest L2 norm of one microbatch's gradient
            over all variables, > 0 (gradient units); `math.inf` clips nothing
            (with `noise_multiplier=0` only).
          noise_multiplier: ratio of the noise standard deviation to C, >= 0
            and finite; 0 adds no noise (no privacy).
          num_microbatches: M, microbatches per batch: the batch is cut into M
            equal consecutive parts, each clipped as one record; M must divide
            every batch size. None: one example per microbatch (M = B, what
            the privacy accounting assumes).
          variant: a key of `DP_VARIANTS`.
          **kwargs: `keras.Model` arguments (`name`).

        Raises:
          ValueError: an argument out of range or an unknown variant.
        """
        kwargs.setdefault("name", f"dp_{model.name}")
        super().__init__(**kwargs)
        _check_variant(variant)
        if not l2_norm_clip > 0:
            raise ValueError(
                f"l2_norm_clip must be > 0 (math.inf clips nothing); got {l2_norm_clip}."
            )
        if not 0 <= noise_multiplier < math.inf:
            raise ValueError(f"noise_multiplier must be >= 0 and finite; got {noise_multiplier}.")
        if math.isinf(l2_norm_clip) and noise_multiplier > 0:
            raise ValueError(
                f"an infinite l2_norm_clip leaves the noise (noise_multiplier "
                f"{noise_multiplier} times the clip) infinite; clip to a finite norm or set "
                "noise_multiplier=0."
            )
        if num_microbatches is not None and (
            isinstance(num_microbatches, bool) or int(num_microbatches) != num_microbatches
            or num_microbatches < 1
        ):  # fmt: skip
            raise ValueError(
                f"num_microbatches must be an integer >= 1 or None (one example each); got "
                f"{num_microbatches!r}."
            )
        self.model = model
        self.l2_norm_clip = float(l2_norm_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.num_microbatches = None if num_microbatches is None else int(num_microbatches)
        self.variant = variant
        self.built = model.built  # Its only weights are the wrapped model's.

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def _num_microbatches(self, x):
        """M as a Python int where the batch size is known when tracing, else a tensor."""
        batch = x.shape[0]
        if self.num_microbatches is None:
            return tf.shape(x)[0] if batch is None else batch
        if batch is not None and batch % self.num_microbatches:
            raise ValueError(
                f"num_microbatches ({self.num_microbatches}) must divide the batch size "
                f"({batch}): DP-SGD cuts every batch into equal microbatches. Batch with a "
                "multiple of it and drop_remainder=True."
            )
        if batch is None:
            tf.debugging.assert_equal(
                tf.math.floormod(tf.shape(x)[0], self.num_microbatches),
                0,
                message=f"num_microbatches ({self.num_microbatches}) must divide the batch "
                "size; batch with drop_remainder=True.",
            )
        return self.num_microbatches

    def _microbatch_loss(self, y, y_pred):
        return self.compute_loss(y=y, y_pred=y_pred)

    def _private_step(self, x, y):
        """The DP gradient, the whole batch's outputs and its non-trainable updates."""
        num_microbatches = self._num_microbatches(x)
        model = self.model
        if self.variant == "full_batch":
            records, y_pred, updated = _jacobian_gradients(
                model, self._microbatch_loss, x, y, num_microbatches
            )
        else:
            records = _alone_gradients(model, self._microbatch_loss, x, y, num_microbatches)
            # The whole batch's pass: moving statistics, loss and metrics.
            y_pred, updated = model.stateless_call(
                _values(model.trainable_variables),
                _values(model.non_trainable_variables),
                x,
                training=True,
            )
        stddev = self.noise_multiplier * self.l2_norm_clip if self.noise_multiplier else 0.0
        noised = gaussian_sum(records, self.l2_norm_clip, stddev)
        count = tf.cast(num_microbatches, tf.float32)
        return [g / count for g in noised], y_pred, updated

    def private_gradient(self, x, y) -> list[tf.Tensor]:
        """The gradient DP-SGD hands the optimizer for the batch `(x, y)`.

        `(sum_j clip(g_j, C) + N(0, (noise_multiplier C)^2 I)) / M`; no
        variable changes (neither weights nor moving statistics).

        Args:
          x: the model's inputs, `[batch, ...]`.
          y: targets `[batch, ...]` for the compiled loss; the model must be
            compiled.

        Returns:
          One float32 tensor per trainable variable of the wrapped model, of
          that variable's shape.

        Raises:
          ValueError: `num_microbatches` does not divide the batch.
        """
        gradient, _, _ = self._private_step(tf.convert_to_tensor(x), tf.convert_to_tensor(y))
        return gradient

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(
                "DPModel does not support sample weights: DP-SGD clips each microbatch's "
                "mean loss gradient. Drop the weights from the dataset."
            )
        gradient, y_pred, updated = self._private_step(x, y)
        for variable, value in zip(self.model.non_trainable_variables, updated):
            variable.assign(value)
        self.optimizer.apply(gradient, self.model.trainable_variables)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


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
    _check_variant(variant)
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
    _check_variant(variant)
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


def _mean_cross_entropy(labels, probabilities):
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities))


def per_example_gradients(model: keras.Model, images, labels) -> list[tf.Tensor]:
    """Each example's loss gradient with the model run on that example alone.

    What the 'per_example' variant clips (before clipping), with one example
    per microbatch; the model's variables are not changed.

    Args:
      model: a model mapping images `[batch, 105, 105, 1]` to probabilities.
      images: float32 `[batch, 105, 105, 1]` in [0, 1].
      labels: int `[batch]` class ids.

    Returns:
      One float32 tensor per trainable variable, `[batch, *variable.shape]`.
    """
    images = tf.convert_to_tensor(images)
    return _alone_gradients(
        model, _mean_cross_entropy, images, tf.convert_to_tensor(labels), tf.shape(images)[0]
    )


def jacobian_per_example_gradients(model: keras.Model, images, labels) -> list[tf.Tensor]:
    """Each example's loss gradient with the model run on the whole batch.

    What the 'full_batch' variant clips with one example per microbatch: the
    Jacobian of the `[batch]` per-example losses of one training-mode forward
    pass. With batch norm, row i also depends on the other examples. The
    model's variables (moving statistics included) are not changed.

    Args and Returns: as `per_example_gradients`.
    """
    images = tf.convert_to_tensor(images)
    records, _, _ = _jacobian_gradients(
        model, _mean_cross_entropy, images, tf.convert_to_tensor(labels), tf.shape(images)[0]
    )
    return records


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
