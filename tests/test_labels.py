"""Label restoration from real CIFAR-10 (JPEG) batches, and each method's refusals."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfleak import models
from tfleak.attacks import labels
from tfleak.data import index_image_folder, load_examples, sample_batch
from tfleak.metrics import label_multiset_accuracy


@pytest.fixture(scope="module")
def cifar_labels(shared_data):
    """The 10,000 CIFAR-10 (JPEG) test labels, from the folder names (nothing decoded)."""
    return np.asarray(index_image_folder(shared_data / "cifar10" / "test").labels)


@pytest.fixture(scope="module")
def resnet20():
    return models.get_victim("resnet20", (32, 32, 3), 10, seed=0)


def _batch(shared_data, cifar_labels, batch_size, label_mode, seed):
    rows = sample_batch(cifar_labels, batch_size, label_mode, seed=seed)
    images, true_labels, _ = load_examples("cifar10", rows, "test", str(shared_data))
    return images, true_labels


def _linear_victim(use_bias: bool = True, signed: bool = False) -> models.Victim:
    """Flatten -> Dense(10) on 8x8 RGB: its features are the pixels (in [-1, 1] if signed)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inputs) if signed else inputs
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, use_bias=use_bias, kernel_initializer="glorot_uniform")(x)
    return models.as_victim(keras.Model(inputs, outputs))


def test_every_method_is_registered():
    assert set(labels.LABEL_STRATEGIES) == {
        "idlg",
        "idlg_batch",
        "gradinversion",
        "counts",
        "ilrg",
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unique_labels_of_a_real_batch_of_8(resnet20, shared_data, cifar_labels, seed):
    images, true_labels = _batch(shared_data, cifar_labels, 8, "unique", seed)
    observed = resnet20.gradient(images, true_labels)
    gradinversion = labels.restore_labels_gradinversion(resnet20, observed, 8)
    assert gradinversion.dtype == np.int64 and len(set(gradinversion.tolist())) == 8
    # Measured on this fresh ResNet-20: 8 of 8 for seed 1, 7 of 8 for seeds 0
    # and 2, where the class the model predicts at p ~ 0.26 hides (its column
    # has no negative entry); the count rule reads all 8 every time.
    assert label_multiset_accuracy(true_labels, gradinversion) >= (1.0 if seed == 1 else 0.875)
    counts = labels.restore_labels_counts(resnet20, observed, 8)
    assert sorted(counts.tolist()) == sorted(true_labels.tolist())


@pytest.mark.parametrize("seed", [2, 5, 6, 7])  # batches of 4 with a repeated label
def test_counts_restore_repeated_labels_of_a_real_batch_of_4(
    resnet20, shared_data, cifar_labels, seed
):
    images, true_labels = _batch(shared_data, cifar_labels, 4, "random", seed)
    assert len(set(true_labels.tolist())) < 4  # the point: a label repeats
    observed = resnet20.gradient(images, true_labels)
    restored = labels.LABEL_STRATEGIES["counts"](resnet20, observed, 4)
    assert restored.tolist() == sorted(true_labels.tolist())
    # The real-valued counts sum to the batch, and sit within 0.1 of integers.
    estimate = labels.estimate_class_counts(resnet20, observed, 4)
    assert estimate.sum() == pytest.approx(4.0)
    np.testing.assert_allclose(estimate, np.bincount(true_labels, minlength=10), atol=0.1)


@pytest.mark.parametrize("seed", [2, 5, 6, 7])  # batches of 4 with a repeated label
def test_ilrg_restores_repeated_labels_of_a_real_batch_of_4(
    resnet20, shared_data, cifar_labels, seed
):
    images, true_labels = _batch(shared_data, cifar_labels, 4, "random", seed)
    assert len(set(true_labels.tolist())) < 4
    observed = resnet20.gradient(images, true_labels)
    restored = labels.LABEL_STRATEGIES["ilrg"](resnet20, observed, 4)
    assert restored.dtype == np.int64
    assert restored.tolist() == sorted(true_labels.tolist())
    # Measured on this fresh ResNet-20: iLRG's real counts sit within 0.47 of
    # the true ones (seed 5 is the worst), the single-feature count rule's within 0.1.
    estimate = labels.estimate_class_counts_ilrg(resnet20, observed, 4)
    np.testing.assert_allclose(estimate, np.bincount(true_labels, minlength=10), atol=0.5)


def test_ilrg_is_exact_when_the_batch_shares_one_feature_vector(resnet20, shared_data):
    # The limit case of iLRG's derivation: 8 copies of one real image, so every
    # example has the same feature a and prediction p. Then dW[:, c] = a db_c,
    # every class's embedding e_c = dW[:, c] / db_c is a, every row of P is p,
    # and B db = (P^T - I) n reads B (p - n / B) = B p - n: the counts exactly.
    image, _, _ = load_examples("cifar10", [0], "test", str(shared_data))
    images = np.repeat(image, 8, axis=0)
    true_labels = np.array([3, 3, 3, 5, 0, 0, 7, 7])
    observed = resnet20.gradient(images, true_labels)
    estimate = labels.estimate_class_counts_ilrg(resnet20, observed, 8)
    np.testing.assert_allclose(estimate, [2, 0, 0, 3, 0, 1, 0, 2, 0, 0], atol=1e-3)
    assert labels.restore_labels_ilrg(resnet20, observed, 8).tolist() == sorted(true_labels)


@pytest.mark.parametrize("method", ["gradinversion", "idlg_batch"])
def test_unique_rules_refuse_a_batch_larger_than_the_classes(resnet20, method):
    observed = [tf.ones_like(v) for v in resnet20.trainable_variables]
    with pytest.raises(ValueError, match=r"11 unique labels, but the model has only 10 classes"):
        labels.LABEL_STRATEGIES[method](resnet20, observed, 11)


@pytest.mark.parametrize("method", ["gradinversion", "idlg_batch"])
def test_unique_rules_refuse_signed_features(shared_data, cifar_labels, method):
    # Pixels rescaled to [-1, 1] feed the last layer directly: an absent class's
    # column sum_i a_i p_ic then has negative entries too, so more classes look
    # present than the batch has examples.
    victim = _linear_victim(signed=True)
    images, true_labels = _batch(shared_data, cifar_labels, 2, "unique", 0)
    images = tf.image.resize(images, (8, 8)).numpy()
    observed = victim.gradient(images, true_labels)
    with pytest.raises(ValueError, match=r"features are not non-negative"):
        labels.LABEL_STRATEGIES[method](victim, observed, 2)


@pytest.mark.parametrize(
    "method, message",
    [
        ("counts", r"has no bias, and the class counts are read off"),
        ("ilrg", r"has no bias, and iLRG divides the kernel gradient by the bias gradient"),
    ],
)
def test_count_rules_refuse_a_last_layer_without_bias(shared_data, cifar_labels, method, message):
    victim = _linear_victim(use_bias=False)
    images, true_labels = _batch(shared_data, cifar_labels, 2, "unique", 0)
    observed = victim.gradient(tf.image.resize(images, (8, 8)).numpy(), true_labels)
    with pytest.raises(ValueError, match=message):
        labels.LABEL_STRATEGIES[method](victim, observed, 2)


@pytest.mark.parametrize("method", ["idlg_batch", "gradinversion", "counts", "ilrg"])
def test_batch_methods_refuse_a_zero_gradient(resnet20, method):
    observed = [tf.zeros_like(v) for v in resnet20.trainable_variables]
    with pytest.raises(ValueError, match=r"gradient is zero"):
        labels.LABEL_STRATEGIES[method](resnet20, observed, 4)


@pytest.mark.parametrize("method", ["counts", "ilrg"])
def test_count_rules_refuse_a_gradient_that_is_no_mean_over_the_batch(resnet20, method):
    # A bias gradient of +-1 per class is no mean cross-entropy of 2 examples:
    # n_c = 2 (p_hat_c - db_c) falls below -1 for the classes with db_c = +1.
    # (With a zero kernel gradient iLRG's embeddings are 0, every row of P is
    # softmax(b), and its least-squares counts fall below -1 for those classes too.)
    observed = [tf.zeros_like(v) for v in resnet20.trainable_variables]
    observed[resnet20.classifier_bias_index] = tf.constant([1.0, -1.0] * 5)
    with pytest.raises(ValueError, match=r"count.* is .*, below -1"):
        labels.LABEL_STRATEGIES[method](resnet20, observed, 2)


def test_idlg_is_unchanged(resnet20, shared_data):
    assert labels.LABEL_STRATEGIES["idlg"] is labels.restore_label_idlg
    images, true_labels, _ = load_examples("cifar10", [0, 1000, 5000], "test", str(shared_data))
    for image, label in zip(images, true_labels):
        observed = resnet20.gradient(image[np.newaxis], tf.constant([label]))
        assert labels.restore_label_idlg(resnet20, observed).tolist() == [label]
    # Without a bias it reads the kernel's columns by sign agreement.
    victim = _linear_victim(use_bias=False, signed=True)
    small = tf.image.resize(images, (8, 8)).numpy()
    for image, label in zip(small, true_labels):
        observed = victim.gradient(image[np.newaxis], tf.constant([label]))
        assert labels.restore_label_idlg(victim, observed).tolist() == [label]
    with pytest.raises(ValueError, match=r"iDLG restores the label of a single example"):
        labels.restore_label_idlg(resnet20, observed, batch_size=2)
