"""The batched L-BFGS's compact direction (`tfleak.attacks.lbfgs`) against the two-loop
recursion."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfleak.attacks.lbfgs import CompactResults, _push, compact_direction

ROWS, SLOTS, DIMENSION = 3, 5, 40


def _two_loop(pairs, gradient):
    """-H g by Nocedal and Wright's Algorithm 7.4 over `pairs` (oldest first), in float64."""
    q = gradient.astype(np.float64)
    alphas = []
    for s, y in reversed(pairs):
        alpha = (s @ q) / (s @ y)
        alphas.append(alpha)
        q = q - alpha * y
    s, y = pairs[-1]
    r = (s @ y) / (y @ y) * q
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        r = r + (alpha - (y @ r) / (s @ y)) * s
    return -r


def _state(position, gradient, pushed=None):
    zeros = tf.zeros([ROWS])
    return CompactResults(
        converged=tf.zeros([ROWS], tf.bool),
        failed=tf.zeros([ROWS], tf.bool),
        num_iterations=tf.constant(1),
        num_objective_evaluations=tf.constant(1),
        position=tf.constant(position, tf.float32),
        objective_value=zeros,
        objective_gradient=tf.constant(gradient, tf.float32),
        position_deltas=tf.zeros([ROWS, SLOTS, DIMENSION]),
        gradient_deltas=tf.zeros([ROWS, SLOTS, DIMENSION]),
        pairs=tf.zeros([ROWS, SLOTS, SLOTS]),
        pushed=tf.zeros([ROWS], tf.int32) if pushed is None else pushed,
        pending_step=zeros,
    )


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("pushes", [3, 13])
def test_compact_direction_is_the_two_loop_recursion(pushes, in_place):
    """After more pairs than slots, the ring buffers give tfp's two-loop direction
    over each row's newest pairs; a step without curvature is skipped."""
    rng = np.random.default_rng(0)
    # A convex quadratic per row: y = A s with A positive definite, so s . y > 0.
    matrices = [m @ m.T + np.eye(DIMENSION) for m in rng.normal(size=(ROWS, DIMENSION, DIMENSION))]
    position = rng.normal(size=(ROWS, DIMENSION))
    gradient = np.stack([a @ x for a, x in zip(matrices, position)])
    state = _state(position, gradient)
    kept = [[] for _ in range(ROWS)]
    # tf.function: the in-place write must see its histories as a graph's own.
    push = tf.function(lambda state, before: _push(state, before, in_place), autograph=False)
    for step in range(pushes):
        moved = position + rng.normal(size=position.shape)
        moved_gradient = np.stack([a @ x for a, x in zip(matrices, moved)])
        if step == 1:  # row 0 steps without curvature: its pair is skipped.
            moved[0], moved_gradient[0] = position[0] + 1.0, gradient[0] - 1.0
        for r in range(ROWS):
            s, y = moved[r] - position[r], moved_gradient[r] - gradient[r]
            if s @ y > 1e-10:
                kept[r].append((s, y))
        moved_state = state._replace(
            position=tf.constant(moved, tf.float32),
            objective_gradient=tf.constant(moved_gradient, tf.float32),
        )
        state = push(moved_state, state)  # in place: overwrites `state`'s histories
        position, gradient = moved, moved_gradient
    assert state.pushed.numpy().tolist() == [len(k) for k in kept]
    direction = compact_direction(state).numpy()
    for r in range(ROWS):
        expected = _two_loop(kept[r][-SLOTS:], gradient[r])
        scale = np.abs(expected).max()
        np.testing.assert_allclose(direction[r], expected, rtol=2e-4, atol=2e-4 * scale)
