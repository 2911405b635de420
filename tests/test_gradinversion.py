"""GradInversion: registration, group consistency, Langevin updates, the attack on real images."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfleak
from tfleak.attacks import (
    GRADINVERSION_PRIORS,
    Candidate,
    GradientMatching,
    get_gradient_distance,
    priors,
    registration,
    settings,
)
from tfleak.data import load_examples


@pytest.fixture(scope="module")
def cifar_batch(shared_data):
    """Two CIFAR-10 (JPEG) test images of different classes (airplane, dog)."""
    images, labels, _ = load_examples("cifar10", [0, 5000], "test", str(shared_data))
    assert labels.tolist() == [0, 5]
    return images, labels


# -- registration and the consensus ---------------------------------------------


def test_a_shifted_copy_of_a_real_image_registers_back(cifar_batch):
    images = cifar_batch[0]
    shifts = [(3, -5), (-7, 2)]
    shifted = np.stack([np.roll(x, s, axis=(0, 1)) for x, s in zip(images, shifts)])
    registered, found = registration.register(shifted, images, max_shift=8)
    assert found.numpy().tolist() == [[-3, 5], [7, -2]]
    np.testing.assert_array_equal(registered.numpy(), images)


def test_registration_looks_no_further_than_max_shift(cifar_batch):
    image = cifar_batch[0][:1]
    shifted = np.roll(image, (0, 10), axis=(1, 2))
    found = registration.translation_shifts(shifted, image, max_shift=4).numpy()
    assert np.abs(found).max() <= 4
    assert registration.translation_shifts(shifted, image).numpy().tolist() == [[0, -10]]


def test_registration_lets_a_shifted_seed_join_the_consensus(cifar_batch):
    # Three seeds found the same batch; one of them placed its images 2 px down
    # and 3 px left. The plain mean blurs; the registered consensus is exact.
    images = cifar_batch[0]
    seeds = np.stack([images, images, np.roll(images, (2, -3), axis=(1, 2))])
    registered = registration.group_consensus(tf.constant(seeds), "translation", max_shift=8)
    plain = registration.group_consensus(tf.constant(seeds), "none")
    np.testing.assert_allclose(registered.numpy(), images, atol=1e-6)
    np.testing.assert_allclose(plain.numpy(), seeds.mean(axis=0), atol=1e-6)
    assert np.abs(plain.numpy() - images).mean() > 0.02


def test_group_prior_is_zero_at_the_consensus_and_before_one_exists(cifar_batch):
    data = tf.constant(np.stack([cifar_batch[0], cifar_batch[0] * 0.5]))
    consensus = tf.constant(cifar_batch[0])
    value = priors.group_consistency(data, priors.PriorContext(consensus=consensus)).numpy()
    assert value[0] == 0.0
    np.testing.assert_allclose(value[1], np.mean((cifar_batch[0] * 0.5) ** 2), rtol=1e-5)
    assert priors.group_consistency(data, priors.PriorContext()).numpy().tolist() == [0.0, 0.0]


def test_the_group_prior_is_the_papers_norm(cifar_batch):
    # Eq. 8: ||x_g - E(x_G)||_2 over the seed's batch, not squared, not a mean.
    data = tf.constant(np.stack([cifar_batch[0], cifar_batch[0] * 0.5]))
    context = priors.PriorContext(consensus=tf.constant(cifar_batch[0]))
    value = priors.get_prior("group")(data, context).numpy()
    assert value[0] < 1e-6
    np.testing.assert_allclose(value[1], np.linalg.norm(cifar_batch[0] * 0.5), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown form 'cube'"):
        priors.group_consistency(data, context, form="cube")


def test_deepinversion_priors_and_the_layerwise_gradient_norm_by_hand():
    # A 4 x 4 step edge (columns 0-1 at 0, 2-3 at 1): the horizontal
    # differences hold four 1s (norm 2), the vertical none, each diagonal
    # three (norm sqrt(3)): 2 + 2 sqrt(3).
    edge = np.zeros((1, 1, 4, 4, 1), np.float32)
    edge[..., 2:, :] = 1.0
    tv = priors.get_prior("tv_norms")(tf.constant(edge)).numpy()
    np.testing.assert_allclose(tv, [2 + 2 * np.sqrt(3)], rtol=1e-6)
    # Images of ones and of zeros, 4 x 4 x 3: norms sqrt(48) and 0, mean sqrt(48) / 2.
    batch = np.stack([np.ones((4, 4, 3)), np.zeros((4, 4, 3))]).astype(np.float32)[None]
    np.testing.assert_allclose(priors.get_prior("l2_norms")(batch).numpy(), [np.sqrt(48) / 2])
    # Two variables: one off by (3, -4) (norm 5, squared 25), one matched:
    # the sum of norms is 5 where the squared L2 distance is 25.
    dummy = [tf.constant([3.0, 0.0]), tf.constant([[1.0]])]
    observed = [tf.constant([0.0, 4.0]), tf.constant([[1.0]])]
    assert float(get_gradient_distance("l2_norms")(dummy, observed)) == pytest.approx(5.0)
    assert float(get_gradient_distance("l2")(dummy, observed)) == pytest.approx(25.0)


def test_gradinversion_defaults_are_the_papers_terms_over_a_g():
    attack = tfleak.GradInversion()
    objective = attack.objective
    assert objective.distance == "l2_norms"
    # a_k / a_G with a_G = 0.01: TV 1e-4 -> 0.01, L2 1e-6 -> 1e-4, BN 0.1 -> 10, group 0.01 -> 1.
    expected = {"tv_norms": 0.01, "l2_norms": 1e-4, "bn": 10.0, "group": 1.0}
    assert objective.priors == pytest.approx(expected)
    # Group consistency from a tenth of the run, refreshed every twentieth.
    assert (objective.group.warmup, objective.group.every) == (200, 100)
    short = tfleak.GradInversion(iterations=150, gradient_weight=1.0)
    assert (short.objective.group.warmup, short.objective.group.every) == (15, 7)
    assert short.objective.priors == GRADINVERSION_PRIORS
    longer = attack.replace(iterations=20_000, group_warmup=2000)
    assert longer.solver.iterations == 20_000 and "'l2_norms'" in repr(longer)
    assert longer.objective.group.warmup == 2000
    with pytest.raises(ValueError, match="gradient_weight"):
        tfleak.GradInversion(gradient_weight=0.0)


def test_registration_refuses_mismatched_shapes_and_unknown_names(cifar_batch):
    with pytest.raises(ValueError, match="differ in"):
        registration.register(cifar_batch[0], cifar_batch[0][:, :16])
    with pytest.raises(ValueError, match="unknown registration 'flow'"):
        registration.group_consensus(tf.constant(cifar_batch[0][None]), "flow")
    with pytest.raises(ValueError, match="needs a group of seeds"):
        tfleak.GradInversion(starts=1)
    with pytest.raises(ValueError, match="needs a first-order optimizer"):
        tfleak.GradientInversion(
            objective=settings.Objective(priors={"group": 0.01}),
            solver=settings.LBFGS(),
            trials=settings.Trials(starts=2),
        )


# -- Langevin updates --------------------------------------------------------------


def _one_step(objective, observed, langevin, seed=3):
    candidate = Candidate(objective, 2, 1, optimise_labels=False, langevin=langevin, seed=seed)
    candidate.compile(optimizer=keras.optimizers.Adam(0.1), steps_per_execution=1)
    start = candidate.dummy_data.numpy()
    labels = tf.zeros((2, 1, 10)) + tf.one_hot([[3]], 10)
    candidate.fit(Candidate.observations(observed, labels, (), 1), epochs=1, verbose=0)
    return start, candidate.dummy_data.numpy()


def test_langevin_noise_of_zero_is_plain_adam_and_its_scale_is_lr_times_alpha(cifar_batch):
    victim = tfleak.LeNet((32, 32, 3), 10)
    image, label = cifar_batch[0][:1], cifar_batch[1][:1]
    observed = victim.gradient(image, tf.one_hot(label, 10))
    objective = GradientMatching(victim, "l2", {"tv": 0.01})

    # Plain Adam by hand: the first step moves every pixel by lr * sign(g) (m/sqrt(v) = g/|g|).
    start, stepped = _one_step(objective, observed, langevin=0.0)
    data = tf.Variable(start)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(objective(data, tf.one_hot([[3], [3]], 10), observed)[0])
    by_hand = keras.optimizers.Adam(0.1)
    by_hand.apply_gradients([(tape.gradient(value, data), data)])
    np.testing.assert_allclose(stepped, data.numpy(), atol=1e-6)

    # x <- x - lr * step + lr * alpha_n * N(0, I): the difference is lr * alpha_n * noise.
    _, noisy = _one_step(objective, observed, langevin=0.2)
    noise = (noisy - stepped).ravel()
    assert abs(noise.std() - 0.1 * 0.2) < 0.002
    assert abs(noise.mean()) < 0.002


# -- the attack ----------------------------------------------------------------------


def _small_bn_classifier():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(16, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPool2D(),
            keras.layers.Conv2D(32, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPool2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def test_gradinversion_beats_gradient_matching_alone_on_a_real_batch(cifar_batch):
    # Same batch, same seeds, same 150 steps: GradInversion at the paper's
    # weights, its batch-norm prior matching the statistics the client shared
    # (`bn_target='shared'`), scored on its registered consensus, against the
    # best of 2 seeds matched on the gradient alone. Measured when written:
    # 11.9 dB against 8.9 dB. On this fresh model the moving statistics are
    # still the initial 0 and 1: matched to those (the default), the prior
    # pulls away from the batch (6.5 dB).
    victim = tfleak.as_victim(_small_bn_classifier())
    images, labels = cifar_batch
    observed = victim.gradient(images, tf.one_hot(labels, 10))
    attack = tfleak.GradInversion(iterations=150, starts=2, bn_target="shared")
    # The objective holds a_group / a_G = 0.01 / 0.01.
    assert "a_group" not in repr(attack) and "'group': 1.0" in repr(attack)
    result = attack(
        victim,
        observed,
        batch_size=2,
        ground_truth=(images, labels),
        batch_statistics=victim.batch_statistics(images),
        verbose=0,
    )
    assert sorted(result.labels.tolist()) == [0, 5]  # restored by GradInversion's rule
    baseline = tfleak.GradInversion(iterations=150, starts=2, priors={})
    alone = baseline(victim, observed, batch_size=2, ground_truth=(images, labels), verbose=0)
    assert result.consensus_metrics["psnr"] > alone.metrics["psnr"] + 1.0


def test_a_round_runs_exactly_its_iterations_whatever_the_snapshot_interval(cifar_batch):
    victim = tfleak.LeNet((32, 32, 3), 10)
    image, label = cifar_batch[0][:1], cifar_batch[1][:1]
    observed = victim.gradient(image, tf.one_hot(label, 10))
    attack = tfleak.GradientInversion(
        solver=settings.FirstOrder(iterations=7, snapshot_every=5), label_strategy="known"
    )
    assert attack(victim, observed, labels=label, verbose=0).iterations == 7
