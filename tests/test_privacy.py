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
    # Adam's first step is lr * g / (|g| + eps), about +-0.005 per weight; float32
    # round-off in tiny gradients moves a few weights by < 1% of that.
    for a, b in zip(plain.get_weights(), dp.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_dp_training_runs_and_its_stage_one_is_saved(shared_data, tmp_path):
    """DP Adam trains on a dataset that is not a multiple of the batch (the remainder is
    dropped), and the stage cut at `mobile_output` reloads from the native Keras format."""
    keras.utils.set_random_seed(0)
    model = privacy.compile_dp_target(privacy.dp_target_model(), 0.7, batch_size=4)
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
