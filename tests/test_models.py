"""Victim models: the shared gradient, its second-order path to the labels, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfleak import models
from tfleak.attacks import labels


def test_lenet_matches_the_dlg_reference_network():
    # The DLG reference LeNet on 32x32x3 with 100 classes: convs 3*12*25+12 = 912,
    # 2 x (12*12*25+12) = 7,224; pads of 2 keep 32 -> 16 -> 8 -> 8, so the code is
    # 8*8*12 = 768 and the classifier 768*100+100 = 76,900; 85,036 in all, as the
    # PyTorch model has. TF's 'same' padding would not give this network.
    victim = models.LeNet((32, 32, 3), 100)
    assert victim.count_params() == 85_036
    assert victim.classifier.kernel.shape == (768, 100)


def test_dummy_label_receives_a_gradient():
    # DLG moves the dummy label through the gradient of the gradient distance.
    # The victim's loss (log_softmax written out) must pass it on...
    victim = models.LeNet((28, 28, 1), 10)
    x = tf.random.uniform((1, 28, 28, 1), seed=1)
    observed = victim.gradient(x, tf.constant([3]))
    label_logits = tf.Variable(tf.random.normal((1, 10), seed=2))
    with tf.GradientTape() as tape:
        dummy = victim.gradient(x, tf.nn.softmax(label_logits))
        distance = tf.add_n([tf.reduce_sum(tf.square(d - o)) for d, o in zip(dummy, observed)])
    label_gradient = tape.gradient(distance, label_logits)
    assert label_gradient is not None
    assert float(tf.norm(label_gradient)) > 1e-3

    # ...where TF's fused softmax cross entropy does not: the measured fact that
    # made tfleak write its own loss. If TF ever adds the gradient, this says so.
    with tf.GradientTape() as tape:
        with tf.GradientTape() as inner:
            loss = tf.reduce_mean(
                tf.nn.softmax_cross_entropy_with_logits(tf.nn.softmax(label_logits), victim(x))
            )
        fused = inner.gradient(loss, victim.trainable_variables)
        distance = tf.add_n([tf.reduce_sum(tf.square(d - o)) for d, o in zip(fused, observed)])
    fused_label_gradient = tape.gradient(distance, label_logits)
    assert fused_label_gradient is None or float(tf.norm(fused_label_gradient)) == 0.0


@pytest.mark.parametrize("name", ["dense", "mlp", "lenet"])
def test_idlg_restores_real_mnist_labels(name, mnist):
    victim = models.get_victim(name, (28, 28, 1), 10)
    for index in range(8):
        image, label = mnist.images[index : index + 1], mnist.labels[index]
        observed = victim.gradient(image, tf.constant([label]))
        assert labels.restore_label_idlg(victim, observed)[0] == label


def test_flat_gradient_is_one_row_of_all_parameters():
    victim = models.MLP((8, 8, 1), 10, hidden_units=(16,))
    flat = victim.flat_gradient(tf.zeros((2, 8, 8, 1)), tf.constant([1, 2]))
    assert flat.shape == (1, victim.count_params())


def test_label_outside_the_classes_is_rejected():
    victim = models.SingleDense((8, 8, 1), 10)
    with pytest.raises(ValueError, match=r"label 12 is outside the model's classes 0\.\.9"):
        victim.gradient(tf.zeros((1, 8, 8, 1)), tf.constant([12]))


def test_gradient_of_another_model_is_rejected():
    victim = models.LeNet((8, 8, 1), 10)
    other = models.MLP((8, 8, 1), 10)
    gradient = other.gradient(tf.zeros((1, 8, 8, 1)), tf.constant([1]))
    with pytest.raises(ValueError, match="the gradient has 4 tensors but .* has 8 trainable"):
        victim.check_gradient(gradient)
    wrong_shape = [np.zeros((3, 3)) for _ in victim.trainable_variables]
    with pytest.raises(ValueError, match="does not match variable"):
        victim.check_gradient(wrong_shape)


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(
        ValueError,
        match="unknown model 'vgg'; choose one of convnet, dense, lenet, mlp, resnet18, "
        "resnet20, resnet32",
    ):
        models.get_victim("vgg", (8, 8, 1), 10)
