"""Trains the split target and its attacker under MirroredStrategy on two logical CPUs.

Run by tests/test_distribute.py in a subprocess: logical devices must be set up
before TensorFlow initialises. Prints one JSON line of results.
"""

from __future__ import annotations

import json
import sys

import keras
import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

from tfleak import privacy, split  # noqa: E402
from tfleak.data.omniglot import omniglot_scheme  # noqa: E402
from tfleak.distribute import get_strategy  # noqa: E402


def _attacker(strategy, on_device, weights, data):
    with strategy.scope():
        # Plain SGD: Adam would blow float round-off in near-zero gradients up to
        # whole steps of +-learning rate, hiding what is compared here.
        attacker = split.AttackModel(on_device)
        attacker.compile(optimizer=keras.optimizers.SGD(0.1))
    attacker.decoder.set_weights(weights)
    run = split.train_resumable(attacker, data, epochs=1, batch_size=16, seed=1, log=None)
    return attacker, run


def main(data_dir: str) -> None:
    scheme = omniglot_scheme("offline", data_dir)
    strategy = get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(0)
    with strategy.scope():
        target = split.compile_target(split.TargetModel())
    target_run = split.train_resumable(
        target,
        scheme["target_train"].take(64),
        epochs=1,
        batch_size=16,
        validation_data=scheme["target_val"].take(16),
        log=None,
    )
    # The same attacker step under two replicas and under one: the gradient of the
    # global-batch mean is the same, so the decoders must end equal.
    start = split.AttackModel().decoder.get_weights()
    data = scheme["attacker_train"].take(64)
    mirrored, mirrored_run = _attacker(strategy, target.on_device_model, start, data)
    single, _ = _attacker(tf.distribute.get_strategy(), target.on_device_model, start, data)
    difference = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(mirrored.decoder.get_weights(), single.decoder.get_weights())
    )
    metrics, _, _ = split.evaluate_attack(
        mirrored, target.on_device_model, scheme["attacker_test"].take(16)
    )
    with strategy.scope():
        dp_model = privacy.dp_target_model()
    try:
        privacy.compile_dp_target(dp_model, 0.7)
        dp_error = ""
    except ValueError as error:
        dp_error = str(error)
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "target_loss": target_run.final["loss"],
                "code_shape": list(target.mobile_step(tf.zeros([2, 105, 105, 1])).shape),
                "attacker_loss": mirrored_run.final["loss"],
                "attacker_mse": metrics["mse"],
                "mirrored_vs_single_max_difference": difference,
                "dp_error": dp_error,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
