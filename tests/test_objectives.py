"""Gradient distances, priors and the stop rule, on numbers derived by hand."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfleak.attacks.objectives import cosine_distance, get_gradient_distance, squared_l2
from tfleak.attacks.priors import (
    PriorContext,
    batch_norm_statistics,
    get_prior,
    group_consistency,
    l2_norm,
    total_variation,
)
from tfleak.attacks.trials import StopRule, TrialMonitor

# Two "variables": a 2-vector and a scalar.
DUMMY = [tf.constant([1.0, 2.0]), tf.constant(3.0)]
OBSERVED = [tf.constant([1.0, 0.0]), tf.constant(-1.0)]


def test_squared_l2_sums_over_variables():
    # (1-1)^2 + (2-0)^2 + (3+1)^2 = 0 + 4 + 16.
    assert float(squared_l2(DUMMY, OBSERVED)) == pytest.approx(20.0)
    assert float(squared_l2(OBSERVED, OBSERVED)) == 0.0


def test_cosine_distance_of_the_concatenated_gradients():
    # <(1, 2, 3), (1, 0, -1)> = 1 - 3 = -2; norms sqrt(14) and sqrt(2).
    expected = 1.0 - (-2.0) / (np.sqrt(14.0) * np.sqrt(2.0))
    assert float(cosine_distance(DUMMY, OBSERVED)) == pytest.approx(expected, rel=1e-6)
    # Insensitive to scale: a gradient 5x the observed one is at distance 0.
    scaled = [5.0 * g for g in OBSERVED]
    assert float(cosine_distance(scaled, OBSERVED)) == pytest.approx(0.0, abs=1e-6)
    # Opposite gradients are at the largest distance, 2.
    opposite = [-g for g in OBSERVED]
    assert float(cosine_distance(opposite, OBSERVED)) == pytest.approx(2.0, rel=1e-6)


def test_unknown_distances_and_priors_list_the_valid_names():
    with pytest.raises(
        ValueError, match="unknown gradient distance 'l1'; choose one of cosine, l2"
    ):
        get_gradient_distance("l1")
    with pytest.raises(ValueError, match="unknown prior 'blur'; choose one of bn, group, l2, tv"):
        get_prior("blur")


def test_total_variation_of_a_step_edge():
    # One start, one 2x2 grey image [[0, 1], [0, 1]]: horizontal differences
    # |1-0| twice (mean 1), vertical differences 0 twice (mean 0): TV = 1.
    image = tf.constant([[0.0, 1.0], [0.0, 1.0]])[None, None, :, :, None]
    assert total_variation(image).numpy().tolist() == [1.0]
    # A constant image has none; two starts are scored separately.
    both = tf.concat([image, tf.fill(image.shape, 0.5)], axis=0)
    assert total_variation(both).numpy().tolist() == [1.0, 0.0]


def test_l2_prior_is_the_mean_squared_pixel():
    data = tf.constant([[0.0, 1.0], [1.0, 1.0]])[None, None, :, :, None]  # (0+1+1+1)/4
    assert l2_norm(data).numpy().tolist() == [0.75]


def test_batch_norm_prior_is_zero_at_the_targets_and_weighs_the_first_layer():
    statistics = [
        (tf.constant([[1.0, 2.0]]), tf.constant([[1.0, 1.0]])),
        (tf.constant([[0.0]]), tf.constant([[4.0]])),
    ]
    targets = [
        (tf.constant([1.0, 2.0]), tf.constant([1.0, 1.0])),
        (tf.constant([3.0]), tf.constant([0.0])),
    ]
    context = PriorContext(statistics=statistics, targets=targets)
    data = tf.zeros((1, 1, 2, 2, 1))
    # Layer 1 matches (0); layer 2: |0 - 3| + |4 - 0| = 7.
    assert batch_norm_statistics(data, context).numpy().tolist() == [7.0]
    off = [(tf.constant([[2.0, 2.0]]), tf.constant([[1.0, 1.0]])), statistics[1]]
    # Layer 1 now |(2,2) - (1,2)| = 1, scaled by 10: 10 + 7.
    scaled = batch_norm_statistics(data, PriorContext(off, targets), first_layer_scale=10.0)
    assert scaled.numpy().tolist() == [17.0]


def test_group_consistency_is_zero_until_a_consensus_exists():
    data = tf.ones((2, 1, 2, 2, 1)) * tf.constant([0.0, 1.0])[:, None, None, None, None]
    assert group_consistency(data, PriorContext()).numpy().tolist() == [0.0, 0.0]
    consensus = tf.fill((1, 2, 2, 1), 0.5)
    context = PriorContext(consensus=consensus, consensus_weight=tf.constant(1.0))
    # Each start is 0.5 from the consensus everywhere: 0.25.
    assert group_consistency(data, context).numpy().tolist() == [0.25, 0.25]


def _monitor(rule, zero=100.0):
    return TrialMonitor(rule, zero, iterations=100, trial_index=0, verbose=0, on_snapshot=None)


def _image(start):
    return np.zeros((1, 2, 2, 1), np.float32)


def test_stop_rule_converges_below_the_tolerance():
    monitor = _monitor(StopRule(tolerance=1e-3, stall_ratio=None, stall_window=10, stall_floor=0))
    # Relative distance 0.5 / 100 = 5e-3: not yet; 0.05 / 100 = 5e-4: converged.
    assert not monitor.update(10, np.array([0.5]), np.array([0.5]), _image)
    assert monitor.update(20, np.array([0.05]), np.array([0.05]), _image)
    assert monitor.ending == "converged after 20 iterations"


def test_stop_rule_abandons_a_stalled_round_above_the_floor_only():
    rule = StopRule(tolerance=0.0, stall_ratio=0.5, stall_window=10, stall_floor=1e-3)
    monitor = _monitor(rule)
    assert not monitor.update(10, np.array([10.0]), np.array([10.0]), _image)
    # Ten iterations later the objective fell to 6 > 0.5 * 10: stalled.
    assert monitor.update(20, np.array([6.0]), np.array([6.0]), _image)
    assert monitor.ending.startswith("stalled at relative distance 0.06 after 20 iterations")
    # Below the floor (relative 1e-4 < 1e-3) a slow trial runs on.
    slow = _monitor(rule)
    assert not slow.update(10, np.array([0.02]), np.array([0.02]), _image)
    assert not slow.update(20, np.array([0.015]), np.array([0.015]), _image)


def test_stop_rule_ends_a_round_whose_every_start_diverged():
    monitor = _monitor(StopRule(tolerance=0.0, stall_ratio=None, stall_window=10, stall_floor=0))
    assert monitor.update(5, np.array([np.nan, np.inf]), np.array([np.nan, np.inf]), _image)
    assert monitor.ending == "every start diverged (NaN/inf) by iteration 5"
