"""Many attacks as one batched graph (`tfleak.attacks.stacked`): exact, and used by attack_many."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfleak
from tfleak.attacks import GradientMatching
from tfleak.attacks.stacked import GroupedGradientMatching, grouped_layout_reason
from tfleak.data import load_examples
from tfleak.threats.federated import FedAvg


@pytest.fixture(scope="module")
def cifar(shared_data):
    """32 CIFAR-10 (JPEG) test images and their labels."""
    images, labels, classes = load_examples("cifar10", list(range(32)), "test", str(shared_data))
    return images, labels, classes


def _value_and_gradient(objective):
    @tf.function(autograph=False)
    def value_and_gradient(data, probabilities, observed):
        with tf.GradientTape() as tape:
            tape.watch(data)
            total, distance, terms = objective(data, probabilities, observed)
            summed = tf.reduce_sum(total)
        return total, distance, terms, tape.gradient(summed, data)

    return value_and_gradient


def _rows(victim, images, labels, classes, seed=0):
    """One attack per image: its observed gradient, random dummy data and dummy labels."""
    count = len(images)
    observed = [victim.gradient(images[i : i + 1], labels[i : i + 1]) for i in range(count)]
    stacked = [tf.stack([o[k] for o in observed]) for k in range(len(observed[0]))]
    rng = np.random.default_rng(seed)
    data = tf.constant(rng.uniform(size=(count, 1, *victim.image_shape)), tf.float32)
    probabilities = tf.constant(rng.dirichlet(np.ones(classes), (count, 1)), tf.float32)
    return data, probabilities, stacked


@pytest.mark.parametrize(
    "victim_name, count, distance, priors",
    [
        ("lenet", 32, "l2", {}),
        ("lenet", 32, "cosine", {"tv": 0.1}),
        ("resnet20", 4, "l2", {"bn": 0.01}),
    ],
)
def test_grouped_attacks_equal_each_attack_alone(cifar, victim_name, count, distance, priors):
    # Every attack differentiates its own copy of the victim's weights: the
    # distance, priors and gradient w.r.t. its dummy data must be those of the
    # attack evaluated on its own (float32 rounding apart; the cosine distance
    # cancels digits, so its gradient agrees to about 2e-5 of its largest entry).
    _assert_grouped_equals_alone(cifar, victim_name, count, distance, priors)


def test_grouped_attacks_without_native_grouped_gradients(cifar, monkeypatch):
    # Where TensorFlow cannot differentiate a grouped convolution (a CPU without
    # oneDNN), every group is its own convolution: the same values. ResNet-20
    # takes both forms (its first convolution grouped, the rest split).
    monkeypatch.setattr("tfleak.attacks.stacked.native_grouped_convolutions", lambda: False)
    _assert_grouped_equals_alone(cifar, "resnet20", 4, "l2", {"bn": 0.01})


def _assert_grouped_equals_alone(cifar, victim_name, count, distance, priors):
    images, labels, classes = cifar
    victim = tfleak.models.get_victim(victim_name, images.shape[1:], classes)
    data, probabilities, stacked = _rows(victim, images[:count], labels[:count], classes)
    grouped = _value_and_gradient(GroupedGradientMatching(victim, distance, priors))
    alone = _value_and_gradient(GradientMatching(victim, distance, priors, stacked=True))
    total, distances, terms, gradient = grouped(data, probabilities, stacked)
    for a in range(count):
        row = slice(a, a + 1)
        one = alone(data[row], probabilities[row], [s[row] for s in stacked])
        np.testing.assert_allclose(total[a], one[0][0], rtol=1e-5)
        np.testing.assert_allclose(distances[a], one[1][0], rtol=1e-5)
        for name in priors:
            np.testing.assert_allclose(terms[name][a], one[2][name][0], rtol=1e-5)
        scale = float(tf.reduce_max(tf.abs(one[3])))
        np.testing.assert_allclose(gradient[a] / scale, one[3][0] / scale, atol=5e-5)


def test_grouped_layout_says_what_it_cannot_evaluate(cifar):
    images, labels, classes = cifar
    lenet = tfleak.LeNet(images.shape[1:], classes)
    assert grouped_layout_reason(lenet) is None
    fedavg = FedAvg(local_steps=2, local_learning_rate=0.1)
    assert "not FedSGD" in grouped_layout_reason(lenet, fedavg)
    observed = [lenet.gradient(images[i : i + 1], labels[i : i + 1]) for i in range(2)]
    attack = tfleak.IDLG(iterations=2, restarts=0, update=fedavg)
    with pytest.raises(ValueError, match="grouped layout cannot evaluate this victim: the update"):
        attack.attack_many(lenet, observed, layout="grouped", verbose=0)
    with pytest.raises(ValueError, match="unknown layout 'rows'; choose one of auto, grouped"):
        attack.attack_many(lenet, observed, layout="rows", verbose=0)


def test_attack_many_grouped_recovers_digits_as_alone(mnist):
    # iDLG on three MNIST digits at once, grouped, against each attack alone: the
    # same labels and reconstructions (up to float32 rounding carried through
    # L-BFGS), and the digits recovered.
    victim = tfleak.LeNet((28, 28, 1), 10)
    truths = [(mnist.images[i : i + 1], mnist.labels[i : i + 1]) for i in (1, 2, 3)]
    observed = [victim.gradient(x, tf.constant(y)) for x, y in truths]
    attack = tfleak.IDLG(iterations=60, restarts=0, seed=0)
    many = attack.attack_many(victim, observed, ground_truths=truths, verbose=0, layout="grouped")
    for result, (x, y), g in zip(many, truths, observed):
        alone = attack(victim, g, ground_truth=(x, y), verbose=0)
        np.testing.assert_array_equal(result.labels, y)
        pair = (result.metrics["psnr"], alone.metrics["psnr"])
        assert pair[0] > 20.0 and abs(pair[0] - pair[1]) < 1.0, pair


def test_attack_many_grouped_first_order_matches_per_attack(mnist):
    # Inverting Gradients (signed Adam steps, cosine distance, TV prior) on two
    # digits: the grouped layout reconstructs what the per-attack layout does.
    victim = tfleak.LeNet((28, 28, 1), 10)
    truths = [(mnist.images[i : i + 1], mnist.labels[i : i + 1]) for i in (1, 2)]
    observed = [victim.gradient(x, tf.constant(y)) for x, y in truths]
    attack = tfleak.InvertingGradients(iterations=40, restarts=0, label_strategy="idlg", seed=0)
    runs = {
        layout: attack.attack_many(victim, observed, ground_truths=truths, verbose=0, layout=layout)
        for layout in ("grouped", "per_attack")
    }
    for grouped, alone in zip(runs["grouped"], runs["per_attack"]):
        assert abs(grouped.metrics["psnr"] - alone.metrics["psnr"]) < 0.5
        assert np.abs(grouped.reconstruction - alone.reconstruction).mean() < 0.01
