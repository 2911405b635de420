"""Images attacked per minute: N single-image LeNet attacks at once, against one at a time.

An audit or a study attacks many client updates of one victim. `attack_many`
runs them as one graph with a leading axis of attacks (`tfleak.attacks.many`);
this times it, in one run, on DLG's LeNet and CIFAR-10 (JPEG) test images
(iDLG: L-BFGS, label restored), every attack running exactly `--iterations`
L-BFGS iterations (no early stop, so every layout does the same work):

- one at a time: `attack(victim, g)` in a loop (`--alone` attacks);
- N at once, for each N of `--counts` and each layout of `--layouts`:
  `side_by_side` (one copy of the per-attack graph per attack) or
  `vectorized` (`tf.vectorized_map` over the attacks).

Each configuration is called once to trace and once to time; the table gives
seconds after tracing, images per minute, the ratio to one at a time, the
tracing seconds, and the achieved FLOP/s: the objective's floating-point
operations per evaluation (TF's profiler on the traced graph of one
attack's value and gradient) x evaluations / seconds, beside the machine's
float32 matmul rate measured in the same run (`--matmul_size` squared).
Goal (issue 8): 32 at once >= 3 x the throughput of one at a time.

    python benchmarks/attack_throughput.py --counts=1,8,32 --iterations=50 \\
        --output=benchmarks/results/attack_throughput.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tfleak.cli import run  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("counts", ["1", "8", "32"], "Attacks run at once (1 = attack_many of one).")
flags.DEFINE_list("layouts", ["vectorized", "side_by_side"], "How the attacks share a graph.")
flags.DEFINE_integer("iterations", 50, "L-BFGS iterations of every attack.")
flags.DEFINE_integer("alone", 8, "Attacks timed one at a time (the baseline).")
flags.DEFINE_integer("matmul_size", 2048, "Side of the square float32 matmul timed for the peak.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding cifar10/ (CIFAR-10 JPEG).")
flags.DEFINE_string("strategy", "default", "tf.distribute strategy for the attacks at once.")
flags.DEFINE_string("output", "benchmarks/results/attack_throughput.json", "JSON path.")


def _matmul_flops_per_second(n: int) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    repeats = 10

    @tf.function
    def run():
        total = tf.zeros(())
        for _ in range(repeats):
            total += tf.reduce_sum(tf.matmul(a, b))
        return total

    run()
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        run().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best


def _flops_per_evaluation(victim, observed, label) -> float:
    """Floating-point operations of one attack's objective value and gradient."""
    import tensorflow as tf

    from tfleak.attacks.objectives import GradientMatching

    objective = GradientMatching(victim, "l2")
    data_spec = tf.TensorSpec((1, 1, *victim.image_shape), tf.float32)

    @tf.function
    def value_and_gradient(data):
        with tf.GradientTape() as tape:
            tape.watch(data)
            probabilities = tf.one_hot([label], victim.num_classes)[None]
            value = tf.reduce_sum(objective(data, probabilities, observed)[0])
        return value, tape.gradient(value, data)

    graph = value_and_gradient.get_concrete_function(data_spec).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph, options=options)
    return float(profile.total_float_ops)


def main(argv):
    del argv
    counts = sorted({int(c) for c in FLAGS.counts})
    if not counts or counts[0] < 1 or FLAGS.iterations < 1 or FLAGS.alone < 1:
        raise app.UsageError("--counts, --iterations and --alone must be >= 1.")
    unknown = set(FLAGS.layouts) - {"vectorized", "side_by_side"}
    if unknown:
        raise app.UsageError(f"unknown --layouts {sorted(unknown)}; use vectorized, side_by_side.")
    from tfleak.io import atomic_write_json, check_writable_dir

    check_writable_dir(Path(FLAGS.output).parent, "output")

    import tfleak
    from tfleak.distribute import get_strategy

    strategy = get_strategy(FLAGS.strategy)
    total = max(counts[-1], FLAGS.alone)
    images, labels, classes = tfleak.data.load_examples(
        "cifar10", list(range(total)), "test", FLAGS.data_dir
    )
    victim = tfleak.LeNet(images.shape[1:], classes)
    observed = [victim.gradient(images[i : i + 1], labels[i : i + 1]) for i in range(total)]
    truths = [(images[i : i + 1], labels[i : i + 1]) for i in range(total)]
    # tolerance 0 and no stall rule: every attack runs exactly --iterations.
    base = tfleak.IDLG(
        iterations=FLAGS.iterations, restarts=0, tolerance=0.0, stall_ratio=None, seed=0
    )
    flops = _flops_per_evaluation(victim, observed[0], labels[0])
    peak = _matmul_flops_per_second(FLAGS.matmul_size)
    print(
        f"objective: {flops / 1e6:.2f} MFLOP per evaluation; float32 matmul "
        f"{FLAGS.matmul_size}^2: {peak / 1e9:.1f} GFLOP/s",
        flush=True,
    )

    rows = []

    def record(name, count, layout, seconds, trace, results):
        evaluations = sum(r.evaluations for r in results)
        row = {
            "mode": name,
            "attacks": count,
            "layout": layout,
            "seconds": seconds,
            "trace_seconds": trace,
            "images_per_minute": 60.0 * count / seconds,
            "evaluations": evaluations,
            "flops_per_second": flops * evaluations / seconds,
            "psnr_mean": float(np.mean([r.metrics["psnr"] for r in results])),
        }
        rows.append(row)
        print(
            f"{name} {count} ({layout}): {seconds:.2f} s, {row['images_per_minute']:.1f} "
            f"images/min, trace {trace:.1f} s, PSNR {row['psnr_mean']:.2f} dB",
            flush=True,
        )
        return row

    # One at a time: the first call traces; then --alone attacks in a loop.
    start = time.perf_counter()
    base(victim, observed[0], ground_truth=truths[0], verbose=0)
    trace = time.perf_counter() - start
    start = time.perf_counter()
    alone = [
        base(victim, observed[i], ground_truth=truths[i], verbose=0) for i in range(FLAGS.alone)
    ]
    one = record("one at a time", FLAGS.alone, "-", time.perf_counter() - start, trace, alone)

    for layout in FLAGS.layouts:
        attack = base.replace(vectorize=layout == "vectorized")
        for count in counts:
            arguments = dict(ground_truths=truths[:count], strategy=strategy, verbose=0)
            start = time.perf_counter()
            attack.attack_many(victim, observed[:count], **arguments)
            trace = time.perf_counter() - start
            start = time.perf_counter()
            results = attack.attack_many(victim, observed[:count], **arguments)
            record("at once", count, layout, time.perf_counter() - start, trace, results)

    print(
        "\n| attacks | layout | seconds | images / min | x one at a time | trace s "
        "| GFLOP/s | % of matmul |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        row["ratio_to_one_at_a_time"] = row["images_per_minute"] / one["images_per_minute"]
        row["fraction_of_matmul_peak"] = row["flops_per_second"] / peak
        label = "1 at a time" if row["mode"] == "one at a time" else f"{row['attacks']} at once"
        print(
            f"| {label} | {row['layout']} | {row['seconds']:.2f} | "
            f"{row['images_per_minute']:.0f} | {row['ratio_to_one_at_a_time']:.2f} | "
            f"{row['trace_seconds']:.1f} | {row['flops_per_second'] / 1e9:.2f} | "
            f"{100 * row['fraction_of_matmul_peak']:.1f} |"
        )
    atomic_write_json(
        FLAGS.output,
        {
            "victim": "LeNet (DLG), 32x32x3, 10 classes",
            "attack": repr(base),
            "iterations": FLAGS.iterations,
            "flops_per_evaluation": flops,
            "matmul_flops_per_second": peak,
            "matmul_size": FLAGS.matmul_size,
            "strategy": FLAGS.strategy,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "rows": rows,
        },
    )
    print(f"Wrote {FLAGS.output}")


if __name__ == "__main__":
    run(main)
