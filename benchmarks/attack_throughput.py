"""Images attacked per minute: N single-image attacks at once, against one at a time.

An audit or a study attacks many client updates of one victim. `attack_many`
runs them as one graph with a leading axis of attacks (`tfleak.attacks.many`);
this times it, in one run, on CIFAR-10 (JPEG) test images, for each victim of
`--victims` (DLG's LeNet, ResNet-20), with `--attack`: iDLG (L-BFGS, label
restored) or Inverting Gradients (signed Adam, cosine distance and TV, label
restored by iDLG's rule), every attack running `--iterations` iterations with no
early stop (only an L-BFGS line search that fails ends an attack sooner):

- one at a time: `attack(victim, g)` in a loop (`--alone` attacks);
- N at once, for each N of `--counts` and each layout of `--layouts`:
  `grouped` (a weight copy per attack, one batched graph,
  `tfleak.attacks.stacked`), `side_by_side` (one copy of the per-attack graph
  per attack) or `vectorized` (`tf.vectorized_map` over the attacks).

Each configuration is called `--warmups` times (the first traces) and then
timed `--timed_calls` times; a row gives the median of those seconds (all of
them are in the JSON: in one process, some calls of the same traced attack ran
at one core's pace, 41.7 against 24.4 s for 32 grouped Inverting Gradients
attacks on ResNet-20, the same CPU seconds either way), images per minute, the
ratio to one at a time, the tracing seconds, the achieved FLOP/s (the objective's floating-point
operations per evaluation, from TF's profiler on the traced graph of one
attack's value and gradient, x evaluations / seconds) beside the machine's
float32 matmul rate measured in the same run, and the split of the time per
attack-evaluation between the objective (timed alone at the same number of
attacks) and the rest (the solver). The JSON is written after every row; a run
given the same `--output` resumes, skipping the rows already there except the
baselines of its own victims and attack, which it measures again (delete the
file, or its rows, for a fresh run). Goal (issue 8): 32 at once >= 3 x one at
a time on LeNet, >= 2 x on ResNet-20.

    python benchmarks/attack_throughput.py --victims=lenet --counts=1,8,32,128 \\
        --iterations=50 --output=benchmarks/results/attack_throughput.json
    python benchmarks/attack_throughput.py --victims=resnet20 \\
        --attack=inverting_gradients --counts=8,32 --alone=4 --iterations=100 \\
        --output=benchmarks/results/attack_throughput.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tfleak.cli import run  # noqa: E402

LAYOUTS = ("grouped", "vectorized", "side_by_side")
VICTIMS = ("lenet", "resnet20")
ATTACKS = ("idlg", "inverting_gradients")

FLAGS = flags.FLAGS
flags.DEFINE_list("victims", ["lenet"], f"Victims attacked, of {', '.join(VICTIMS)}.")
flags.DEFINE_list("counts", ["1", "8", "32", "128"], "Attacks run at once.")
flags.DEFINE_list(
    "layouts", ["grouped"], f"How the attacks share a graph, of {', '.join(LAYOUTS)}."
)
flags.DEFINE_enum(
    "attack",
    "idlg",
    ATTACKS,
    "iDLG (L-BFGS, label restored) or Inverting Gradients (signed Adam, cosine and TV, "
    "label restored by iDLG's rule), every attack running exactly --iterations.",
)
flags.DEFINE_enum("line_search", "armijo", ["armijo", "hager_zhang"], "iDLG's L-BFGS line search.")
flags.DEFINE_integer("iterations", 50, "L-BFGS iterations (or Adam steps) of every attack.")
flags.DEFINE_integer("alone", 8, "Attacks timed one at a time (the baseline).")
flags.DEFINE_integer(
    "warmups",
    2,
    "Calls of each configuration before it is timed (the first traces; the second lets "
    "a first-order attack's Keras fit finish warming up).",
)
flags.DEFINE_integer(
    "timed_calls", 3, "Timed calls of each configuration after the warm-ups; the median is used."
)
flags.DEFINE_integer("matmul_size", 2048, "Side of the square float32 matmul timed for the peak.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding cifar10/ (CIFAR-10 JPEG).")
flags.DEFINE_integer(
    "threads",
    0,
    "TensorFlow's intra-op threads (0 = its default: one per core).",
)
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


def _value_and_gradient(objective):
    import tensorflow as tf

    @tf.function(autograph=False)
    def value_and_gradient(data, probabilities, observed):
        with tf.GradientTape() as tape:
            tape.watch(data)
            value = tf.reduce_sum(objective(data, probabilities, observed)[0])
        return value, tape.gradient(value, data)

    return value_and_gradient


def _flops_per_evaluation(victim, observed, probabilities) -> float:
    """Floating-point operations of one attack's objective value and gradient."""
    import tensorflow as tf

    from tfleak.attacks.objectives import GradientMatching

    function = _value_and_gradient(GradientMatching(victim, "l2"))
    data_spec = tf.TensorSpec((1, 1, *victim.image_shape), tf.float32)
    graph = function.get_concrete_function(data_spec, probabilities, observed).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def _objective_seconds(victim, layout, observed, probabilities, repeats=5) -> float:
    """Seconds of one evaluation of `layout`'s objective (value and gradient) at all rows."""
    import tensorflow as tf

    from tfleak.attacks.stacked import attacks_objective

    count = len(observed)
    objective = attacks_objective(
        "grouped" if layout == "grouped" else "per_attack", count, victim, "l2", {}, 1.0,
        layout == "vectorized", None,
    )  # fmt: skip
    stacked = [tf.stack([o[k] for o in observed]) for k in range(len(observed[0]))]
    data = tf.random.uniform((count, 1, *victim.image_shape), seed=0)
    function = _value_and_gradient(objective)
    function(data, probabilities, stacked)
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            value, _ = function(data, probabilities, stacked)
        value.numpy()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def _line_search(attack: str, row=None):
    """The L-BFGS line search of an iDLG row (rows written before the flag
    existed ran tfp's Hager-Zhang), or of this run; None for first-order attacks."""
    if attack != "idlg":
        return None
    return FLAGS.line_search if row is None else row.get("line_search", "hager_zhang")


def _key(row) -> tuple:
    attack = row.get("attack", "idlg")
    return (
        row["victim"], attack, row["layout"], row["attacks"], row["iterations"],
        _line_search(attack, row),
    )  # fmt: skip


def _measured_again(row) -> bool:
    """Whether this run measures `row` (a baseline of one of its victims) again."""
    attack = row.get("attack", "idlg")
    return (
        row["layout"] == "one_at_a_time"
        and row["victim"] in FLAGS.victims
        and attack == FLAGS.attack
        and _line_search(attack, row) == _line_search(FLAGS.attack)
    )


def _victim(name, image_shape, classes):
    import tfleak

    if name == "lenet":
        return tfleak.LeNet(image_shape, classes), "LeNet (DLG), 32x32x3, 10 classes"
    return (
        tfleak.models.get_victim(name, image_shape, classes),
        f"{name} (breaching's CIFAR ResNet, batch norm in training mode), 32x32x3, 10 classes",
    )


def _benchmark_victim(
    name, images, labels, classes, counts, base, strategy, peak, done, save, report
):
    """Times one victim: one at a time, then every layout and count not in `done`."""
    import tensorflow as tf

    total = max(counts[-1], FLAGS.alone)
    output = FLAGS.output
    victim, description = _victim(name, images.shape[1:], classes)
    observed = [victim.gradient(images[i : i + 1], labels[i : i + 1]) for i in range(total)]
    truths = [(images[i : i + 1], labels[i : i + 1]) for i in range(total)]
    probabilities = tf.one_hot(labels[:total, None], classes)
    flops = _flops_per_evaluation(victim, observed[0], probabilities[:1])
    report["victims"][name] = {"description": description, "flops_per_evaluation": flops}
    print(f"{name}: {flops / 1e6:.2f} MFLOP per evaluation", flush=True)

    def record(layout, count, calls, trace, results, baseline=None):
        seconds = float(np.median(calls))
        evaluations = sum(r.evaluations for r in results)
        row = {
            "timed_seconds": [float(c) for c in calls],
            "victim": name,
            "attack": FLAGS.attack,
            "line_search": _line_search(FLAGS.attack),
            "layout": layout,
            "attacks": count,
            "iterations": FLAGS.iterations,
            "seconds": seconds,
            "trace_seconds": trace,
            "images_per_minute": 60.0 * len(results) / seconds,
            "evaluations": evaluations,
            "flops_per_second": flops * evaluations / seconds,
            "fraction_of_matmul_peak": flops * evaluations / seconds / peak,
            "psnr_mean": float(np.mean([r.metrics["psnr"] for r in results])),
        }
        # The objective timed alone at the same rows; the rest is the solver's.
        objective = _objective_seconds(
            victim,
            "side_by_side" if layout == "one_at_a_time" else layout,
            observed[:count],
            probabilities[:count],
        )
        per_attack_evaluation = seconds / evaluations
        row["objective_ms_per_attack_evaluation"] = 1e3 * objective / count
        row["solver_ms_per_attack_evaluation"] = 1e3 * (per_attack_evaluation - objective / count)
        if baseline is not None:
            row["ratio_to_one_at_a_time"] = row["images_per_minute"] / baseline
        else:
            row["ratio_to_one_at_a_time"] = 1.0
        print(
            f"{name} {count} ({layout}): {seconds:.2f} s, {row['images_per_minute']:.1f} "
            f"images/min, x{row['ratio_to_one_at_a_time']:.2f}, trace {trace:.1f} s, "
            f"{row['flops_per_second'] / 1e9:.2f} GFLOP/s, PSNR {row['psnr_mean']:.2f} dB",
            flush=True,
        )
        save(row)
        return row

    # One at a time: the first call traces, further warm-ups; then --alone attacks in a loop.
    start = time.perf_counter()
    base(victim, observed[0], ground_truth=truths[0], verbose=0)
    trace = time.perf_counter() - start
    for _ in range(FLAGS.warmups - 1):
        base(victim, observed[0], ground_truth=truths[0], verbose=0)
    calls = []
    for _ in range(FLAGS.timed_calls):
        start = time.perf_counter()
        alone = [
            base(victim, observed[i], ground_truth=truths[i], verbose=0) for i in range(FLAGS.alone)
        ]
        calls.append(time.perf_counter() - start)
    one = record("one_at_a_time", 1, calls, trace, alone)

    for layout in FLAGS.layouts:
        attack = base.replace(vectorize=layout == "vectorized")
        chosen = "grouped" if layout == "grouped" else "per_attack"
        for count in counts:
            planned = dict(
                victim=name, attack=FLAGS.attack, layout=layout, attacks=count,
                iterations=FLAGS.iterations, line_search=_line_search(FLAGS.attack),
            )  # fmt: skip
            if _key(planned) in done:
                print(f"{name} {count} ({layout}): already in {output}", flush=True)
                continue
            arguments = dict(
                ground_truths=truths[:count], strategy=strategy, verbose=0, layout=chosen
            )
            start = time.perf_counter()
            attack.attack_many(victim, observed[:count], **arguments)
            trace = time.perf_counter() - start
            for _ in range(FLAGS.warmups - 1):
                attack.attack_many(victim, observed[:count], **arguments)
            calls = []
            for _ in range(FLAGS.timed_calls):
                start = time.perf_counter()
                results = attack.attack_many(victim, observed[:count], **arguments)
                calls.append(time.perf_counter() - start)
            record(layout, count, calls, trace, results, one["images_per_minute"])


def main(argv):
    del argv
    counts = sorted({int(c) for c in FLAGS.counts})
    if (
        min(counts or [0]) < 1
        or min(FLAGS.iterations, FLAGS.alone, FLAGS.warmups, FLAGS.timed_calls) < 1
    ):
        raise app.UsageError(
            "--counts, --iterations, --alone, --warmups and --timed_calls must be >= 1."
        )
    if FLAGS.threads < 0:
        raise app.UsageError(
            f"--threads must be >= 0 (0: TensorFlow's default); got {FLAGS.threads}."
        )
    checks = (("layouts", FLAGS.layouts, LAYOUTS), ("victims", FLAGS.victims, VICTIMS))
    for flag, given, valid in checks:
        unknown = set(given) - set(valid)
        if unknown:
            raise app.UsageError(f"unknown --{flag} {sorted(unknown)}; use {', '.join(valid)}.")
    from tfleak.io import atomic_write_json, check_writable_dir

    check_writable_dir(Path(FLAGS.output).parent, "output")

    import tensorflow as tf

    import tfleak
    from tfleak.distribute import get_strategy

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)

    strategy = get_strategy(FLAGS.strategy)
    total = max(counts[-1], FLAGS.alone)
    images, labels, classes = tfleak.data.load_examples(
        "cifar10", list(range(total)), "test", FLAGS.data_dir
    )
    output = Path(FLAGS.output)
    previous = json.loads(output.read_text()) if output.exists() else {}
    done = {
        _key(r): r for r in previous.get("rows", []) if "victim" in r and not _measured_again(r)
    }
    peak = _matmul_flops_per_second(FLAGS.matmul_size)
    print(f"float32 matmul {FLAGS.matmul_size}^2: {peak / 1e9:.1f} GFLOP/s", flush=True)
    # tolerance 0 and no stall rule: every attack runs exactly --iterations
    # (L-BFGS stops early only where its line search fails).
    if FLAGS.attack == "idlg":
        base = tfleak.IDLG(
            iterations=FLAGS.iterations, restarts=0, tolerance=0.0, stall_ratio=None, seed=0,
            line_search=FLAGS.line_search,
        )  # fmt: skip
    else:
        base = tfleak.InvertingGradients(
            iterations=FLAGS.iterations, restarts=0, label_strategy="idlg", stall_ratio=None
        )
    name = FLAGS.attack if FLAGS.attack != "idlg" else f"idlg_{FLAGS.line_search}"
    report = {
        "attacks": {**previous.get("attacks", {}), name: repr(base)},
        "iterations": FLAGS.iterations,
        "matmul_flops_per_second": peak,
        "matmul_size": FLAGS.matmul_size,
        "strategy": FLAGS.strategy,
        "threads": FLAGS.threads,
        "timed_calls": FLAGS.timed_calls,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "victims": previous.get("victims", {}),
        "rows": list(done.values()),
    }

    def save(row):
        done[_key(row)] = row
        report["rows"] = list(done.values())
        atomic_write_json(output, report)

    for name in FLAGS.victims:
        _benchmark_victim(
            name, images, labels, classes, counts, base, strategy, peak, done, save, report
        )

    print(
        "\n| victim | attack | attacks | layout | seconds | images / min | x one at a time "
        "| trace s | GFLOP/s | % of matmul | objective ms | solver ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in report["rows"]:
        label = "1 at a time" if row["layout"] == "one_at_a_time" else f"{row['attacks']} at once"
        split = (
            f"{row['objective_ms_per_attack_evaluation']:.2f} | "
            f"{row['solver_ms_per_attack_evaluation']:.2f}"
        )
        attack = row.get("attack", "idlg")
        search = _line_search(attack, row)
        attack = f"{attack} ({search})" if search else attack
        print(
            f"| {row['victim']} | {attack} | {label} | "
            f"{row['layout'].replace('one_at_a_time', '-')} | "
            f"{row['seconds']:.2f} | {row['images_per_minute']:.0f} | "
            f"{row.get('ratio_to_one_at_a_time', float('nan')):.2f} | "
            f"{row['trace_seconds']:.1f} | {row['flops_per_second'] / 1e9:.2f} | "
            f"{100 * row['fraction_of_matmul_peak']:.1f} | {split} |"
        )
    print(f"Wrote {output}")


if __name__ == "__main__":
    run(main)
