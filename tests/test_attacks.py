"""DLG and iDLG recover real images and labels from their gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfleak
from tfleak.data import load_dataset


@pytest.fixture(scope="module")
def mnist_lenet():
    return tfleak.LeNet((28, 28, 1), 10)


@pytest.fixture(scope="module")
def sample_images():
    return load_dataset("sample", image_size=32)


@pytest.mark.parametrize("attack_class", [tfleak.DLG, tfleak.IDLG])
def test_lenet_recovers_a_real_mnist_digit(attack_class, mnist, mnist_lenet):
    image, label = mnist.images[1:2], mnist.labels[1:2]  # a handwritten 2
    observed = mnist_lenet.gradient(image, tf.constant(label))
    result = attack_class(seed=0)(mnist_lenet, observed, ground_truth=(image, label), verbose=0)
    assert result.success, result
    assert result.metrics["psnr"] >= 30.0, result
    assert result.labels.tolist() == label.tolist()


@pytest.mark.parametrize("line_search, most_per_iteration", [("armijo", 1.3), ("hager_zhang", 4)])
def test_both_line_searches_recover_the_digit(line_search, most_per_iteration, mnist, mnist_lenet):
    # Armijo backtracking from the unit step costs about one gradient-distance
    # evaluation per L-BFGS iteration; Hager-Zhang two to three.
    image, label = mnist.images[1:2], mnist.labels[1:2]
    observed = mnist_lenet.gradient(image, tf.constant(label))
    attack = tfleak.IDLG(seed=0, line_search=line_search)
    result = attack(mnist_lenet, observed, ground_truth=(image, label), verbose=0)
    assert result.metrics["psnr"] >= 30.0, result
    assert 1.0 <= result.evaluations / result.iterations <= most_per_iteration, result


@pytest.mark.slow
@pytest.mark.parametrize("attack_class", [tfleak.DLG, tfleak.IDLG])
def test_lenet_recovers_a_natural_image(attack_class, sample_images):
    # Grace Hopper at 32x32x3, the paper's setting of a LeNet with 100 classes.
    image, label = sample_images.images[:1], np.array([42])
    victim = tfleak.LeNet((32, 32, 3), 100)
    observed = victim.gradient(image, tf.constant(label))
    result = attack_class(seed=0)(victim, observed, ground_truth=(image, label), verbose=0)
    assert result.metrics["psnr"] >= 30.0, result
    assert result.labels.tolist() == [42]


def test_dummy_data_fit_lowers_the_gradient_distance(mnist, mnist_lenet):
    image, label = mnist.images[:1], mnist.labels[:1]
    observed = mnist_lenet.gradient(image, tf.constant(label))
    dummy = tfleak.DummyData(mnist_lenet, batch_size=1, seed=3)
    # The dummy model trains the data and the label logits, and holds none of
    # the victim's weights.
    names = [w.name.split(":")[0] for w in dummy.trainable_weights]
    assert names == ["dummy_data", "dummy_label_logits"]
    victim_ids = {id(v) for v in mnist_lenet.weights}
    assert not any(id(w) in victim_ids for w in dummy.weights)
    dummy.compile(optimizer=keras.optimizers.Adam(0.05))
    history = dummy.fit(dummy.observations(observed, steps=40), epochs=3, verbose=0)
    distances = history.history["gradient_distance"]
    assert distances[-1] < 0.5 * distances[0]


def test_adam_attack_runs_through_fit(mnist, mnist_lenet):
    image, label = mnist.images[:1], mnist.labels[:1]
    observed = mnist_lenet.gradient(image, tf.constant(label))
    attack = tfleak.IDLG(optimizer="adam", iterations=60, restarts=0, learning_rate=0.05)
    result = attack(mnist_lenet, observed, ground_truth=(image, label), verbose=0)
    assert result.labels.tolist() == label.tolist()
    assert (
        result.history
        and result.history[-1].relative_distance < result.history[0].relative_distance
    )
    assert "optimizer='adam'" in repr(result)


def test_divergence_restarts_then_reports_failure_not_an_image(mnist_lenet):
    # A gradient so large that its squared distance overflows float32 to inf:
    # every start diverges, each round restarts, and no image is made up.
    observed = [tf.fill(v.shape, 1e30) for v in mnist_lenet.trainable_variables]
    attack = tfleak.DLG(iterations=20, restarts=2)
    result = attack(mnist_lenet, observed, verbose=0)
    assert not result.success
    assert result.reconstruction is None and result.labels is None
    assert result.restarts_used == 2
    assert result.message.startswith("failed: every start diverged")


def test_attack_rejects_a_gradient_of_the_wrong_model(mnist_lenet):
    other = tfleak.MLP((28, 28, 1), 10)
    gradient = other.gradient(tf.zeros((1, 28, 28, 1)), tf.constant([0]))
    with pytest.raises(ValueError, match="pass victim.gradient"):
        tfleak.DLG()(mnist_lenet, gradient, verbose=0)


def test_idlg_needs_a_single_example(mnist_lenet):
    observed = mnist_lenet.gradient(tf.zeros((2, 28, 28, 1)), tf.constant([0, 1]))
    with pytest.raises(ValueError, match="restores the label of a single example"):
        tfleak.IDLG()(mnist_lenet, observed, batch_size=2, verbose=0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optimizer", "rmsprop", "unknown optimizer .rmsprop.; choose one of lbfgs, adam, sgd"),
        ("distance", "l1", "unknown distance 'l1'; choose one of l2, cosine"),
        ("iterations", 0, "iterations must be at least 1"),
        ("restarts", -1, "restarts must be >= 0"),
        ("line_search", "wolfe", "unknown line_search 'wolfe'; choose one of hager_zhang, armijo"),
    ],
)
def test_bad_hyperparameters(field, value, message):
    with pytest.raises(ValueError, match=message):
        tfleak.DLG(**{field: value})


def test_compiled_solver_cache_does_not_keep_victims_alive():
    # Attacks on one victim reuse its traced L-BFGS graphs; the cache must not
    # hold the victim, or a sweep over many victims would never free them.
    import gc
    import weakref

    from tfleak.attacks import lbfgs

    victim = tfleak.LeNet((8, 8, 1), 10)
    observed = victim.gradient(tf.zeros((1, 8, 8, 1)), tf.constant([1]))
    tfleak.DLG(iterations=20, restarts=0)(victim, observed, verbose=0)
    assert victim in lbfgs._SOLVERS
    alive = weakref.ref(victim)
    del victim, observed
    gc.collect()
    assert alive() is None


def test_attacks_differing_in_seed_and_budget_share_one_traced_step(mnist):
    # A study's repeats and settings reuse the compiled first-order step (the
    # seed, learning rate and budget are variables of it), and the reused
    # step gives what a fresh one gives.
    from tfleak.attacks import solvers

    image, label = mnist.images[:1], mnist.labels[:1]

    def attack(victim, seed, iterations, learning_rate):
        observed = victim.gradient(image, tf.constant(label))
        settings = dict(optimizer="adam", restarts=0, learning_rate=learning_rate, seed=seed)
        return tfleak.IDLG(iterations=iterations, **settings)(victim, observed, verbose=0)

    victim = tfleak.LeNet((28, 28, 1), 10, seed=1)
    attack(victim, seed=0, iterations=50, learning_rate=0.1)
    reused = attack(victim, seed=5, iterations=100, learning_rate=0.05)
    assert len(solvers._CANDIDATES[victim]) == 1
    fresh = attack(
        tfleak.LeNet((28, 28, 1), 10, seed=1), seed=5, iterations=100, learning_rate=0.05
    )
    np.testing.assert_allclose(reused.reconstruction, fresh.reconstruction, atol=1e-5)
    assert reused.labels.tolist() == fresh.labels.tolist()


@pytest.mark.parametrize(
    "attack, kwargs, message",
    [
        (tfleak.IDLG(), dict(observed_gradients=[]), "observed_gradients is empty"),
        (tfleak.GradInversion(), dict(), "would mix independent attacks"),
        (tfleak.IDLG(), dict(labels=[[1], [2]]), "2 labels for 1 observed gradients"),
    ],
)
def test_attack_many_refuses_what_it_cannot_run(attack, kwargs, message, mnist, mnist_lenet):
    observed = [mnist_lenet.gradient(mnist.images[1:2], tf.constant(mnist.labels[1:2]))]
    kwargs = {"observed_gradients": observed, **kwargs}
    with pytest.raises(ValueError, match=message):
        attack.attack_many(mnist_lenet, **kwargs)
