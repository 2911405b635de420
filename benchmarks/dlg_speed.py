"""tfleak's DLG against the published PyTorch DLG loop, side by side on this CPU.

LeNet (DLG's, 100 classes as for CIFAR-100) on 32x32 RGB natural images (the
embedded sample photographs, image `seed % 3`); both sides attack the same
victim weights and the same image for each seed. For each side and seed it
records the seconds until the reconstruction first reaches PSNR >= 30 dB
(tfleak: from the attack's start, tracing included, checked every
`snapshot_every` iterations; torch: checked after every LBFGS step), whether
it got there, and the seconds per evaluation of the gradient distance.

    python benchmarks/dlg_speed.py --quick          # < 10 minutes
    python benchmarks/dlg_speed.py --seeds=5        # the full reference loop

Medians are over all seeds; a seed that never reached 30 dB counts at the
seconds it ran, a lower bound on its time (flagged `*_median_is_lower_bound`):
this favours the side that fails. With --quick the torch loop stops after
--torch_budget seconds per seed. Writes JSON to --output.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

# torch and its compiler first: torch.optim loads torch._dynamo, whose triton
# crashes the process (segmentation fault) when loaded after TensorFlow.
import torch
import torch._dynamo  # noqa: F401
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "3 seeds and a torch budget, to finish within 10 minutes.")
flags.DEFINE_integer("seeds", 5, "Seeds per side (--quick: 3).")
flags.DEFINE_float("torch_budget", None, "Seconds per torch seed (--quick: 100; default none).")
flags.DEFINE_integer("torch_steps", 300, "LBFGS steps of the reference loop (the paper's 300).")
flags.DEFINE_integer("num_classes", 100, "Victim classes.")
flags.DEFINE_integer("iterations", 2000, "tfleak L-BFGS iterations per round.")
flags.DEFINE_integer("restarts", 4, "tfleak rounds from new starts after a failed one.")
flags.DEFINE_integer("starts", 1, "tfleak random starts per trial.")
flags.DEFINE_enum(
    "line_search", "armijo", ["armijo", "hager_zhang"], "tfleak's L-BFGS line search."
)
flags.DEFINE_integer("threads", 0, "Intra-op threads for both frameworks (0 = their default).")
flags.DEFINE_string(
    "output", None, "JSON path (default benchmarks/results/dlg_speed[_quick].json)."
)

TARGET_PSNR = 30.0


def _median_time(runs):
    """Median seconds to the target over seeds; a seed that never reached it
    counts at the seconds it ran (a lower bound). Returns (median, any_censored)."""
    runs = list(runs)
    times = [r["seconds_to_target"] or r["seconds"] for r in runs]
    return statistics.median(times), any(r["seconds_to_target"] is None for r in runs)


def main(argv):
    del argv
    seeds = 3 if FLAGS.quick else FLAGS.seeds
    budget = (
        FLAGS.torch_budget if FLAGS.torch_budget is not None else (100 if FLAGS.quick else None)
    )
    if seeds < 1:
        raise app.UsageError("--seeds must be at least 1.")
    if FLAGS.threads < 0:
        raise app.UsageError(f"--threads must be >= 0; got {FLAGS.threads}.")
    from tfleak.cli import require_finite
    from tfleak.io import atomic_write_json, check_writable_dir

    require_finite("torch_budget", budget, minimum=0.0, inclusive=(False, True))
    output = Path(
        FLAGS.output or f"benchmarks/results/dlg_speed{'_quick' if FLAGS.quick else ''}.json"
    )
    try:
        check_writable_dir(output.parent, "output")
    except (ValueError, PermissionError) as error:
        raise app.UsageError(str(error)) from error

    import numpy as np
    import tensorflow as tf

    import tfleak

    try:
        import torch_dlg
    except ImportError:  # run as a module from the repository root
        from benchmarks import torch_dlg

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        torch.set_num_threads(FLAGS.threads)
    samples = tfleak.data.load_dataset("sample", image_size=32)
    victim = tfleak.LeNet((32, 32, 3), FLAGS.num_classes, seed=0)
    torch_victim = torch_dlg.from_keras(victim)

    rows = []
    for seed in range(seeds):
        image = samples.images[seed % len(samples)]
        label = (7 * seed + 3) % FLAGS.num_classes
        observed = victim.gradient(image[None], tf.constant([label]))

        reached = {}
        start = time.perf_counter()

        def on_snapshot(round_index, snapshot, image=image, start=start, reached=reached):
            if not reached and tfleak.metrics.psnr(image, snapshot.images[0])[0] >= TARGET_PSNR:
                reached["seconds"] = time.perf_counter() - start

        attack = tfleak.DLG(
            iterations=FLAGS.iterations,
            restarts=FLAGS.restarts,
            starts=FLAGS.starts,
            seed=seed,
            line_search=FLAGS.line_search,
        )
        result = attack(
            victim,
            observed,
            ground_truth=(image[None], [label]),
            verbose=0,
            on_snapshot=on_snapshot,
        )
        ours = {
            "seconds_to_target": reached.get("seconds"),
            "seconds": result.seconds,
            "iterations": result.iterations,
            "restarts_used": result.restarts_used,
            "psnr": result.metrics["psnr"],
            "label_correct": bool(result.labels[0] == label),
        }
        print(f"seed {seed} tfleak: {ours}", flush=True)
        theirs = torch_dlg.run(
            torch_victim, image, label, seed, steps=FLAGS.torch_steps, budget_seconds=budget
        )
        theirs["label_correct"] = theirs.pop("label_pred") == label
        print(f"seed {seed} torch:  {theirs}", flush=True)
        rows.append({"seed": seed, "label": label, "tfleak": ours, "torch": theirs})

    # Seconds per evaluation: tfleak from a timed compiled run (no tracing).
    timing_attack = tfleak.DLG(
        iterations=200, restarts=0, starts=1, stall_window=10**6, tolerance=0.0, seed=0,
        line_search=FLAGS.line_search,
    )  # fmt: skip
    observed = victim.gradient(samples.images[:1], tf.constant([3]))
    evaluations = _count_evaluations(timing_attack, victim, observed)
    tfleak_eval = evaluations["seconds"] / evaluations["evaluations"]
    torch_evals = [r["torch"]["seconds"] / r["torch"]["evaluations"] for r in rows]

    def success(side):
        return float(np.mean([r[side]["seconds_to_target"] is not None for r in rows]))

    tfleak_median, tfleak_censored = _median_time(r["tfleak"] for r in rows)
    torch_median, torch_censored = _median_time(r["torch"] for r in rows)
    tfleak_per_success = _seconds_per_success(r["tfleak"] for r in rows)
    torch_per_success = _seconds_per_success(r["torch"] for r in rows)
    summary = {
        "quick": FLAGS.quick,
        "seeds": seeds,
        "torch_budget_seconds": budget,
        "torch_steps": FLAGS.torch_steps,
        "target_psnr": TARGET_PSNR,
        "tfleak_median_seconds": tfleak_median,
        "torch_median_seconds": torch_median,
        "ratio": tfleak_median / torch_median,
        # A seed that never reached the target counts at the seconds it ran:
        # a lower bound on its time, so a median over such seeds is one too.
        "tfleak_median_is_lower_bound": tfleak_censored,
        "torch_median_is_lower_bound": torch_censored,
        # All seconds spent (to the target, or the whole failed run) over the
        # number of successes: the expected cost of one successful attack.
        "tfleak_seconds_per_success": tfleak_per_success,
        "torch_seconds_per_success": torch_per_success,
        "ratio_per_success": (
            tfleak_per_success / torch_per_success
            if tfleak_per_success and torch_per_success
            else None
        ),
        "tfleak_success_rate": success("tfleak"),
        "torch_success_rate": success("torch"),
        "tfleak_seconds_per_evaluation": tfleak_eval,
        "tfleak_line_search": timing_attack.solver.line_search,
        "tfleak_evaluations_per_iteration": evaluations["evaluations"] / evaluations["iterations"],
        "torch_seconds_per_evaluation": statistics.median(torch_evals),
        "evaluation_ratio": tfleak_eval / statistics.median(torch_evals),
        "machine": f"{platform.processor() or platform.machine()}, {_cpus()} CPUs",
        "versions": {"tensorflow": tf.__version__, "torch": torch.__version__},
        "runs": rows,
    }
    atomic_write_json(output, summary)
    _print_table(summary)
    print(f"Wrote {output}")


def _count_evaluations(attack, victim, observed):
    """Seconds and objective evaluations of one compiled L-BFGS round."""
    import tensorflow as tf

    from tfleak.attacks import GradientMatching
    from tfleak.attacks.lbfgs import BatchedLBFGS

    objective = GradientMatching(victim, attack.objective.distance)
    solver = BatchedLBFGS(
        objective, 1, True, 1, attack.trials.init, attack.solver.history_size,
        line_search=attack.solver.line_search,
    )  # fmt: skip
    observed = victim.check_gradient(observed)
    arguments = (observed, tf.zeros((1, 1, victim.num_classes)), ())
    results = solver.initialize(solver.random_starts(0, 0), *arguments)
    solver.resume(results, tf.constant(1), *arguments)  # traces
    start = time.perf_counter()
    results = solver.resume(results, tf.constant(attack.iterations), *arguments)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "evaluations": int(results.num_objective_evaluations) - 1,
        "iterations": int(results.num_iterations) - 1,
    }


def _seconds_per_success(runs):
    """Seconds spent over all seeds (to the target, or the whole run when it
    failed) divided by the number of successes; None if nothing succeeded."""
    runs = list(runs)
    successes = sum(r["seconds_to_target"] is not None for r in runs)
    spent = sum(r["seconds_to_target"] or r["seconds"] for r in runs)
    return spent / successes if successes else None


def _cpus():
    import os

    return os.cpu_count()


def _print_table(summary):
    def cell(value, fmt="{:.1f}"):
        return "n/a" if value is None else fmt.format(value)

    def bound(side):
        return " (lower bound)" if summary[f"{side}_median_is_lower_bound"] else ""

    print()
    print("| | tfleak | torch | tfleak / torch |")
    print("|---|---|---|---|")
    print(
        f"| median seconds to PSNR >= 30 dB | {cell(summary['tfleak_median_seconds'])}"
        f"{bound('tfleak')} | {cell(summary['torch_median_seconds'])}{bound('torch')} | "
        f"{cell(summary['ratio'], '{:.3f}')} |"
    )
    print(
        f"| seconds per successful attack | {cell(summary['tfleak_seconds_per_success'])} | "
        f"{cell(summary['torch_seconds_per_success'])} | "
        f"{cell(summary['ratio_per_success'], '{:.3f}')} |"
    )
    print(
        f"| success rate | {summary['tfleak_success_rate']:.2f} | "
        f"{summary['torch_success_rate']:.2f} | |"
    )
    print(
        f"| evaluations per L-BFGS iteration | "
        f"{summary['tfleak_evaluations_per_iteration']:.2f} | about 1 (fixed step) | |"
    )
    print(
        f"| ms per gradient-distance evaluation | "
        f"{1000 * summary['tfleak_seconds_per_evaluation']:.2f} | "
        f"{1000 * summary['torch_seconds_per_evaluation']:.2f} | "
        f"{summary['evaluation_ratio']:.3f} |"
    )


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
