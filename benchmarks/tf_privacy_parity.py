r"""What tensorflow-privacy 0.9.0 computes, recorded for tfleak's DP tests.

Runs in the parity environment (`make parity-env`: Python 3.11, TensorFlow 2.15
with Keras 2, tensorflow-privacy 0.9.0), not in tfleak's: tfleak needs Keras 3,
so this script imports neither tfleak nor Keras 3. On fixed inputs it records,
with noise 0 so that every number is deterministic:

- `DPKerasAdamOptimizer` (Abadi et al. 2016, alg. 1, with Adam): on a small
  conv + batch norm + dense model with weights drawn from a fixed seed (and
  stored), on the first 8 MNIST test images, for 8 and 4 microbatches: the
  clipped mean gradient of the first step,
  `(1 / M) sum_j g_j * min(1, C / ||g_j||_2)` with `g_j` the gradient of
  microbatch j's mean loss through one whole-batch forward pass, and every
  weight (moving statistics included) after each of 3 Adam steps on that
  batch, trained with `model.train_on_batch`;
- `DPSequential` (each microbatch run through the model alone), 8
  microbatches: the weights after one SGD step of learning rate 1 (so the
  step is the negated clipped mean gradient) and after each of 3 Adam steps;
- `GaussianSumQuery(l2_norm_clip, 0)`: the clipped sum of a hand-made set of
  records and of a random one (both stored);
- `compute_dp_sgd_privacy`: epsilon of the published configurations (n =
  13,180, batch 32, 20 epochs, delta 1e-5, noise 0.7 / 0.5 / 0.3), with the
  step count, sampling rate and RDP orders it used, and the epsilons of its
  accountant (dp-accounting 0.4.3) restricted to the integer orders.

The clip norm C is the median of the 8 per-example gradient norms at the
initial weights, so some records are clipped and some are not.
`tests/test_privacy.py` rebuilds the same model in Keras 3 and checks
`tfleak.privacy` against this file.

  make parity-env
  .venv-parity/bin/python benchmarks/tf_privacy_parity.py --data_dir=../shared/data \
      --output=benchmarks/results/tf_privacy_parity.json
"""

import gzip
import hashlib
import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import dp_accounting
import numpy as np
import tensorflow as tf
import tensorflow_privacy
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding mnist/t10k-*.gz.")
flags.DEFINE_string("output", "benchmarks/results/tf_privacy_parity.json", "Where the JSON goes.")
flags.DEFINE_integer("seed", 0, "Seed of the initial weights and the random query records.")

BATCH = 8  # The first BATCH MNIST test images.
LEARNING_RATE = 0.01
ADAM_STEPS = 3
MICROBATCHES = (8, 4)
# The published configurations of tfleak.privacy.compute_epsilon's tests.
EPSILON_RUNS = dict(n=13180, batch_size=32, epochs=20, delta=1e-5, noises=(0.7, 0.5, 0.3))
# Hand-made records, two tensors each (shapes [2] and [2, 2]), clipped to norm 5.
HAND_CLIP = 5.0
HAND_RECORDS = [
    [[-6.0, 8.0], [[0.0, 0.0], [0.0, 0.0]]],  # Norm 10: clipped to [-3, 4], 0.
    [[1.0, 2.0], [[2.0, 0.0], [0.0, 4.0]]],  # Norm 5: unchanged.
    [[0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]]],  # Norm 1.22: unchanged.
    [[0.0, 0.0], [[12.0, 0.0], [0.0, 9.0]]],  # Norm 15: clipped to a third.
]


def model_layers():
    """28 x 28 x 1 -conv5/3-> 8 x 8 x 4 -BN-> -pool4-> 2 x 2 x 4 -> 16 -dense-> 10 softmax."""
    keras = tf.keras
    return [
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(4, 5, strides=3, activation="relu", name="conv"),
        keras.layers.BatchNormalization(name="batch_norm"),
        keras.layers.MaxPooling2D(4, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, activation="softmax", name="dense"),
    ]


def initial_weights(seed):
    """name -> float32 array, in `model.get_weights()` order."""
    rng = np.random.default_rng(seed)

    def normal(scale, *shape):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    return {
        "conv/kernel": normal(0.3, 5, 5, 1, 4),
        "conv/bias": normal(0.1, 4),
        "batch_norm/gamma": 1 + normal(0.1, 4),
        "batch_norm/beta": normal(0.1, 4),
        "batch_norm/moving_mean": np.zeros(4, np.float32),
        "batch_norm/moving_variance": np.ones(4, np.float32),
        "dense/kernel": normal(0.3, 16, 10),
        "dense/bias": normal(0.1, 10),
    }


def mnist_batch(data_dir):
    """The first BATCH MNIST test images, float32 [BATCH, 28, 28, 1] in [0, 1], and labels."""
    folder = Path(data_dir) / "mnist"
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "rb") as file:
        raw = file.read()[16 : 16 + BATCH * 28 * 28]
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "rb") as file:
        labels = np.frombuffer(file.read()[8 : 8 + BATCH], np.uint8).astype(np.int64)
    images = np.frombuffer(raw, np.uint8).reshape(BATCH, 28, 28, 1).astype(np.float32) / 255
    return images, labels, hashlib.sha256(raw).hexdigest()


def build(weights, model_class=None, **kwargs):
    layers = model_layers()
    if model_class is None:
        model = tf.keras.Sequential(layers)
    else:
        model = model_class(layers=layers, **kwargs)
    model.set_weights(list(weights.values()))
    return model


def named(model, names):
    return {name: value.tolist() for name, value in zip(names, model.get_weights())}


def per_example_norms(weights, images, labels):
    """L2 norms of the Jacobian rows of the per-example losses (one whole-batch pass)."""
    model = build(weights)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(reduction="none")
    with tf.GradientTape() as tape:
        losses = loss(labels, model(images, training=True))
    rows = tape.jacobian(losses, model.trainable_variables)
    squares = sum(tf.reduce_sum(tf.reshape(r, [BATCH, -1]) ** 2, 1) for r in rows)
    return np.sqrt(squares.numpy())


def optimizer_run(weights, images, labels, clip, microbatches):
    """DPKerasAdamOptimizer: first-step clipped mean gradient, weights after each step."""

    def optimizer():
        return tensorflow_privacy.DPKerasAdamOptimizer(
            l2_norm_clip=clip,
            noise_multiplier=0.0,
            num_microbatches=microbatches,
            learning_rate=LEARNING_RATE,
        )

    loss = tf.keras.losses.SparseCategoricalCrossentropy(reduction="none")
    # The gradient Keras 2's `minimize` takes from the optimizer: `_compute_gradients` is
    # the method it calls (private in Keras 2, and the only way to read it).
    probe = build(weights)
    with tf.GradientTape() as tape:
        losses = loss(labels, probe(images, training=True))
    gradient = [
        g for g, _ in optimizer()._compute_gradients(losses, probe.trainable_variables, tape=tape)
    ]
    model = build(weights)
    model.compile(optimizer=optimizer(), loss=loss)
    steps = []
    for _ in range(ADAM_STEPS):
        step_loss = model.train_on_batch(images, labels)
        steps.append({"loss": float(step_loss), "weights": named(model, weights)})
    trainable = [n for n in weights if "moving" not in n]
    return {
        "num_microbatches": microbatches,
        "gradient": {n: g.numpy().tolist() for n, g in zip(trainable, gradient)},
        "adam_steps": steps,
    }


def dp_sequential_run(weights, images, labels, clip, microbatches):
    """DPSequential: weights after one SGD step of rate 1, and after each of 3 Adam steps."""
    result = {"num_microbatches": microbatches}
    for name, optimizer, count in (
        ("sgd_step", tf.keras.optimizers.legacy.SGD(1.0), 1),
        ("adam_steps", tf.keras.optimizers.legacy.Adam(LEARNING_RATE), ADAM_STEPS),
    ):
        model = build(
            weights,
            tensorflow_privacy.DPSequential,
            l2_norm_clip=clip,
            noise_multiplier=0.0,
            num_microbatches=microbatches,
        )
        model.compile(optimizer=optimizer, loss=tf.keras.losses.SparseCategoricalCrossentropy())
        steps = []
        for _ in range(count):
            model.train_on_batch(images, labels)
            steps.append({"weights": named(model, weights)})
        result[name] = steps if count > 1 else steps[0]
    return result


def query_run(records, clip):
    """GaussianSumQuery(clip, stddev 0) over `records` (lists of arrays)."""
    query = tensorflow_privacy.GaussianSumQuery(clip, 0.0)
    records = [[tf.constant(t, tf.float32) for t in record] for record in records]
    global_state = query.initial_global_state()
    params = query.derive_sample_params(global_state)
    state = query.initial_sample_state(records[0])
    for record in records:
        state = query.accumulate_record(params, state, record)
    result, _, _ = query.get_noised_result(state, global_state)
    return [t.numpy().tolist() for t in result]


def epsilon_run():
    """compute_dp_sgd_privacy for the published configurations, and how it counts."""
    runs = EPSILON_RUNS
    # compute_dp_sgd_privacy (tensorflow-privacy 0.9.0) counts steps as
    # ceil(epochs * n / batch_size), samples with probability batch_size / n, and uses
    # these RDP orders with dp_accounting's conversion (Canonne et al. 2020).
    steps = int(np.ceil(runs["epochs"] * runs["n"] / runs["batch_size"]))
    rate = runs["batch_size"] / runs["n"]
    orders = [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5] + list(range(5, 64))
    orders += [128, 256, 512]
    integer_orders = [o for o in orders if float(o).is_integer()]
    epsilons, orders_used, integer_epsilons = [], [], []
    for noise in runs["noises"]:
        epsilon, order = tensorflow_privacy.compute_dp_sgd_privacy(
            runs["n"], runs["batch_size"], noise, runs["epochs"], runs["delta"]
        )
        epsilons.append(epsilon)
        orders_used.append(order)
        # The same accountant (dp_accounting, as tensorflow-privacy 0.9.0 pins it) on the
        # integer orders only, where later dp_accounting releases compute the same RDP.
        accountant = dp_accounting.rdp.RdpAccountant(integer_orders)
        event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise))
        accountant.compose(event, steps)
        integer_epsilons.append(accountant.get_epsilon(runs["delta"]))
    return {
        **{k: v for k, v in runs.items() if k != "noises"},
        "noise_multipliers": list(runs["noises"]),
        "epsilons": epsilons,
        "optimal_orders": orders_used,
        "steps": steps,
        "sampling_rate": rate,
        "orders": orders,
        "integer_orders": integer_orders,
        "epsilons_integer_orders": integer_epsilons,
    }


def write_json(path, value):
    """Writes `value` as JSON atomically (tfleak.io is not importable here)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w") as file:
        json.dump(value, file, indent=1, allow_nan=False)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def main(argv):
    del argv
    folder = Path(FLAGS.data_dir) / "mnist"
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        raise app.UsageError(f"no MNIST test set in {folder}; pass --data_dir.")
    images, labels, digest = mnist_batch(FLAGS.data_dir)
    weights = initial_weights(FLAGS.seed)
    norms = per_example_norms(weights, images, labels)
    clip = float(np.median(norms))
    print(f"per-example gradient norms {np.round(norms, 4)}; clip {clip:.4f}", flush=True)
    rng = np.random.default_rng(FLAGS.seed + 1)
    random_records = [[rng.standard_normal(3).tolist(), rng.standard_normal((2, 2)).tolist()]
                      for _ in range(6)]  # fmt: skip
    results = {
        "environment": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": metadata.version("keras"),
            "tensorflow_privacy": metadata.version("tensorflow-privacy"),
            "dp_accounting": metadata.version("dp-accounting"),
            "numpy": np.__version__,
            "command": " ".join([Path(sys.executable).name] + sys.argv),
        },
        "data": {
            "images": f"MNIST test images 0..{BATCH - 1} (t10k-images-idx3-ubyte.gz), / 255",
            "images_sha256": digest,
            "labels": labels.tolist(),
        },
        "model": {
            "layers": "Conv2D(4, 5, strides=3, relu) 'conv', BatchNormalization 'batch_norm', "
            "MaxPooling2D(4) 'pool', Flatten 'flatten', Dense(10, softmax) 'dense'; "
            "input 28 x 28 x 1",
            "loss": "sparse categorical cross-entropy of probabilities",
            "initial_weights": {n: w.tolist() for n, w in weights.items()},
        },
        "l2_norm_clip": clip,
        "per_example_gradient_norms": norms.tolist(),
        "learning_rate": LEARNING_RATE,
        "adam": "Keras defaults: beta_1 0.9, beta_2 0.999, epsilon 1e-7",
        "dp_keras_adam_optimizer": [
            optimizer_run(weights, images, labels, clip, m) for m in MICROBATCHES
        ],
        "dp_sequential": dp_sequential_run(weights, images, labels, clip, BATCH),
        "gaussian_sum_query": {
            "hand": {
                "l2_norm_clip": HAND_CLIP,
                "records": HAND_RECORDS,
                "sum": query_run(HAND_RECORDS, HAND_CLIP),
            },
            "random": {
                "l2_norm_clip": 1.5,
                "records": random_records,
                "sum": query_run(random_records, 1.5),
            },
        },
        "compute_dp_sgd_privacy": epsilon_run(),
    }
    write_json(FLAGS.output, results)
    print(f"epsilons {results['compute_dp_sgd_privacy']['epsilons']}")
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
