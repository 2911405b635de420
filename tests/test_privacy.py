"""DP Adam training of the split target, its epsilon, and the saved on-device stage."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_privacy
from tensorflow import keras

from tfleak import privacy, split
from tfleak.data.omniglot import load_omniglot

# n = 13,180 (Omniglot 'test'), batch 32, 20 epochs, delta 1e-5, noise 0.7 / 0.5 / 0.3.
PUBLISHED = {"classic": (4.0, 12.5, 84.7), "rdp": (3.39, 11.35, 82.2)}


@pytest.mark.parametrize("conversion", ["rdp", "classic"])
def test_epsilon_matches_published_triples(conversion):
    epsilons = [
        privacy.compute_epsilon(13180, 32, 20, noise, conversion=conversion)
        for noise in (0.7, 0.5, 0.3)
    ]
    assert epsilons == pytest.approx(PUBLISHED[conversion], rel=0.01)


def test_epsilon_shrinks_with_more_noise_and_fewer_epochs():
    assert privacy.compute_epsilon(2270, 32, 1, 1.0) < privacy.compute_epsilon(2270, 32, 5, 1.0)
    assert privacy.compute_epsilon(2270, 32, 5, 2.0) < privacy.compute_epsilon(2270, 32, 5, 1.0)
    # The tighter conversion never loses to the classic one.
    assert privacy.compute_epsilon(2270, 32, 5, 1.0) <= privacy.compute_epsilon(
        2270, 32, 5, 1.0, conversion="classic"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(noise_multiplier=0.0), "noise_multiplier must be > 0"),
        (dict(noise_multiplier=-1.0), "noise_multiplier must be > 0"),
        (dict(conversion="pld"), "unknown epsilon conversion 'pld'"),
        (dict(batch_size=64, n=32), "batch_size <= n"),
        (dict(delta=1.5), "delta must be in"),
        (dict(noise_multiplier=float("nan")), "noise_multiplier must be finite; got nan"),
        (dict(noise_multiplier=float("inf")), "noise_multiplier must be finite"),
        (dict(delta=float("nan")), "delta must be finite"),
        (dict(epochs=float("inf")), "epochs must be finite"),
        (dict(n=100.5), "n must be an integer"),
        (dict(noise_multiplier="0.7"), "noise_multiplier must be a number"),
        (dict(n=40, batch_size=32, epochs=0.5), "fewer than one training step"),
    ],
)
def test_epsilon_bad_input(kwargs, message):
    arguments = dict(n=13180, batch_size=32, epochs=20, noise_multiplier=0.7) | kwargs
    with pytest.raises(ValueError, match=message):
        privacy.compute_epsilon(**arguments)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(noise_multiplier=0.0), "noise_multiplier must be > 0"),
        (dict(noise_multiplier=0.7, batch_size=32, num_microbatches=5), "must divide batch_size"),
    ],
)
def test_dp_compile_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        privacy.compile_dp_target(privacy.dp_target_model(), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(variant="jax"), "unknown DP variant 'jax'"),
        (dict(norm="layer"), "unknown norm 'layer'"),
        (dict(num_microbatches=0), "must divide batch_size"),
        (dict(noise_multiplier=float("nan")), "noise_multiplier must be > 0 and finite"),
        (dict(l2_norm_clip=float("inf")), "l2_norm_clip must be > 0 and finite"),
    ],
)
def test_build_dp_target_bad_input(kwargs, message):
    arguments = dict(noise_multiplier=0.7) | kwargs
    with pytest.raises(ValueError, match=message):
        privacy.build_dp_target(arguments.pop("noise_multiplier"), **arguments)


def _images(data_dir, count):
    dataset = load_omniglot("small1", data_dir).take(count)
    return dataset.map(lambda e: (tf.cast(e["image"][..., :1], tf.float32) / 255, e["alphabet"]))


def test_dp_step_without_noise_or_clipping_is_an_adam_step(shared_data):
    """Noise 0 and an unreachable clip: the mean of per-example gradients is the batch
    gradient (the loss is their mean, batch norm included), so DP Adam = Adam."""
    images, labels = next(iter(_images(shared_data, 4).batch(4)))
    keras.utils.set_random_seed(0)
    plain = privacy.dp_target_model()
    dp = privacy.dp_target_model()
    dp.set_weights(plain.get_weights())
    plain.compile(keras.optimizers.legacy.Adam(0.005), keras.losses.SparseCategoricalCrossentropy())
    dp.compile(
        tensorflow_privacy.DPKerasAdamOptimizer(
            l2_norm_clip=1e9, noise_multiplier=0.0, num_microbatches=4, learning_rate=0.005
        ),
        keras.losses.SparseCategoricalCrossentropy(reduction=keras.losses.Reduction.NONE),
    )
    plain.train_on_batch(images, labels)
    dp.train_on_batch(images, labels)
    _assert_same_adam_step(plain, dp)


def _assert_same_adam_step(plain, dp):
    """Adam's first step is lr * g / (|g| + eps), about +-0.005 per weight whatever |g|:
    float32 round-off in a near-zero gradient can move a weight by up to a whole step,
    so a few such weights (measured: 1 in 50,176) may differ; the rest agree to 1e-4."""
    differences = np.concatenate(
        [np.abs(a - b).ravel() for a, b in zip(plain.get_weights(), dp.get_weights())]
    )
    assert np.mean(differences > 1e-4) < 1e-3
    assert differences.max() <= 2 * 0.005 + 1e-6


def _batch(shared_data, count, start=0):
    dataset = _images(shared_data, start + count).skip(start)
    return next(iter(dataset.batch(count)))


def test_group_norm_per_example_gradients_ignore_the_rest_of_the_batch(shared_data):
    """The 'dp_model' variants clip each example's gradient with the model run on that
    example alone. With group norm that is the example's true gradient: the same in any
    batch, and their mean is the batch gradient. With batch norm in training mode (the
    published 'optimizer' variant's Jacobian), an example's gradient depends on the batch."""
    images, labels = _batch(shared_data, 8)
    other_images, other_labels = _batch(shared_data, 7, start=8)
    swapped = tf.concat([images[:1], other_images], 0), tf.concat([labels[:1], other_labels], 0)
    keras.utils.set_random_seed(0)
    group = privacy.dp_target_model(norm="group")
    first = privacy.per_example_gradients(group, images, labels)
    second = privacy.per_example_gradients(group, *swapped)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a[0].numpy(), b[0].numpy(), rtol=1e-4, atol=1e-7)
    # Group norm: the mean of the per-example gradients is the whole batch's gradient.
    loss = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        batch_loss = loss(labels, group(images, training=True))
    for per_example, whole in zip(first, tape.gradient(batch_loss, group.trainable_variables)):
        # float32 sums in another order: agree to 1e-3 of the gradient's largest entry.
        scale = float(tf.reduce_max(tf.abs(whole)))
        np.testing.assert_allclose(
            tf.reduce_mean(per_example, 0).numpy(), whole.numpy(), rtol=0, atol=1e-3 * scale
        )
    keras.utils.set_random_seed(0)
    batch_norm = privacy.dp_target_model(norm="batch")
    first = privacy.jacobian_per_example_gradients(batch_norm, images, labels)
    second = privacy.jacobian_per_example_gradients(batch_norm, *swapped)
    assert any(
        not np.allclose(a[0].numpy(), b[0].numpy(), rtol=1e-3, atol=1e-6)
        for a, b in zip(first, second)
    )


def test_dp_model_variant_without_noise_or_clipping_is_an_adam_step(shared_data):
    """DPSequential with group norm, noise 0 and an unreachable clip: the mean of the
    per-example gradients is the batch gradient (shown above), so one step = Adam's."""
    images, labels = _batch(shared_data, 4)
    keras.utils.set_random_seed(0)
    plain = privacy.dp_target_model(norm="group")
    dp = tensorflow_privacy.DPSequential(
        l2_norm_clip=1e9, noise_multiplier=0.0, num_microbatches=4, use_xla=False,
        layers=privacy.dp_target_model(norm="group").layers,
    )  # fmt: skip
    dp.build((None, 105, 105, 1))
    dp.set_weights(plain.get_weights())
    for model in (plain, dp):
        model.compile(
            keras.optimizers.legacy.Adam(0.005), keras.losses.SparseCategoricalCrossentropy()
        )
        model.train_on_batch(images, labels)
    _assert_same_adam_step(plain, dp)


def test_dp_training_runs_and_its_stage_one_is_saved(shared_data, tmp_path):
    """DP Adam ('dp_model' variant, group norm) trains on a dataset that is not a multiple
    of the batch (the remainder is dropped), and the stage cut at `mobile_output` reloads
    from the native Keras format."""
    keras.utils.set_random_seed(0)
    model = privacy.build_dp_target(0.7, batch_size=4, norm="group")
    run = split.train_resumable(
        model, _images(shared_data, 10), epochs=1, batch_size=4, drop_remainder=True, log=None
    )
    assert int(model.optimizer.iterations) == 2  # 10 // 4 whole batches.
    assert np.isfinite(run.final["loss"])
    on_device = privacy.cut_on_device(model)
    path = privacy.save_on_device(on_device, tmp_path / "on_device.keras")
    loaded = privacy.load_on_device(path)
    images = next(iter(_images(shared_data, 3).batch(3)))[0]
    assert loaded(images).shape == (3, 1, 1, 32)
    np.testing.assert_allclose(loaded(images).numpy(), on_device(images).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="native Keras format"):
        privacy.save_on_device(on_device, tmp_path / "on_device.h5")
    with pytest.raises(ValueError, match="no layer 'code'"):
        privacy.cut_on_device(model, "code")
