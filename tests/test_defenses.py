"""Defences of the shared update: identity limits, DP-SGD by hand, parsing, adaptive attacks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfleak
from tfleak.privacy import compute_epsilon
from tfleak.threats.defenses import (
    DPSGD,
    DefendedUpdate,
    GaussianNoise,
    Prune,
    Quantize,
    parse_defense,
    parse_defenses,
)
from tfleak.threats.federated import FedAvg, FedSGD

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gradinversion.py"


def _tiny(seed=0, batch_norm=False, conv=4, side=6):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((side, side, 3)), keras.layers.Conv2D(conv, 3, activation="sigmoid")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers += [keras.layers.Flatten(), keras.layers.Dense(10 if side == 8 else 5)]
    return tfleak.as_victim(keras.Sequential(layers))


def _batch():
    return tf.random.stateless_uniform((3, 6, 6, 3), seed=[1, 0]), tf.constant([0, 3, 3])


def _max_difference(a, b) -> float:
    return max(float(tf.reduce_max(tf.abs(x - y))) for x, y in zip(a, b))


# -- identity limits -------------------------------------------------------------


@pytest.mark.parametrize(
    "defenses, tolerance",
    [
        ((), 0.0),
        ((GaussianNoise(0.0),), 0.0),
        ((Prune(0.0),), 0.0),
        # 16 bits: 32767 levels each side, an error of at most max|g| / 65534.
        ((Quantize(16),), 1.0 / 65534),
        # A clip above every example's gradient norm and no noise: the mean of
        # the per-example gradients of one forward pass, the gradient of the mean loss.
        ((DPSGD(1e6, 0.0),), 1e-6),
    ],
    ids=["none", "noise-0", "prune-0", "quantize-16", "dpsgd-no-clip-no-noise"],
)
def test_each_defence_at_its_identity_limit_shares_the_plain_gradient(defenses, tolerance):
    victim, (images, labels) = _tiny(), _batch()
    gradient = victim.gradient(images, labels)
    shared = DefendedUpdate(FedSGD(), defenses).share(victim, images, labels)
    for s, g in zip(shared, gradient):
        bound = tolerance * float(tf.reduce_max(tf.abs(g)))
        assert float(tf.reduce_max(tf.abs(s - g))) <= bound


# -- DP-SGD on a case derived by hand ---------------------------------------------


def _linear_victim(width=1000):
    # Images [1, 1, width] -> Flatten -> Dense(2) with zero weights: logits 0,
    # softmax (1/2, 1/2) for every input.
    model = keras.Sequential(
        [
            keras.Input((1, 1, width)),
            keras.layers.Flatten(),
            keras.layers.Dense(2, kernel_initializer="zeros"),
        ]
    )
    images = np.zeros((2, 1, 1, width), np.float32)
    images[1, 0, 0, 0] = 1.0
    return tfleak.as_victim(model), images, np.array([0, 1])


def test_dpsgd_clips_each_example_and_noises_the_sum_as_derived_by_hand():
    victim, images, labels = _linear_victim()
    # Example 0 (x = 0, label 0): db = p - e_0 = (-1/2, 1/2), dW = x db^T = 0;
    #   norm sqrt(1/2) = 0.707 < C = 0.75, kept.
    # Example 1 (x = e_0, label 1): db = (1/2, -1/2), dW[0] = (1/2, -1/2); norm 1,
    #   clipped by 0.75 / 1: db = dW[0] = (0.375, -0.375).
    # Mean of the two: db = (-0.0625, 0.0625), dW[0] = (0.1875, -0.1875), the
    # rest 0 (the plain gradient of the mean has db = 0, dW[0] = (0.25, -0.25)).
    clipped = DPSGD(0.75, 0.0).private_gradient(victim, images, labels)
    kernel, bias = clipped[0].numpy(), clipped[1].numpy()
    np.testing.assert_allclose(bias, [-0.0625, 0.0625], atol=1e-7)
    np.testing.assert_allclose(kernel[0], [0.1875, -0.1875], atol=1e-7)
    assert not kernel[1:].any()
    np.testing.assert_allclose(victim.gradient(images, labels)[0][0], [0.25, -0.25], atol=1e-7)
    # Noise N(0, (z C)^2) on the sum, then / B: stddev 2 * 0.75 / 2 = 0.75 on
    # every entry; rows 1.. of the kernel are pure noise (1998 entries).
    keras.utils.set_random_seed(0)
    noisy = DPSGD(0.75, 2.0).private_gradient(victim, images, labels)[0].numpy()
    assert np.std(noisy[1:]) == pytest.approx(0.75, rel=0.05)
    assert abs(np.mean(noisy[1:])) < 0.05


def test_dpsgd_epsilon_is_one_gaussian_release_of_the_batch():
    epsilon = DPSGD(0.75, 2.0).epsilon(delta=1e-5)
    # The same release as one DP-SGD step with every example sampled (q = 1).
    assert epsilon == pytest.approx(compute_epsilon(2, 2, 1, 2.0, delta=1e-5), rel=1e-9)
    # Below the classic RDP bound of the Gaussian mechanism, min_a a / (2 z^2) +
    # log(1 / delta) / (a - 1) (Mironov 2017), within a factor 2 of it.
    orders = np.linspace(1.01, 200, 20000)
    classic = float(np.min(orders / (2 * 2.0**2) + math.log(1e5) / (orders - 1)))
    assert 0.5 * classic < epsilon <= classic
    assert DPSGD(0.75, 0.0).epsilon() == math.inf
    assert DefendedUpdate(defenses=(DPSGD(1.0, 1.0), Prune(0.5))).epsilon() > 0
    assert DefendedUpdate(defenses=(Prune(0.5),)).epsilon() is None


def test_dpsgd_inside_fedavg_clips_every_local_step_and_composes_epsilon():
    victim, images, labels = _linear_victim()
    # K = 1 on the whole batch: -lr x the clipped mean derived by hand above.
    one_step = DefendedUpdate(FedAvg(local_steps=1, local_learning_rate=2.0), (DPSGD(0.75, 0.0),))
    np.testing.assert_allclose(
        one_step.share(victim, images, labels)[1].numpy(), [0.125, -0.125], atol=1e-7
    )
    # A clip above every gradient and no noise: plain FedAvg (the identity limit).
    fedavg = FedAvg(local_steps=3, local_learning_rate=0.5, local_batch_size=1)
    plain = fedavg.share(victim, images, labels)
    private = DefendedUpdate(fedavg, (DPSGD(1e6, 0.0),)).share(victim, images, labels)
    for p, q in zip(plain, private):
        np.testing.assert_allclose(q.numpy(), p.numpy(), atol=1e-6)
    # Noise-free, the adaptive attacker's model of the release is the release itself.
    clipped = DefendedUpdate(fedavg, (DPSGD(0.3, 0.0),))
    probabilities = victim.labels_to_probabilities(labels)
    simulated, _ = clipped.simulate(victim, tf.constant(images), probabilities)
    for p, q in zip(clipped.share(victim, images, labels), simulated):
        np.testing.assert_allclose(q.numpy(), p.numpy(), atol=1e-6)
    # 3 steps over mini-batches of 1 from a batch of 2: example 0 is in steps 0 and 2,
    # so its privacy loss is that of two Gaussian releases with every example sampled.
    release = DefendedUpdate(fedavg, (DPSGD(0.75, 2.0),))
    assert release.epsilon(1e-5, batch_size=2) == pytest.approx(
        compute_epsilon(2, 2, 2, 2.0, delta=1e-5), rel=1e-9
    )
    assert release.epsilon(1e-5, batch_size=2) > DPSGD(0.75, 2.0).epsilon(1e-5)
    with pytest.raises(ValueError, match="pass batch_size"):
        release.epsilon()


# -- pruning and quantisation by hand ----------------------------------------------


def test_prune_keeps_the_largest_magnitudes_and_the_attacker_reads_the_mask():
    update = [tf.constant([0.1, -0.4, 0.3, -0.2])]
    (pruned,) = Prune(0.5).apply(update)
    np.testing.assert_allclose(pruned.numpy(), [0.0, -0.4, 0.3, 0.0], rtol=1e-6)
    (masked,) = Prune(0.5).attacker_view([tf.constant([1.0, 2.0, 3.0, 4.0])], [pruned])
    np.testing.assert_array_equal(masked.numpy(), [0.0, 2.0, 3.0, 0.0])


@pytest.mark.parametrize(
    "mode, expected",
    [
        (2, [0.0, -1.0, 1.0]),  # one level each side: round(g / max|g|) * max|g|
        (3, [1 / 3, -1.0, 2 / 3]),  # three levels: round(3 g) / 3
        ("sign", [1.0, -1.0, 1.0]),
        ("float16", [0.199951171875, -1.0, 0.60009765625]),
    ],
)
def test_quantize_by_hand(mode, expected):
    (quantised,) = Quantize(mode).apply([tf.constant([0.2, -1.0, 0.6])])
    np.testing.assert_allclose(quantised.numpy(), expected, rtol=1e-6)


def test_the_adaptive_quantiser_counts_only_the_distance_outside_the_rounding_cell():
    # 2 bits shared [0, -1, 1] (scale 1, one level each side): every value within
    # 1/2 of a shared one rounds to it. 0.3 and -1.2 are inside their cells and
    # seen as the shared value; 1.8 is 0.3 beyond the cell of 1 and seen as 1.3.
    dummy = tf.Variable([0.3, -1.2, 1.8])
    with tf.GradientTape() as tape:
        (view,) = Quantize(2).attacker_view([dummy], [tf.constant([0.0, -1.0, 1.0])])
        total = tf.reduce_sum(view * [1.0, 2.0, 3.0])
    np.testing.assert_allclose(view.numpy(), [0.0, -1.0, 1.3], rtol=1e-6)
    np.testing.assert_array_equal(tape.gradient(total, dummy).numpy(), [0.0, 0.0, 3.0])
    # 'sign': a smooth sign, tanh(d / (max |d| / 20)), +-1 but for the smallest entries.
    (soft,) = Quantize("sign").attacker_view([tf.constant([0.5, -2.0, 1e-4])], None)
    np.testing.assert_allclose(soft.numpy(), [1.0, -1.0, 1e-3], atol=2e-4)


def test_the_adaptive_model_of_a_deterministic_chain_reproduces_the_release():
    victim, (images, labels) = _tiny(), _batch()
    chain = DefendedUpdate(
        FedAvg(local_steps=2, local_batch_size=2, local_learning_rate=0.1),
        (Prune(0.5), Quantize(8)),
    )
    observed = chain.share(victim, images, labels)
    simulated, _ = chain.simulate(victim, images, tf.one_hot(labels, 5), observed)
    assert _max_difference(simulated, observed) < 1e-9
    naive, _ = DefendedUpdate(chain.update, chain.defenses, adaptive=False).simulate(
        victim, images, tf.one_hot(labels, 5), observed
    )
    assert _max_difference(naive, observed) > 1e-4


def test_the_adaptive_dpsgd_model_clips_the_dummy_examples_differentiably():
    victim, (images, labels) = _tiny(), _batch()
    chain = DefendedUpdate(FedSGD(), (DPSGD(0.01, 0.0),))
    observed = chain.share(victim, images, labels)
    dummy = tf.Variable(images + 0.05)
    with tf.GradientTape() as tape:
        simulated, _ = chain.simulate(victim, dummy, tf.one_hot(labels, 5), observed)
        distance = tf.add_n([tf.reduce_sum(tf.square(s - o)) for s, o in zip(simulated, observed)])
    gradient = tape.gradient(distance, dummy)
    assert float(tf.norm(gradient)) > 0 and bool(tf.reduce_all(tf.math.is_finite(gradient)))
    # Each clipped example has norm <= 0.01, so their mean does too.
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(s)) for s in simulated]))
    assert float(norm) <= 0.01 + 1e-7


# -- the attacker told about the pruning ---------------------------------------------


def test_adaptive_attack_on_a_pruned_update_beats_the_naive_one(shared_data):
    from tfleak.data import load_examples

    images, labels, _ = load_examples("cifar10", [0], "test", str(shared_data))
    images = tf.image.resize(images, (8, 8), "area").numpy()  # a real airplane, 8 x 8
    victim = _tiny(conv=8, side=8)
    release = DefendedUpdate(FedSGD(), (Prune(0.7),))
    observed = release.share(victim, images, labels)
    psnr = {}
    for adaptive in (False, True):
        attack = tfleak.IDLG(
            optimizer="adam",
            iterations=200,
            learning_rate=0.1,
            schedule="step",
            restarts=0,
            update=DefendedUpdate(FedSGD(), release.defenses, adaptive=adaptive),
        )
        result = attack(victim, observed, ground_truth=(images, labels), verbose=0)
        assert result.labels.tolist() == labels.tolist()
        psnr[adaptive] = result.metrics["psnr"]
    # Measured: naive 13.4 dB; adaptive 62.8 dB in 300 steps, 39.6 dB in 150.
    assert psnr[True] > 30.0
    assert psnr[False] < 20.0


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("noise", r"defence 'noise' needs a strength, written NAME:STRENGTH: noise:1e-3"),
        ("blur:2", r"unknown defence 'blur' in 'blur:2'; choose one of noise, dpsgd, prune"),
        ("noise:lots", r"the strength 'lots' in 'noise:lots' is not a number"),
        ("noise:-1", r"'noise:-1': the noise stddev must be a finite number >= 0"),
        ("dpsgd:1.0", r"CLIP/MULTIPLIER \(e.g. dpsgd:1.0/0.5\)"),
        ("dpsgd:0/0.5", r"l2_norm_clip must be a finite number > 0"),
        ("prune:1", r"the pruned fraction must be in \[0, 1\)"),
        ("quantize:1", r"one bit is quantize:sign"),
        ("quantize:int8", r"quantize takes 'float16', 'sign' or a number of bits"),
    ],
)
def test_parse_errors_name_the_problem_and_the_form(text, message):
    with pytest.raises(ValueError, match=message):
        parse_defense(text)


def test_parse_round_trips_and_none():
    texts = ["noise:0.001", "dpsgd:1/0.5", "prune:0.9", "quantize:8", "quantize:float16"]
    defenses = parse_defenses(texts)
    assert [d.spec for d in defenses] == texts
    assert parse_defenses(["none"]) == () and parse_defenses(None) == ()


def test_dpsgd_refuses_what_it_cannot_guarantee():
    with pytest.raises(ValueError, match="put it first in the chain"):
        DefendedUpdate(FedSGD(), (Prune(0.5), DPSGD(1.0, 1.0)))
    victim, (images, labels) = _tiny(batch_norm=True), _batch()
    with pytest.raises(ValueError, match="batch_norm='eval'"):
        DefendedUpdate(FedSGD(), (DPSGD(1.0, 1.0),)).share(victim, images, labels)


# -- examples/gradinversion.py with a defended FedAvg update ------------------------


def _example(*argv):
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *argv], capture_output=True, text=True, timeout=600
    )


def test_the_example_attacks_a_defended_fedavg_update_and_reports_it(shared_data, tmp_path):
    process = _example(
        "--attack=inverting_gradients",
        "--model=lenet",
        f"--data_dir={shared_data}",
        "--indices=3000",
        "--iterations=2",
        "--update=fedavg:2/0.01",
        "--defense=prune:0.5",
        "--defense=quantize:8",
        "--adaptive",
        f"--output_dir={tmp_path}",
    )
    assert process.returncode == 0, process.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["update"] == "fedavg:2/0.01"
    assert metrics["defense"] == ["prune:0.5", "quantize:8"] and metrics["epsilon"] is None
    # The attacker simulates the same release: two local steps, both defences, adaptively.
    simulated = metrics["hyperparameters"]["update"]
    assert simulated["update"]["local_steps"] == 2 and simulated["adaptive"] is True
    assert simulated["defenses"] == [{"fraction": 0.5}, {"mode": 8}]
