r"""Benchmark: the model-inversion experiment, 'offline' scheme, on this machine's CPU.

Runs examples/model_inversion.py as a user would (a subprocess, progress
streamed) with the published training configuration (target 10 epochs, DP
20 epochs at noise 0.7 / 0.5 / 0.3, batch 32, clip 1, learning rate 0.005)
and DP-Adam clipping each example's gradient with the example run through the
model alone (`--dp_variant=per_example`; `full_batch` clips rows of one
whole-batch pass, see tfleak.privacy.DP_VARIANTS), for batch-norm and
group-norm targets. Every phase checkpoints: rerun the same command to resume.
Writes benchmark.json and benchmark.md (the results tables, seconds per epoch,
the configuration) to --output_dir.

  python benchmarks/model_inversion.py --data_dir=../shared/data
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from tfleak.cli import run
from tfleak.io import atomic_write_json, atomic_write_text, check_writable_dir

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data", "Folder with the two small Omniglot zips.")
flags.DEFINE_integer("target_epochs", 10, "Epochs of the plain target (published: 10).")
flags.DEFINE_integer("attacker_epochs", 100, "Most epochs of each decoder (published: 100).")
flags.DEFINE_integer("dp_epochs", 20, "Epochs of each DP target (published: 20).")
flags.DEFINE_list("dp_norms", ["batch", "group"], "Normalizations of the DP targets.")
flags.DEFINE_string(
    "dp_variant", "per_example", "What DP-Adam clips (a key of tfleak.privacy.DP_VARIANTS)."
)
flags.DEFINE_list("noise_multipliers", ["0.7", "0.5", "0.3"], "DP noise multipliers.")
flags.DEFINE_integer("seed", 0, "Seed of the experiment.")
flags.DEFINE_string("output_dir", "results/benchmarks/model_inversion", "Where results go.")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "model_inversion.py"
PUBLISHED = {"target_epochs": 10, "attacker_epochs": 100, "dp_epochs": 20}


def main(argv):
    del argv
    for name in ("target_epochs", "attacker_epochs", "dp_epochs"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be >= 1.")
    output_dir = check_writable_dir(FLAGS.output_dir)
    command = [
        sys.executable,
        str(EXAMPLE),
        "--scheme=offline",
        f"--data_dir={FLAGS.data_dir}",
        f"--target_epochs={FLAGS.target_epochs}",
        f"--attacker_epochs={FLAGS.attacker_epochs}",
        f"--dp_epochs={FLAGS.dp_epochs}",
        f"--noise_multipliers={','.join(FLAGS.noise_multipliers)}",
        f"--dp_norms={','.join(FLAGS.dp_norms)}",
        f"--dp_variant={FLAGS.dp_variant}",
        f"--seed={FLAGS.seed}",
        f"--output_dir={output_dir / 'experiment'}",
    ]
    reduced = {
        name: f"{getattr(FLAGS, name)} (published {value})"
        for name, value in PUBLISHED.items()
        if getattr(FLAGS, name) != value
    }
    print("reduced from the published configuration: " + json.dumps(reduced), flush=True)
    print("running: " + " ".join(command), flush=True)
    start = time.perf_counter()
    completed = subprocess.run(command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if completed.returncode:
        raise app.UsageError(f"the experiment failed (exit status {completed.returncode}).")
    seconds = time.perf_counter() - start
    results = json.loads((output_dir / "experiment" / "results.json").read_text())
    table = (output_dir / "experiment" / "results.md").read_text()
    timings = results["timings"]
    benchmark = {
        "command": " ".join(["python", "benchmarks/model_inversion.py", *sys.argv[1:]]),
        "experiment_command": " ".join(command[1:]),
        "reduced_from_published": reduced,
        "total_seconds": seconds,
        "timings": timings,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "results": results,
    }
    atomic_write_json(output_dir / "benchmark.json", benchmark)
    lines = [
        f"Offline scheme, {os.cpu_count()} CPUs, total {seconds / 60:.1f} min. Reduced from the "
        f"published configuration: {', '.join(f'{k} {v}' for k, v in reduced.items()) or 'none'}.",
        "",
        table,
        "| training | seconds per epoch |",
        "| --- | --- |",
        f"| plain target (Adam) | {timings['target_seconds_per_epoch']:.1f} |",
    ]
    if "dp_target_seconds_per_epoch" in timings:
        lines.append(f"| DP target (DP Adam) | {timings['dp_target_seconds_per_epoch']:.1f} |")
    lines.append(f"| attacker (Adam) | {timings['attacker_seconds_per_epoch']:.1f} |")
    atomic_write_text(output_dir / "benchmark.md", "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    run(main)
