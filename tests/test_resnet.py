"""CIFAR victims: breaching's ResNets and ConvNet, shapes, seeds, second-order gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfleak.models.convnet import convnet
from tfleak.models.resnet import CIFAR10_MEAN, CIFAR10_STD, resnet, resnet18

# Trainable parameters of breaching's models (`sum(p.numel() for p in
# model.parameters())` on breaching 0.1.2's ResNet(..., downsample="B") and ConvNet).
# ResNet-20 by hand: stem 3*16*9 + 2*16 = 464; stage 1, three blocks of
# 2*(16*16*9) + 4*16 = 4,672 -> 14,016; stage 2, first block 16*32*9 + 32*32*9 +
# 4*32 + shortcut 16*32 + 2*32 = 14,528, two more of 2*(32*32*9) + 4*32 = 18,560 ->
# 51,648; stage 3 likewise 57,728 + 2 * 73,984 = 205,696; dense 64*10 + 10 = 650.
# 464 + 14,016 + 51,648 + 205,696 + 650 = 272,474.
BREACHING_PARAMETERS = {
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet18": 11_173_962,
    "convnet": 2_904_970,
}

BUILDERS = {
    "resnet20": lambda **kw: resnet(20, **kw),
    "resnet32": lambda **kw: resnet(32, **kw),
    "resnet18": lambda **kw: resnet18(**kw),
    "convnet": lambda **kw: convnet(**kw),
}


def _trainable(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def _input_gradient_of_gradient_norm(model, images, labels, training):
    """d/dx of ||d loss / d weights||^2: the path every gradient inversion attack takes."""
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as outer:
        outer.watch(images)
        with tf.GradientTape() as inner:
            logits = model(images, training=training)
            loss = tf.reduce_mean(
                -tf.reduce_sum(labels * tf.nn.log_softmax(logits, axis=-1), axis=-1)
            )
        gradient = inner.gradient(loss, model.trainable_variables)
        norm = tf.add_n([tf.reduce_sum(tf.square(g)) for g in gradient])
    return outer.gradient(norm, images)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_parameters_shapes_and_second_order_gradient(name):
    model = BUILDERS[name](num_classes=10, seed=0)
    assert _trainable(model) == BREACHING_PARAMETERS[name]
    # Flat: no sub-model used as a layer, so every batch-norm input is an outer tensor.
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.output_shape == (None, 10)
    images = tf.random.uniform((1, 32, 32, 3), seed=1)
    for training in (True, False):
        gradient = _input_gradient_of_gradient_norm(model, images, tf.one_hot([3], 10), training)
        assert gradient is not None and gradient.shape == (1, 32, 32, 3)
        assert np.all(np.isfinite(gradient)) and float(tf.norm(gradient)) > 0.0


def test_resnet_depths_and_resolution():
    # 6n + 2 with three stages: ResNet-44 has n = 7 blocks a stage; stages 2 and 3
    # halve 32 -> 16 -> 8, with 16, 32, 64 channels.
    model = resnet(44, num_classes=100)
    assert model.name == "resnet44" and model.output_shape == (None, 100)
    assert model.get_layer("stage3_block7_out").output.shape == (None, 8, 8, 64)
    assert model.get_layer("stage2_block1_out").output.shape == (None, 16, 16, 32)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        resnet(18)
    with pytest.raises(ValueError, match="num_classes"):
        resnet(20, num_classes=1)


def test_stride_two_convolutions_pad_symmetrically_as_pytorch():
    # A stride-2 3x3 convolution with all-ones kernel on an all-ones 32x32 image:
    # padding one pixel on every side (PyTorch) makes the top-left output see
    # a 2x2 patch (4) and the bottom-right a full 3x3 window (9); TF's 'same'
    # would pad only bottom and right, giving 9 top-left and 4 bottom-right.
    model = resnet(20)
    conv = model.get_layer("stage2_block1_conv1")
    probe = keras.Sequential([model.get_layer("stage2_block1_conv1_pad"), conv])
    conv.kernel.assign(tf.ones_like(conv.kernel) / 16.0)  # 16 input channels
    out = probe(tf.ones((1, 32, 32, 16))).numpy()[0, :, :, 0]
    assert out.shape == (16, 16)
    assert out[0, 0] == pytest.approx(4.0) and out[-1, -1] == pytest.approx(9.0)


def test_images_in_unit_range_are_normalised_inside_the_model():
    # The first layer maps the CIFAR-10 mean image to 0 and mean + std to 1.
    layer = resnet(20).get_layer("normalization")
    mean = np.asarray(CIFAR10_MEAN, np.float32)
    std = np.asarray(CIFAR10_STD, np.float32)
    out = layer(np.stack([mean, mean + std])[:, None, None, :]).numpy()
    np.testing.assert_allclose(out[:, 0, 0, :], [[0, 0, 0], [1, 1, 1]], atol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "convnet"])
def test_seed_fixes_the_weights_and_clone_keeps_the_graph(name):
    first, again, other = (BUILDERS[name](seed=s) for s in (0, 0, 1))
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    kernels = [v.numpy() for v in first.trainable_variables if "kernel" in v.name]
    assert all(np.std(k) > 0 for k in kernels)  # no two layers drew from one seed as zeros
    assert not np.array_equal(kernels[0], [v for v in other.trainable_variables][0].numpy())
    # The attack engine clones victims to swap their batch-norm layers.
    clone = keras.models.clone_model(first)
    clone.set_weights(first.get_weights())
    images = tf.random.uniform((2, 32, 32, 3), seed=2)
    np.testing.assert_allclose(clone(images), first(images), atol=1e-5)


def test_second_order_gradient_matches_float64():
    # TF's fused batch-norm kernel gets the gradient of the gradient wrong
    # with batch statistics (measured on ResNet-20: off by 0.7% of the largest
    # entry); Keras' layer is unfused, and matches a float64 copy of the
    # network to float32 precision in both modes.
    model = resnet(20, seed=0)
    keras.config.set_floatx("float64")
    try:
        reference = resnet(20, seed=0)
    finally:
        keras.config.set_floatx("float32")
    reference.set_weights(model.get_weights())
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3))
    labels = np.eye(10)[[3, 5]]
    for training in (True, False):
        ours = _input_gradient_of_gradient_norm(
            model, images.astype(np.float32), labels.astype(np.float32), training
        )
        exact = _input_gradient_of_gradient_norm(reference, images, labels, training)
        scale = float(tf.reduce_max(tf.abs(exact)))
        assert float(tf.reduce_max(tf.abs(tf.cast(ours, tf.float64) - exact))) < 1e-4 * scale
