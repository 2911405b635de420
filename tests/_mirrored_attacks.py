"""Runs iDLG on two MNIST digits at once, on one replica and on two logical CPUs.

Run by tests/test_distribute.py in a subprocess: logical devices must be set up
before TensorFlow initialises. Prints one JSON line of results.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

import tfleak  # noqa: E402
from tfleak.data import load_dataset  # noqa: E402
from tfleak.distribute import get_strategy  # noqa: E402


def main(data_dir: str) -> None:
    mnist = load_dataset("mnist", "test", data_dir=data_dir)
    victim = tfleak.LeNet((28, 28, 1), 10)
    rows = [1, 2]  # two attacks: one per replica
    truths = [(mnist.images[i : i + 1], mnist.labels[i : i + 1]) for i in rows]
    observed = [victim.gradient(x, tf.constant(y)) for x, y in truths]
    attack = tfleak.IDLG(iterations=30, restarts=0, seed=0)
    runs = {}
    for name in ("default", "mirrored"):
        strategy = get_strategy(name, devices=["/cpu:0", "/cpu:1"] if name != "default" else None)
        # 'per_attack': each row's graph as one attack alone has it, so the
        # split across replicas and the attack alone agree to the last bits.
        runs[name] = attack.attack_many(
            victim, observed, ground_truths=truths, strategy=strategy, verbose=0,
            layout="per_attack",
        )  # fmt: skip
    alone = attack(victim, observed[0], ground_truth=truths[0], verbose=0)
    one, two = runs["default"], runs["mirrored"]
    print(
        json.dumps(
            {
                "replicas": get_strategy("mirrored", ["/cpu:0", "/cpu:1"]).num_replicas_in_sync,
                "psnr_one": [r.metrics["psnr"] for r in one],
                "psnr_two": [r.metrics["psnr"] for r in two],
                "labels_two": [r.labels.tolist() for r in two],
                "true_labels": [y.tolist() for _, y in truths],
                "max_difference": max(
                    float(np.abs(a.reconstruction - b.reconstruction).max())
                    for a, b in zip(one, two)
                ),
                "alone_difference": float(
                    np.abs(alone.reconstruction - one[0].reconstruction).max()
                ),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
