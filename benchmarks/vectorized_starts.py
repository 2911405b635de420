"""What G random starts optimised together cost, against one start, in one run.

GradInversion and restarts run several independent starts of the dummy batch;
tfleak evaluates them in one graph (`GradientMatching`: one copy of the
per-start computation per start, side by side; `--vectorize` uses
`tf.vectorized_map` over the starts instead). For each victim this times first-order
steps (Inverting Gradients' signed Adam) with 1 start and with G starts, after
a warm-up that traces, and prints seconds per step and the ratio
`time(G starts) / (G x time(1 start))` (1 = no gain from vectorising).

    python benchmarks/vectorized_starts.py --models=lenet,resnet20 --starts=8 --steps=100
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet", "resnet20"], "Victims (tfleak.models.VICTIMS names).")
flags.DEFINE_integer("starts", 8, "Starts optimised together (G).")
flags.DEFINE_integer("batch_size", 1, "Images in the shared batch.")
flags.DEFINE_integer("steps", 100, "Timed steps per configuration.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding cifar10/ (CIFAR-10 JPEG).")
flags.DEFINE_bool("vectorize", False, "Evaluate the starts with tf.vectorized_map.")
flags.DEFINE_string("output", "benchmarks/results/vectorized_starts.json", "JSON path.")


def _seconds_per_step(victim, observed, labels, starts):
    import tfleak

    attack = tfleak.InvertingGradients(
        iterations=FLAGS.steps,
        starts=starts,
        snapshot_every=FLAGS.steps,
        vectorize=FLAGS.vectorize,
    )
    attack(victim, observed, labels=labels, verbose=0)  # traces and warms up
    start = time.perf_counter()
    attack(victim, observed, labels=labels, verbose=0)
    return (time.perf_counter() - start) / FLAGS.steps


def main(argv):
    del argv
    if FLAGS.starts < 2 or FLAGS.steps < 1 or FLAGS.batch_size < 1:
        raise app.UsageError("--starts must be >= 2, --steps and --batch_size >= 1.")
    from tfleak.io import atomic_write_json, check_writable_dir

    check_writable_dir(Path(FLAGS.output).parent, "output")
    import tfleak

    images, labels, num_classes = tfleak.data.load_examples(
        "cifar10", list(range(FLAGS.batch_size)), "test", FLAGS.data_dir
    )
    rows = []
    for name in FLAGS.models:
        victim = tfleak.models.get_victim(name, images.shape[1:], num_classes)
        observed = victim.gradient(images, labels)
        one = _seconds_per_step(victim, observed, labels, 1)
        many = _seconds_per_step(victim, observed, labels, FLAGS.starts)
        row = {
            "model": name,
            "starts": FLAGS.starts,
            "seconds_per_step_1": one,
            "seconds_per_step_G": many,
            "ratio_to_G_separate": many / (FLAGS.starts * one),
        }
        rows.append(row)
        print(
            f"{name}: 1 start {1000 * one:.1f} ms/step, {FLAGS.starts} starts "
            f"{1000 * many:.1f} ms/step = {row['ratio_to_G_separate']:.3f} x {FLAGS.starts} "
            "separate starts",
            flush=True,
        )
    print("\n| victim | ms / step, 1 start | ms / step, G starts | G starts / (G x 1 start) |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {1000 * row['seconds_per_step_1']:.1f} | "
            f"{1000 * row['seconds_per_step_G']:.1f} (G = {row['starts']}) | "
            f"{row['ratio_to_G_separate']:.3f} |"
        )
    atomic_write_json(
        FLAGS.output,
        {
            "batch_size": FLAGS.batch_size,
            "steps": FLAGS.steps,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "rows": rows,
        },
    )
    print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
