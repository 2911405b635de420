"""DP-SGD / DP-Adam training (tfleak.privacy.dp, .records, .target), its Gaussian sum query,
its epsilon, the saved on-device stage, and parity with tensorflow-privacy 0.9.0 (recorded in
benchmarks/results/tf_privacy_parity.json by benchmarks/tf_privacy_parity.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfleak import privacy, split
from tfleak.data.omniglot import load_omniglot
from tfleak.privacy import query
from tfleak.privacy.dp import DPModel

PARITY = Path(__file__).resolve().parents[1] / "benchmarks/results/tf_privacy_parity.json"

# n = 13,180 (Omniglot 'test'), batch 32, 20 epochs, delta 1e-5, noise 0.7 / 0.5 / 0.3.
PUBLISHED = {"classic": (4.0, 12.5, 84.7), "rdp": (3.39, 11.35, 82.2)}


@pytest.mark.parametrize("conversion", ["rdp", "classic"])
def test_epsilon_matches_published_triples(conversion):
    epsilons = [
        privacy.compute_epsilon(13180, 32, 20, noise, conversion=conversion)
        for noise in (0.7, 0.5, 0.3)
    ]
    assert epsilons == pytest.approx(PUBLISHED[conversion], rel=0.01)


def test_epsilon_shrinks_with_more_noise_and_fewer_epochs():
    assert privacy.compute_epsilon(2270, 32, 1, 1.0) < privacy.compute_epsilon(2270, 32, 5, 1.0)
    assert privacy.compute_epsilon(2270, 32, 5, 2.0) < privacy.compute_epsilon(2270, 32, 5, 1.0)
    # The tighter conversion never loses to the classic one.
    assert privacy.compute_epsilon(2270, 32, 5, 1.0) <= privacy.compute_epsilon(
        2270, 32, 5, 1.0, conversion="classic"
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(noise_multiplier=0.0), "noise_multiplier must be > 0"),
        (dict(noise_multiplier=-1.0), "noise_multiplier must be > 0"),
        (dict(conversion="pld"), "unknown epsilon conversion 'pld'"),
        (dict(batch_size=64, n=32), "batch_size <= n"),
        (dict(delta=1.5), "delta must be in"),
        (dict(noise_multiplier=float("nan")), "noise_multiplier must be finite; got nan"),
        (dict(noise_multiplier=float("inf")), "noise_multiplier must be finite"),
        (dict(delta=float("nan")), "delta must be finite"),
        (dict(epochs=float("inf")), "epochs must be finite"),
        (dict(n=100.5), "n must be an integer"),
        (dict(noise_multiplier="0.7"), "noise_multiplier must be a number"),
        (dict(n=40, batch_size=32, epochs=0.5), "fewer than one training step"),
    ],
)
def test_epsilon_bad_input(kwargs, message):
    arguments = dict(n=13180, batch_size=32, epochs=20, noise_multiplier=0.7) | kwargs
    with pytest.raises(ValueError, match=message):
        privacy.compute_epsilon(**arguments)


def test_gaussian_epsilon_of_one_release():
    """One unsampled Gaussian release, noise multiplier 1: RDP alpha / 2 at order alpha,
    so the classic conversion is min over orders of alpha / 2 + log(1 / delta) / (alpha - 1);
    at delta 1e-5 (log 1e5 = 11.5129) order 6 wins: 3 + 11.5129 / 5 = 5.3026 (order 5:
    5.3782, order 7: 5.4188)."""
    assert privacy.gaussian_epsilon(1.0, 1, 1e-5, conversion="classic") == pytest.approx(
        3 + math.log(1e5) / 5, rel=1e-9
    )
    # The tighter conversion gains, and composing more releases costs more.
    assert privacy.gaussian_epsilon(1.0, 1, 1e-5) < 5.3026
    assert privacy.gaussian_epsilon(1.0, 4, 1e-5) > privacy.gaussian_epsilon(1.0, 1, 1e-5)
    # Sampling amplifies privacy; no noise is no privacy; no release spends nothing.
    assert privacy.gaussian_epsilon(1.0, 1, 1e-5, sampling_rate=0.01) < 1
    assert privacy.gaussian_epsilon(0.0, 1, 1e-5) == math.inf
    assert privacy.gaussian_epsilon(1.0, 0, 1e-5) == 0.0


def test_compute_epsilon_counts_whole_batches():
    """20 epochs of 13,180 // 32 = 411 whole batches: 8,220 releases sampled at 32 / 13,180."""
    assert privacy.compute_epsilon(13180, 32, 20, 0.7) == privacy.gaussian_epsilon(
        0.7, 8220, 1e-5, 32 / 13180
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(noise_multiplier=-0.1), "noise_multiplier must be >= 0"),
        (dict(steps=2.5), "steps must be an integer >= 0"),
        (dict(steps=-1), "steps must be an integer >= 0"),
        (dict(sampling_rate=0.0), r"sampling_rate must be in \(0, 1\]"),
        (dict(sampling_rate=1.5), r"sampling_rate must be in \(0, 1\]"),
        (dict(delta=0.0), "delta must be in"),
        (dict(noise_multiplier=float("inf")), "noise_multiplier must be finite"),
        (dict(conversion="pld"), "unknown epsilon conversion 'pld'"),
    ],
)
def test_gaussian_epsilon_bad_input(kwargs, message):
    arguments = dict(noise_multiplier=1.0, steps=10, delta=1e-5) | kwargs
    with pytest.raises(ValueError, match=message):
        privacy.gaussian_epsilon(**arguments)


# tensorflow-privacy's GaussianSumQuery: records of two tensors, shapes [2] and [2, 2].
HAND_RECORDS = [
    ([-6.0, 8.0], [[0.0, 0.0], [0.0, 0.0]]),  # Norm 10, clipped to 5: [-3, 4], 0.
    ([1.0, 2.0], [[2.0, 0.0], [0.0, 4.0]]),  # Norm 5: unchanged.
    ([0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]]),  # Norm sqrt(1.5): unchanged.
    ([0.0, 0.0], [[12.0, 0.0], [0.0, 9.0]]),  # Norm 15: a third, [[4, 0], [0, 3]].
]
# Their sum after clipping to 5: [-3 + 1 + 0.5, 4 + 2 + 0.5] and [[2 + 0.5 + 4, 0.5],
# [0.5, 4 + 0.5 + 3]].
HAND_SUM = ([-1.5, 6.5], [[6.5, 0.5], [0.5, 7.5]])


def _stacked(records):
    """Records as query takes them: one tensor per variable, row i = record i."""
    return [tf.constant(np.array(part, np.float32)) for part in zip(*records)]


def test_clip_records_by_hand():
    clipped = query.clip_records(_stacked(HAND_RECORDS), 5.0)
    np.testing.assert_allclose(clipped[0][0], [-3.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[1][3], [[4.0, 0.0], [0.0, 3.0]], rtol=1e-6)
    for part, total in zip(query.clipped_sum(_stacked(HAND_RECORDS), 5.0), HAND_SUM):
        np.testing.assert_allclose(part, total, rtol=1e-6)


def test_gaussian_sum_limits():
    """Noise 0 and an infinite clip: the plain sum. A zero record stays zero."""
    records = _stacked(HAND_RECORDS)
    for part, plain in zip(query.gaussian_sum(records, math.inf, 0.0), records):
        np.testing.assert_allclose(part, tf.reduce_sum(plain, 0), rtol=1e-6)
    (zero,) = query.clip_records([tf.zeros([1, 3])], 1.0)
    np.testing.assert_array_equal(zero, np.zeros([1, 3]))


def test_gaussian_sum_noise_has_its_standard_deviation_and_seed():
    """Zero records plus N(0, 2^2) on 40,000 coordinates: the sample standard deviation is
    2 within 2% (its standard error is 2 / sqrt(2 * 40,000) = 0.007)."""
    records = [tf.zeros([3, 200, 200])]
    (noise,) = query.gaussian_sum(records, 1.0, 2.0, seed=7)
    assert float(tf.math.reduce_std(noise)) == pytest.approx(2.0, rel=0.02)
    (again,) = query.gaussian_sum(records, 1.0, 2.0, seed=7)
    np.testing.assert_array_equal(noise, again)


@pytest.mark.parametrize(
    "clip, stddev, message",
    [(0.0, 0.0, "l2_norm_clip must be > 0"), (1.0, -1.0, "stddev must be >= 0")],
)
def test_gaussian_sum_bad_input(clip, stddev, message):
    with pytest.raises(ValueError, match=message):
        query.gaussian_sum(_stacked(HAND_RECORDS), clip, stddev)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(noise_multiplier=0.0), "noise_multiplier must be > 0"),
        (dict(noise_multiplier=0.7, batch_size=32, num_microbatches=5), "must divide batch_size"),
        (dict(noise_multiplier=0.7, variant="dp_model"), "'dp_model' .* is now 'per_example'"),
    ],
)
def test_dp_compile_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        privacy.compile_dp_target(privacy.dp_target_model(), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(variant="jax"), "unknown DP variant 'jax'"),
        (dict(variant="optimizer"), "is now 'full_batch'"),
        (dict(norm="layer"), "unknown norm 'layer'"),
        (dict(num_microbatches=0), "must divide batch_size"),
        (dict(noise_multiplier=float("nan")), "noise_multiplier must be > 0 and finite"),
        (dict(l2_norm_clip=float("inf")), "l2_norm_clip must be > 0 and finite"),
    ],
)
def test_build_dp_target_bad_input(kwargs, message):
    arguments = dict(noise_multiplier=0.7) | kwargs
    with pytest.raises(ValueError, match=message):
        privacy.build_dp_target(arguments.pop("noise_multiplier"), **arguments)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(l2_norm_clip=0.0), "l2_norm_clip must be > 0"),
        (dict(noise_multiplier=float("inf")), "noise_multiplier must be >= 0 and finite"),
        (dict(num_microbatches=0), "num_microbatches must be an integer >= 1"),
        (dict(l2_norm_clip=math.inf), "infinite l2_norm_clip leaves the noise"),
        (dict(variant="vectorized"), "unknown DP variant 'vectorized'"),
    ],
)
def test_dp_model_bad_input(kwargs, message):
    arguments = dict(l2_norm_clip=1.0, noise_multiplier=1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        DPModel(_linear(), **arguments)


def _linear():
    """w . x with w = 0 in R^2: with target 1 and mean squared error, the loss of x is
    (w . x - 1)^2 and its gradient 2 (w . x - 1) x = -2 x."""
    return keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )


# Example gradients -2x: [-3, 0], [0, -4], [0, -6], [-8, 0].
LINEAR_X = np.array([[1.5, 0.0], [0.0, 2.0], [0.0, 3.0], [4.0, 0.0]], np.float32)


@pytest.mark.parametrize("variant", list(privacy.DP_VARIANTS))
@pytest.mark.parametrize(
    "num_microbatches, expected",
    [
        # One example each, every gradient (norms 3, 4, 6, 8) clipped to 2: [-2, 0],
        # [0, -2], [0, -2], [-2, 0]; their mean is [-1, -1], and SGD(1) moves w to [1, 1].
        (4, [1.0, 1.0]),
        # Consecutive pairs: mean gradients [-1.5, -2] (norm 2.5, times 0.8 = [-1.2, -1.6])
        # and [-4, -3] (norm 5, times 0.4 = [-1.6, -1.2]); mean [-1.4, -1.4].
        (2, [1.4, 1.4]),
    ],
)
def test_microbatches_are_consecutive_and_clipped_as_one_record(
    variant, num_microbatches, expected
):
    model = DPModel(_linear(), 2.0, 0.0, num_microbatches=num_microbatches, variant=variant)
    model.compile(keras.optimizers.SGD(1.0), keras.losses.MeanSquaredError())
    model.train_on_batch(LINEAR_X, np.ones([4, 1], np.float32))
    np.testing.assert_allclose(model.model.get_weights()[0][:, 0], expected, rtol=1e-6)


def test_microbatches_must_divide_the_batch():
    model = DPModel(_linear(), 2.0, 0.0, num_microbatches=3)
    model.compile(keras.optimizers.SGD(1.0), keras.losses.MeanSquaredError())
    with pytest.raises(ValueError, match=r"num_microbatches \(3\) must divide the batch size"):
        model.train_on_batch(LINEAR_X, np.ones([4, 1], np.float32))


def _images(data_dir, count):
    dataset = load_omniglot("small1", data_dir).take(count)
    return dataset.map(lambda e: (tf.cast(e["image"][..., :1], tf.float32) / 255, e["alphabet"]))


def _batch(shared_data, count, start=0):
    dataset = _images(shared_data, start + count).skip(start)
    return next(iter(dataset.batch(count)))


def _differences(plain, dp):
    return np.concatenate(
        [np.abs(a - b).ravel() for a, b in zip(plain.get_weights(), dp.get_weights())]
    )


def _assert_same_adam_step(plain, dp, steps=1):
    """Adam's first step is lr * g / (|g| + eps), about +-0.005 per weight whatever |g|:
    float32 round-off in a near-zero gradient can move a weight by up to a whole step,
    so a few such weights (measured: 1 in 50,176) may differ; the rest agree to 1e-4."""
    differences = _differences(plain, dp)
    assert np.mean(differences > 1e-4) < 1e-3
    assert differences.max() <= steps * 2 * 0.005 + 1e-6


def _plain_and_dp(norm, variant, num_microbatches, l2_norm_clip=math.inf):
    keras.utils.set_random_seed(0)
    plain = privacy.dp_target_model(norm=norm)
    inner = privacy.dp_target_model(norm=norm)
    inner.set_weights(plain.get_weights())
    dp = DPModel(inner, l2_norm_clip, 0.0, num_microbatches=num_microbatches, variant=variant)
    for model in (plain, dp):
        model.compile(keras.optimizers.Adam(0.005), keras.losses.SparseCategoricalCrossentropy())
    return plain, dp


@pytest.mark.parametrize(
    "variant, norm, num_microbatches",
    [
        ("full_batch", "batch", 4),
        ("full_batch", "batch", 2),
        ("per_example", "group", 4),
        ("per_example", "group", 2),
    ],
)
def test_dp_adam_without_noise_or_clipping_is_adam(shared_data, variant, norm, num_microbatches):
    """Noise 0 and an infinite clip: the mean of the microbatch gradients is the batch
    gradient (the loss is their mean: through one pass with 'full_batch', batch norm
    included; with group norm each microbatch alone computes what it does in the batch),
    so training with DP-Adam = training with Adam, moving statistics included (two steps)."""
    dataset = _images(shared_data, 8).batch(4)
    plain, dp = _plain_and_dp(norm, variant, num_microbatches)
    plain.fit(dataset, epochs=1, shuffle=False, verbose=0)
    dp.fit(dataset, epochs=1, shuffle=False, verbose=0)
    assert int(dp.optimizer.iterations) == 2
    _assert_same_adam_step(plain, dp.model, steps=2)


@pytest.mark.parametrize("variant", list(privacy.DP_VARIANTS))
def test_moving_statistics_are_the_whole_batch_ones(shared_data, variant):
    """Batch norm: both variants update the moving statistics from one training-mode pass
    over the whole batch, as Keras does; only 'full_batch' then takes Adam's step (with
    'per_example' each example is normalised by its own statistics)."""
    images, labels = _batch(shared_data, 4)
    plain, dp = _plain_and_dp("batch", variant, 4)
    plain.train_on_batch(images, labels)
    dp.train_on_batch(images, labels)
    for a, b in zip(plain.non_trainable_variables, dp.model.non_trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    if variant == "full_batch":
        _assert_same_adam_step(plain, dp.model)
    else:  # Another gradient: Adam's first step moves many weights the other way.
        assert np.mean(_differences(plain, dp.model) > 1e-4) > 0.1


def test_group_norm_per_example_gradients_ignore_the_rest_of_the_batch(shared_data):
    """The 'per_example' variant clips each example's gradient with the model run on that
    example alone. With group norm that is the example's true gradient: the same in any
    batch, and their mean is the batch gradient. With batch norm in training mode (the
    'full_batch' variant's Jacobian), an example's gradient depends on the batch."""
    images, labels = _batch(shared_data, 8)
    other_images, other_labels = _batch(shared_data, 7, start=8)
    swapped = tf.concat([images[:1], other_images], 0), tf.concat([labels[:1], other_labels], 0)
    keras.utils.set_random_seed(0)
    group = privacy.dp_target_model(norm="group")
    first = privacy.per_example_gradients(group, images, labels)
    second = privacy.per_example_gradients(group, *swapped)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a[0].numpy(), b[0].numpy(), rtol=1e-4, atol=1e-7)
    # Group norm: the mean of the per-example gradients is the whole batch's gradient.
    loss = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        batch_loss = loss(labels, group(images, training=True))
    for per_example, whole in zip(first, tape.gradient(batch_loss, group.trainable_variables)):
        # float32 sums in another order: agree to 1e-3 of the gradient's largest entry.
        scale = float(tf.reduce_max(tf.abs(whole)))
        np.testing.assert_allclose(
            tf.reduce_mean(per_example, 0).numpy(), whole.numpy(), rtol=0, atol=1e-3 * scale
        )
    keras.utils.set_random_seed(0)
    batch_norm = privacy.dp_target_model(norm="batch")
    first = privacy.jacobian_per_example_gradients(batch_norm, images, labels)
    second = privacy.jacobian_per_example_gradients(batch_norm, *swapped)
    assert any(
        not np.allclose(a[0].numpy(), b[0].numpy(), rtol=1e-3, atol=1e-6)
        for a, b in zip(first, second)
    )


def test_dp_training_runs_and_its_stage_one_is_saved(shared_data, tmp_path):
    """DP-Adam ('per_example' variant, group norm) trains on a dataset that is not a multiple
    of the batch (the remainder is dropped), and the stage cut at `mobile_output` reloads
    from the native Keras format."""
    keras.utils.set_random_seed(0)
    model = privacy.build_dp_target(0.7, batch_size=4, norm="group")
    run = split.train_resumable(
        model, _images(shared_data, 10), epochs=1, batch_size=4, drop_remainder=True, log=None
    )
    assert int(model.optimizer.iterations) == 2  # 10 // 4 whole batches.
    assert np.isfinite(run.final["loss"]) and 0 <= run.final["accuracy"] <= 1
    on_device = privacy.cut_on_device(model)
    path = privacy.save_on_device(on_device, tmp_path / "on_device.keras")
    loaded = privacy.load_on_device(path)
    images = next(iter(_images(shared_data, 3).batch(3)))[0]
    assert loaded(images).shape == (3, 1, 1, 32)
    np.testing.assert_allclose(loaded(images).numpy(), on_device(images).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="native Keras format"):
        privacy.save_on_device(on_device, tmp_path / "on_device.h5")
    with pytest.raises(ValueError, match="no layer 'code'"):
        privacy.cut_on_device(model, "code")


# Parity with tensorflow-privacy 0.9.0 (TF 2.15, Keras 2), recorded with noise 0.
# Agreement: every tensor to 1e-5 relative to its largest entry (float32 sums in another
# order, Keras 2's fused batch norm against Keras 3's).
PARITY_RTOL = 1e-5


@pytest.fixture(scope="module")
def parity():
    return json.loads(PARITY.read_text())


def _assert_parity(ours, theirs):
    theirs = np.asarray(theirs, np.float32)
    scale = float(np.max(np.abs(theirs)))
    np.testing.assert_allclose(ours, theirs, rtol=PARITY_RTOL, atol=PARITY_RTOL * scale)


def _parity_batch(shared_data, parity):
    """The first 8 MNIST test images, as the parity script read them."""
    folder = shared_data / "mnist"
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "rb") as file:
        raw = file.read()[16 : 16 + 8 * 28 * 28]
    assert hashlib.sha256(raw).hexdigest() == parity["data"]["images_sha256"]
    images = np.frombuffer(raw, np.uint8).reshape(8, 28, 28, 1).astype(np.float32) / 255
    return images, np.array(parity["data"]["labels"])


def _parity_model(parity, num_microbatches, variant, optimizer):
    """The parity script's model in Keras 3, on its recorded initial weights."""
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 5, strides=3, activation="relu", name="conv"),
            keras.layers.BatchNormalization(name="batch_norm"),
            keras.layers.MaxPooling2D(4, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, activation="softmax", name="dense"),
        ]
    )
    initial = parity["model"]["initial_weights"]
    model.set_weights([np.asarray(w, np.float32) for w in initial.values()])
    dp = DPModel(model, parity["l2_norm_clip"], 0.0, num_microbatches, variant)
    dp.compile(optimizer, keras.losses.SparseCategoricalCrossentropy())
    return dp, list(initial)


@pytest.mark.parametrize("index", [0, 1])
def test_full_batch_matches_dp_keras_adam_optimizer(shared_data, parity, index):
    """'full_batch' = DPKerasAdamOptimizer: its clipped mean gradient, then every weight
    (moving statistics included) after each of 3 Adam steps."""
    images, labels = _parity_batch(shared_data, parity)
    recorded = parity["dp_keras_adam_optimizer"][index]
    dp, names = _parity_model(
        parity,
        recorded["num_microbatches"],
        "full_batch",
        keras.optimizers.Adam(parity["learning_rate"]),
    )
    # Some records are clipped and some are not (the clip is the median norm).
    norms = np.array(parity["per_example_gradient_norms"])
    assert (norms > parity["l2_norm_clip"]).any() and (norms < parity["l2_norm_clip"]).any()
    gradient = dp.private_gradient(images, labels)
    trainable = [n for n in names if "moving" not in n]
    for name, ours in zip(trainable, gradient):
        _assert_parity(ours, recorded["gradient"][name])
    for step in recorded["adam_steps"]:
        dp.train_on_batch(images, labels)
        for name, ours in zip(names, dp.model.get_weights()):
            _assert_parity(ours, step["weights"][name])


def test_per_example_matches_dp_sequential(shared_data, parity):
    """'per_example' = DPSequential: one SGD step of rate 1 (w - clipped mean gradient) and
    3 Adam steps, each microbatch (one example) normalised by its own batch statistics.
    Trainable weights only: DPSequential's moving statistics also move in its per-example
    passes (about twice as far as one whole-batch update), tfleak's in the whole-batch one."""
    images, labels = _parity_batch(shared_data, parity)
    recorded = parity["dp_sequential"]
    for optimizer, steps in (
        (keras.optimizers.SGD(1.0), [recorded["sgd_step"]]),
        (keras.optimizers.Adam(parity["learning_rate"]), recorded["adam_steps"]),
    ):
        dp, names = _parity_model(parity, recorded["num_microbatches"], "per_example", optimizer)
        for step in steps:
            dp.train_on_batch(images, labels)
            for name, ours in zip(names, dp.model.get_weights()):
                if "moving" not in name:
                    _assert_parity(ours, step["weights"][name])


@pytest.mark.parametrize("records", ["hand", "random"])
def test_clipped_sum_matches_gaussian_sum_query(parity, records):
    recorded = parity["gaussian_sum_query"][records]
    ours = query.gaussian_sum(_stacked(recorded["records"]), recorded["l2_norm_clip"], 0.0)
    for part, theirs in zip(ours, recorded["sum"]):
        _assert_parity(part, theirs)
    if records == "hand":
        for part, theirs in zip(ours, HAND_SUM):
            _assert_parity(part, theirs)


def test_epsilon_matches_compute_dp_sgd_privacy(parity):
    """tensorflow-privacy's `compute_dp_sgd_privacy` counts ceil(epochs * n / batch) =
    8,238 steps (tfleak counts whole batches, 8,220) on its own RDP orders. Its accountant,
    dp-accounting 0.4.3, computes the sampled Gaussian's RDP at fractional orders
    differently from dp-accounting >= 0.5 (a series of |binomial| terms with a relative stop
    rule), so the epsilons agree to 1e-5 where the best order is an integer (noise 0.7:
    order 5) and within 1% where it is fractional (noise 0.5: 2.5, noise 0.3: 1.25)."""
    recorded = parity["compute_dp_sgd_privacy"]
    for noise, theirs, order in zip(
        recorded["noise_multipliers"], recorded["epsilons"], recorded["optimal_orders"]
    ):
        ours = privacy.gaussian_epsilon(
            noise,
            recorded["steps"],
            recorded["delta"],
            recorded["sampling_rate"],
            orders=recorded["orders"],
        )
        assert ours == pytest.approx(theirs, rel=1e-5 if float(order).is_integer() else 1e-2)
    # On the integer orders alone the two accountants agree to 1e-5 at every noise.
    for noise, theirs in zip(recorded["noise_multipliers"], recorded["epsilons_integer_orders"]):
        ours = privacy.gaussian_epsilon(
            noise,
            recorded["steps"],
            recorded["delta"],
            recorded["sampling_rate"],
            orders=recorded["integer_orders"],
        )
        assert ours == pytest.approx(theirs, rel=1e-5)
