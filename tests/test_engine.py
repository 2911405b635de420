"""The attack engine: priors, stacked starts, batch norm, matching, IG on CIFAR-10 (JPEG)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfleak
from tfleak import metrics
from tfleak.attacks import Candidate, GradientMatching, priors
from tfleak.attacks import labels as labels_lib
from tfleak.data import load_examples


@pytest.fixture(scope="module")
def cifar_batch(shared_data):
    """Four CIFAR-10 (JPEG) test images, labels 3, 8, 8, 0."""
    images, labels, _ = load_examples("cifar10", [0, 1, 2, 3], "test", str(shared_data))
    return images, labels


def _bn_sequential(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )


# -- priors on images small enough to compute by hand -------------------------


def test_total_variation_and_l2_by_hand():
    # One 2x2 grey image [[0, 1], [0, 1]]: horizontal differences |1 - 0| in
    # both rows (mean 1), vertical ones |0 - 0| and |1 - 1| (mean 0): TV = 1.
    # Squares 0, 1, 0, 1: mean 0.5.
    image = tf.constant([[0.0, 1.0], [0.0, 1.0]])[None, None, :, :, None]  # [1, 1, 2, 2, 1]
    assert float(priors.total_variation(image)[0]) == pytest.approx(1.0)
    assert float(priors.l2_norm(image)[0]) == pytest.approx(0.5)
    # A constant image has no variation; starts are scored separately.
    two_starts = tf.concat([image, tf.fill(image.shape, 0.3)], axis=0)
    np.testing.assert_allclose(priors.total_variation(two_starts).numpy(), [1.0, 0.0])


def test_batch_norm_prior_is_zero_at_the_target_statistics():
    mean, variance = tf.constant([[0.5, 2.0]]), tf.constant([[1.0, 4.0]])  # one start, 2 channels
    context = priors.PriorContext(statistics=[(mean, variance)], targets=[(mean[0], variance[0])])
    assert float(priors.batch_norm_statistics(tf.zeros((1, 1, 2, 2, 1)), context)[0]) == 0.0
    # Off by (3, 4) in the mean: ||.||_2 = 5, scaled x10 on the first layer.
    shifted = priors.PriorContext([(mean + [[3.0, 4.0]], variance)], [(mean[0], variance[0])])
    value = priors.batch_norm_statistics(tf.zeros((1, 1, 2, 2, 1)), shifted, first_layer_scale=10)
    assert float(value[0]) == pytest.approx(50.0)


def test_unknown_prior_lists_the_registered_ones():
    message = "unknown prior 'sharpness'; choose one of bn, group, l2, tv"
    with pytest.raises(ValueError, match=message):
        tfleak.InvertingGradients(priors={"sharpness": 1.0})


# -- stacked starts ------------------------------------------------------------


def test_adam_over_stacked_starts_equals_separate_runs(mnist):
    # Adam acts elementwise, so one optimizer over [starts, ...] is the same as
    # one per start: start 1 of a seed-0 pair is the seed-1 single start.
    victim = tfleak.LeNet((28, 28, 1), 10)
    image, label = mnist.images[:1], mnist.labels[:1]
    observed = victim.gradient(image, tf.constant(label))
    objective = GradientMatching(victim, "l2", {"tv": 0.01})
    fixed = tf.zeros((1, 1, 10))

    def run(starts, seed):
        candidate = Candidate(objective, starts, 1, optimise_labels=True, seed=seed, boxed=True)
        candidate.compile(optimizer=keras.optimizers.Adam(0.05), steps_per_execution=5)
        labels = tf.tile(fixed, [starts, 1, 1])
        candidate.fit(Candidate.observations(observed, labels, (), 20), epochs=1, verbose=0)
        return candidate.dummy_data.numpy()

    pair, single = run(2, seed=0), run(1, seed=1)
    np.testing.assert_allclose(pair[1], single[0], atol=1e-5)
    assert not np.allclose(pair[0], pair[1])


# -- victims -------------------------------------------------------------------


def test_as_victim_on_a_sequential_with_batch_norm_and_softmax():
    model = _bn_sequential()
    victim = tfleak.as_victim(model)
    assert victim.num_classes == 5 and len(victim.batch_norm_layers) == 1
    x = tf.random.uniform((3, 8, 8, 3), seed=4)
    y = tf.constant([0, 1, 4])
    # Keras in training mode (batch statistics), on a copy of the model: training
    # mode would update the original's moving statistics.
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    # The final softmax is removed: the victim returns logits.
    np.testing.assert_allclose(
        tf.nn.softmax(victim(x)).numpy(), reference(x, training=True).numpy(), atol=1e-6
    )
    # Its gradient is the one Keras computes in training mode.
    with tf.GradientTape() as tape:
        probabilities = reference(x, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, probabilities))
    expected = tape.gradient(loss, reference.trainable_variables)
    for got, want in zip(victim.gradient(x, y), expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_an_attack_never_changes_the_victim_or_its_moving_statistics(cifar_batch):
    model = tfleak.models.resnet20(seed=1)
    before = [w.numpy().copy() for w in model.weights]
    victim = tfleak.as_victim(model)
    victim_before = [w.numpy().copy() for w in victim.weights]
    images, labels = cifar_batch
    observed = victim.gradient(images[:2], labels[:2])
    attack = tfleak.InvertingGradients(
        iterations=10, snapshot_every=5, priors={"tv": 0.2, "bn": 0.1}
    )
    attack(victim, observed, labels=labels[:2], verbose=0)
    for want, got in zip(before, model.weights):
        np.testing.assert_array_equal(want, got.numpy())
    for want, got in zip(victim_before, victim.weights):
        np.testing.assert_array_equal(want, got.numpy())


def test_a_layer_without_second_order_gradient_is_named():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.Resizing(12, 12, interpolation="nearest", name="nearest_resizing"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    with pytest.raises(ValueError, match="layer 'nearest_resizing' .* no second-order gradient"):
        tfleak.as_victim(model)


def test_augmentation_and_subclassed_models_are_refused_clearly():
    augmented = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.RandomFlip(name="flip"), keras.layers.Flatten(),
         keras.layers.Dense(3)]
    )  # fmt: skip
    with pytest.raises(ValueError, match="layer 'flip' .* draws random numbers"):
        tfleak.as_victim(augmented)

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed model that was never called on images"):
        tfleak.as_victim(Subclassed())


def test_wrong_images_get_a_clear_error():
    victim = tfleak.LeNet((32, 32, 3), 10)
    with pytest.raises(ValueError, match=r"integer pixels \(uint8\). Divide by 255"):
        victim.gradient(np.zeros((1, 32, 32, 3), np.uint8), tf.constant([0]))
    with pytest.raises(ValueError, match=r"takes images shaped \[batch, 32, 32, 3\]; got"):
        victim.gradient(np.zeros((1, 28, 28, 3), np.float32), tf.constant([0]))


# -- labels ----------------------------------------------------------------------


def test_idlg_restores_the_label_when_features_are_negative(mnist):
    # Features multiplied by -1 and a classifier without bias: the true class's
    # kernel column sums to a *positive* number, so the paper's argmin of column
    # sums picks a wrong class; sign agreement of the columns still finds it.
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Rescaling(-1.0),
            keras.layers.Flatten(),
            keras.layers.Dense(10, use_bias=False),
        ]
    )
    victim = tfleak.as_victim(model)
    for index in range(5):
        image, label = mnist.images[index : index + 1], int(mnist.labels[index])
        observed = victim.gradient(image, tf.constant([label]))
        column_sums = tf.reduce_sum(observed[0], axis=0)
        assert int(tf.argmin(column_sums)) != label
        assert labels_lib.restore_label_idlg(victim, observed).tolist() == [label]


def test_degenerate_gradients_are_refused():
    victim = tfleak.LeNet((8, 8, 1), 10)
    zeros = [tf.zeros_like(v) for v in victim.trainable_variables]
    with pytest.raises(ValueError, match="all zeros"):
        tfleak.DLG(iterations=10)(victim, zeros, verbose=0)
    nans = [tf.fill(v.shape, float("nan")) for v in victim.trainable_variables]
    with pytest.raises(ValueError, match="NaN or inf"):
        tfleak.DLG(iterations=10)(victim, nans, verbose=0)


# -- evaluation ------------------------------------------------------------------


def test_matching_scores_a_permuted_reconstruction_as_unpermuted(cifar_batch):
    images, labels = cifar_batch
    noisy = np.clip(images + np.random.default_rng(0).normal(0, 0.05, images.shape), 0, 1)
    in_order = metrics.evaluate(images, noisy, labels, labels)
    permutation = [2, 0, 3, 1]
    shuffled = metrics.evaluate(images, noisy[permutation], labels, labels[permutation])
    assert shuffled["psnr"] == pytest.approx(in_order["psnr"])
    assert shuffled["order"] == [1, 3, 0, 2]
    assert shuffled["label_accuracy"] == 1.0
    # An exact match is reported as a capped, labelled number, never infinity.
    exact = metrics.evaluate(images, images)
    assert exact["psnr"] == metrics.PSNR_CAP_DB == exact["psnr_capped_at"]


def test_label_accuracy_is_a_multiset_score():
    assert metrics.label_multiset_accuracy([3, 3, 5], [5, 3, 1]) == pytest.approx(2 / 3)


def test_ground_truth_in_0_255_is_refused(cifar_batch):
    images, labels = cifar_batch
    victim = tfleak.LeNet((32, 32, 3), 10)
    observed = victim.gradient(images[:1], labels[:1])
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*Divide 0\.\.255 pixels by 255"):
        tfleak.IDLG(iterations=10)(
            victim, observed, ground_truth=(images[:1] * 255, labels[:1]), verbose=0
        )


# -- Inverting Gradients on real CIFAR-10 (JPEG) ----------------------------------------


def test_inverting_gradients_recovers_a_real_cifar_image(cifar_batch):
    # LeNet (DLG's, 10 classes) shares the gradient of one CIFAR-10 (JPEG) test
    # image (a cat). Measured: 18.1 dB after 300 iterations (random init: 7 dB).
    images, labels = cifar_batch
    victim = tfleak.LeNet((32, 32, 3), 10)
    observed = victim.gradient(images[:1], labels[:1])
    attack = tfleak.InvertingGradients(iterations=300)
    result = attack(victim, observed, labels=labels[:1], ground_truth=(images[:1], labels[:1]),
                    verbose=0)  # fmt: skip
    assert result.metrics["psnr"] >= 16.0, result
    assert result.relative_distance < 0.01


def test_inverting_gradients_on_a_batch_of_four_with_matching(cifar_batch):
    images, labels = cifar_batch
    victim = tfleak.LeNet((32, 32, 3), 10)
    observed = victim.gradient(images, labels)
    attack = tfleak.InvertingGradients(iterations=300)
    result = attack(victim, observed, labels=labels, ground_truth=(images, labels), verbose=0)
    assert sorted(result.metrics["order"]) == [0, 1, 2, 3]
    assert result.metrics["label_accuracy"] == 1.0
    assert result.metrics["psnr"] >= 12.0, result
