"""One DP-SGD record per microbatch: the gradients DP-SGD clips, in two `DP_VARIANTS`.

The variants differ only when the model mixes the examples of a batch (batch
normalization in training mode):

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

Group normalization (`norm='group'`) has no batch statistics: both variants
then clip true per-example gradients. Neither changes the model's variables.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = [
    "DP_VARIANTS",
    "alone_gradients",
    "check_variant",
    "jacobian_gradients",
    "jacobian_per_example_gradients",
    "per_example_gradients",
    "variable_values",
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


def check_variant(variant: str) -> None:
    """Raises ValueError for a name that is not a key of `DP_VARIANTS`."""
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


def variable_values(variables) -> list[tf.Tensor]:
    """The variables' current values as tensors (for `stateless_call`)."""
    return [tf.convert_to_tensor(v) for v in variables]


def alone_gradients(model, microbatch_loss, x, y, num_microbatches) -> list[tf.Tensor]:
    """Records of 'per_example': `[M, *variable.shape]` per trainable variable."""
    trainable = variable_values(model.trainable_variables)
    non_trainable = variable_values(model.non_trainable_variables)

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


def jacobian_gradients(model, microbatch_loss, x, y, num_microbatches):
    """Records of 'full_batch', the whole batch's outputs and its non-trainable updates."""
    trainable = variable_values(model.trainable_variables)
    non_trainable = variable_values(model.non_trainable_variables)
    with tf.GradientTape() as tape:
        tape.watch(trainable)
        outputs, updated = model.stateless_call(trainable, non_trainable, x, training=True)
        losses = tf.vectorized_map(
            lambda pair: microbatch_loss(*pair),
            (_microbatches(y, num_microbatches), _microbatches(outputs, num_microbatches)),
        )  # [M]
    records = tape.jacobian(losses, trainable, unconnected_gradients="zero")
    return records, outputs, updated


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
    return alone_gradients(
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
    records, _, _ = jacobian_gradients(
        model, _mean_cross_entropy, images, tf.convert_to_tensor(labels), tf.shape(images)[0]
    )
    return records
