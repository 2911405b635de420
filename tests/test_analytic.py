"""Closed-form recovery (Phong et al. 2017; R-GAP for one convolution) on real images."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfleak
from tfleak.attacks import AnalyticRecovery
from tfleak.attacks.analytic import classifier_features
from tfleak.threats.federated import FedAvg


def _mlp(input_shape=(28, 28, 1), hidden=64, activation="relu", use_bias=True, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation=activation, use_bias=use_bias),
            keras.layers.Dense(10),
        ]
    )


def _cnn(input_shape=(16, 16, 3), filters=8, strides=1, activation="relu", pooling=False):
    keras.utils.set_random_seed(0)
    layers = [
        keras.Input(input_shape),
        keras.layers.Conv2D(filters, 3, strides=strides, activation=activation),
    ]
    layers += [keras.layers.MaxPooling2D()] if pooling else []
    layers += [keras.layers.Flatten(), keras.layers.Dense(10)]
    return keras.Sequential(layers)


@pytest.fixture(scope="module")
def photographs():
    """Real photographs (shipped with matplotlib / scikit-learn) at 16x16, in [0, 1]."""
    from tfleak.data import load_dataset

    return load_dataset("sample", image_size=16).images


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_mlp_gives_real_mnist_digits_back_exactly(mnist, batch):
    x, y = mnist.images[:batch], mnist.labels[:batch]
    victim = tfleak.as_victim(_mlp())
    result = AnalyticRecovery()(victim, victim.gradient(x, y), ground_truth=(x, y))
    assert result.success and result.message.startswith("exact")
    # Exact up to float32 rounding: PSNR is capped at 100 dB for an exact match.
    assert result.metrics["psnr_per_image"] == [100.0] * batch
    matched = result.reconstruction[result.metrics["order"]]
    assert np.abs(matched - x).max() < 1e-4
    assert sorted(result.labels.tolist()) == sorted(y.tolist())
    assert result.reconstruction.shape == (batch, 28, 28, 1)
    assert "tolerance=1e-06" in repr(result.attack)


def test_rescaling_below_the_first_dense_layer_is_undone(mnist):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(2.0, offset=-1.0),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    x, y = mnist.images[:1], mnist.labels[:1]
    victim = tfleak.as_victim(model)
    result = AnalyticRecovery()(victim, victim.gradient(x, y), ground_truth=(x, y))
    assert result.success and result.metrics["psnr"] == 100.0


def test_the_first_dense_layer_is_exact_under_fedavg_too(mnist):
    # Its input does not change between local steps: dW = a^T sum_k delta_k, db = sum_k delta_k.
    x, y = mnist.images[:1], mnist.labels[:1]
    victim = tfleak.as_victim(_mlp())
    fedavg = FedAvg(local_steps=3, local_learning_rate=0.1)
    update = fedavg.share(victim, x, y)
    result = AnalyticRecovery(update=fedavg)(victim, update, ground_truth=(x, y))
    assert result.success and result.metrics["psnr"] == 100.0


def test_classifier_features_are_its_input_for_one_example():
    # Flatten -> Dense(3, relu) -> Dense(2): the classifier's input is relu(x W + b), by hand.
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((2, 2, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="relu", bias_initializer="ones"),
            keras.layers.Dense(2),
        ]
    )
    x = np.array([[[[0.1], [0.9]], [[0.4], [0.6]]]], np.float32)
    kernel, bias = model.layers[1].get_weights()
    expected = np.maximum(x.reshape(1, 4) @ kernel + bias, 0.0)[0]
    victim = tfleak.as_victim(model)
    features = classifier_features(victim, victim.gradient(x, tf.constant([1])))
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_one_convolution_under_the_classifier_gives_a_real_photograph_back(photographs, activation):
    # R-GAP: the active units' forward equations and the kernel gradient determine the image.
    x, y = photographs[:1], np.array([3])
    victim = tfleak.as_victim(_cnn(activation=activation))
    result = AnalyticRecovery()(victim, victim.gradient(x, y), ground_truth=(x, y))
    assert result.success, result.message
    assert result.metrics["psnr"] >= 60.0
    assert result.labels.tolist() == [3]


@pytest.mark.parametrize(
    "model, batch, message",
    [
        (lambda: _cnn(pooling=True), 1, r"after its Conv2D come \['MaxPooling2D'"),
        (lambda: _cnn(strides=4), 1, "fewer equations than the image's 768 values"),
        (lambda: _cnn(), 2, "needs one example"),
        (lambda: _mlp(use_bias=False), 1, "has no bias"),
        (
            lambda: keras.Sequential(
                [
                    keras.Input((4, 4, 1)),
                    keras.layers.Dense(3),
                    keras.layers.Flatten(),
                    keras.layers.Dense(2),
                ]
            ),  # fmt: skip
            1,
            r"takes inputs shaped \[4, 4, 1\], not the flattened image",
        ),
    ],
    ids=["pooling", "strided", "conv-batch", "no-bias", "dense-on-pixels"],
)
def test_a_model_it_cannot_invert_is_refused_with_the_reason(model, batch, message):
    victim = tfleak.as_victim(model())
    with pytest.raises(ValueError, match=message):
        AnalyticRecovery().check(victim, batch)
    x = np.full((batch, *victim.image_shape), 0.5, np.float32)
    with pytest.raises(ValueError, match=message):
        AnalyticRecovery()(victim, victim.gradient(x, np.zeros(batch, np.int64)), batch)


def test_a_batch_no_unit_separates_gives_no_image(mnist):
    # A linear first layer: every unit sees both examples, so every ratio is a mixture.
    x, y = mnist.images[:2], mnist.labels[:2]
    victim = tfleak.as_victim(_mlp(activation="linear"))
    result = AnalyticRecovery()(victim, victim.gradient(x, y), ground_truth=(x, y))
    assert result.reconstruction is None and not result.success
    assert "0 of 2 examples isolated" in result.message
