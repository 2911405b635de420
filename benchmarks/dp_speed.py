r"""Benchmark: seconds per epoch of DP-Adam against plain Adam, on the split target.

Runs, side by side in one process on real Omniglot images (batch 32 by
default), a plain Adam step and tfleak's DP-Adam (`tfleak.privacy.DPModel`) in
each of its `DP_VARIANTS` ('per_example': each microbatch run alone through
`tf.vectorized_map`; 'full_batch': rows of the Jacobian of the microbatch
losses of one whole-batch pass, tensorflow-privacy's `DPKerasAdamOptimizer`
semantics), at several microbatch counts, with batch normalization (as
published) and group normalization. For each it reports seconds per step
(median of --steps timed steps after warm-up) and per epoch (steps of the
offline scheme's 2,270 training images), the ratio to plain Adam with the
same normalization, whether it clips per example (one example per
microbatch), and, measured, whether an example's clipped-to-be gradient
depends on the other examples of its batch. Writes --output (JSON):
`plain_seconds_per_epoch`, `dp_seconds_per_epoch`, `ratio` and `variant` of
the fastest variant that clips per example, per normalization, and the whole
table; prints it as Markdown.

  python benchmarks/dp_speed.py --data_dir=../shared/data --steps=5
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from pathlib import Path

import tfleak  # noqa: F401  first: TensorFlow's start-up lines stay off the terminal

# isort: split
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from tfleak import privacy
from tfleak.cli import require_finite, run
from tfleak.data.omniglot import omniglot_scheme
from tfleak.io import atomic_write_json, check_writable_dir

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data", "Folder with the Omniglot small zips.")
flags.DEFINE_integer("steps", 5, "Timed steps per variant, after --warmup untimed ones.")
flags.DEFINE_integer("warmup", 2, "Untimed steps per variant (tracing, XLA compilation).")
flags.DEFINE_integer("batch_size", 32, "Batch size (published: 32).")
flags.DEFINE_list(
    "microbatches", ["32", "8"], "Microbatch counts to measure (each divides the batch)."
)
flags.DEFINE_list("norms", ["batch", "group"], "Normalizations to measure: batch, group.")
flags.DEFINE_list(
    "variants",
    list(privacy.DP_VARIANTS),
    f"DP variants to measure, of {', '.join(privacy.DP_VARIANTS)}.",
)
flags.DEFINE_integer("train_examples", 2270, "Examples per epoch (offline scheme: 2,270).")
flags.DEFINE_float("noise_multiplier", 0.7, "Noise multiplier of the DP variants.")
flags.DEFINE_bool("jit_compile", False, "Compile the DP train steps with XLA.")
flags.DEFINE_string("output", "results/dp_speed/dp_speed.json", "Where the JSON goes.")

log = functools.partial(print, flush=True)


def _time_round_robin(models: dict, batches, warmup: int, steps: int) -> dict:
    """Median seconds of one `train_on_batch` of each model.

    The models take turns, one step each per round, so that load from other
    processes on a shared machine slows them alike and their ratios hold.
    """
    for model in models.values():
        for images, labels in batches[:warmup]:
            model.train_on_batch(images, labels)
    seconds = {name: [] for name in models}
    for step in range(steps):
        images, labels = batches[warmup + step]
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(images, labels)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def _depends_on_others(norm: str, mechanism: str, images, labels) -> bool:
    """Whether example 0's gradient changes when the rest of its batch is replaced."""
    keras.utils.set_random_seed(0)
    model = privacy.dp_target_model(norm=norm)
    compute = (
        privacy.per_example_gradients
        if mechanism == "alone"
        else privacy.jacobian_per_example_gradients
    )
    half = len(images) // 2
    first = compute(model, images[:half], labels[:half])
    other = tf.concat([images[:1], images[half : 2 * half - 1]], 0)
    other_labels = tf.concat([labels[:1], labels[half : 2 * half - 1]], 0)
    second = compute(model, other, other_labels)
    return any(
        not np.allclose(a[0].numpy(), b[0].numpy(), rtol=1e-4, atol=1e-6)
        for a, b in zip(first, second)
    )


def _summary(rows, plain, steps_per_epoch, load_at_start) -> dict:
    """The JSON: the fastest per-example variant per normalization, and the whole table."""
    chosen = {}
    for norm in plain:
        candidates = [r for r in rows if r["norm"] == norm and r["per_example_clipping"]]
        if candidates:
            best = min(candidates, key=lambda r: r["seconds_per_epoch"])
            chosen[norm] = {
                "variant": best["variant"],
                "plain_seconds_per_epoch": plain[norm],
                "dp_seconds_per_epoch": best["seconds_per_epoch"],
                "ratio": best["ratio"],
            }
    first = chosen.get("batch") or next(iter(chosen.values()), {})
    results = {
        **first,
        "by_norm": chosen,
        "table": rows,
        "steps_per_epoch": steps_per_epoch,
        "config": {
            name: FLAGS[name].value
            for name in (
                "steps",
                "warmup",
                "batch_size",
                "microbatches",
                "norms",
                "variants",
                "train_examples",
                "noise_multiplier",
                "jit_compile",
            )
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_start": load_at_start,
            "load_average_end": os.getloadavg(),
        },
        "variants": privacy.DP_VARIANTS,
    }
    return results


def main(argv):
    del argv
    for name in ("steps", "warmup", "batch_size", "train_examples"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be >= 1; got {getattr(FLAGS, name)}.")
    require_finite("noise_multiplier", FLAGS.noise_multiplier, minimum=0, inclusive=(False, True))
    try:
        microbatches = [int(m) for m in FLAGS.microbatches]
    except ValueError as error:
        raise app.UsageError(f"--microbatches must be integers: {error}") from error
    if any(m < 1 or FLAGS.batch_size % m for m in microbatches):
        raise app.UsageError(
            f"--microbatches {microbatches} must each be >= 1 and divide --batch_size "
            f"{FLAGS.batch_size}."
        )
    for name, valid in (("norms", ("batch", "group")), ("variants", privacy.DP_VARIANTS)):
        unknown = sorted(set(getattr(FLAGS, name)) - set(valid))
        if unknown:
            raise app.UsageError(f"--{name}: unknown {unknown}; choose from {', '.join(valid)}.")
    output = Path(FLAGS.output)
    check_writable_dir(output.parent, "output")

    load_at_start = os.getloadavg()
    needed = (FLAGS.warmup + FLAGS.steps) * FLAGS.batch_size
    data = omniglot_scheme("offline", FLAGS.data_dir)["target_train"].take(needed)
    batches = list(data.batch(FLAGS.batch_size, drop_remainder=True))
    if len(batches) < FLAGS.warmup + FLAGS.steps:
        raise app.UsageError(f"need {needed} training images; the scheme has fewer.")
    steps_per_epoch = FLAGS.train_examples // FLAGS.batch_size
    rows = []
    plain = {}
    for norm in FLAGS.norms:
        keras.utils.set_random_seed(0)
        models = {("plain Adam", None): privacy.dp_target_model(norm=norm)}
        models["plain Adam", None].compile(
            keras.optimizers.Adam(0.005), keras.losses.SparseCategoricalCrossentropy()
        )
        for variant in FLAGS.variants:
            for count in microbatches:
                keras.utils.set_random_seed(0)
                models[variant, count] = privacy.build_dp_target(
                    FLAGS.noise_multiplier,
                    variant=variant,
                    norm=norm,
                    batch_size=FLAGS.batch_size,
                    num_microbatches=count,
                    jit_compile=FLAGS.jit_compile,
                )
        log(f"{norm} norm: timing {len(models)} models, {FLAGS.steps} rounds")
        seconds = _time_round_robin(models, batches, FLAGS.warmup, FLAGS.steps)
        plain[norm] = seconds["plain Adam", None] * steps_per_epoch
        images, labels = batches[0]
        mixing = {
            mechanism: _depends_on_others(norm, mechanism, images, labels)
            for mechanism in ("alone", "jacobian")
        }
        for (variant, count), step_seconds in seconds.items():
            mechanism = "alone" if variant == "per_example" else "jacobian"
            per_example = None if count is None else count == FLAGS.batch_size
            rows.append(
                dict(
                    norm=norm,
                    variant=variant,
                    microbatches=count,
                    seconds_per_step=step_seconds,
                    seconds_per_epoch=step_seconds * steps_per_epoch,
                    ratio=step_seconds * steps_per_epoch / plain[norm],
                    per_example_clipping=per_example,
                    # Only meaningful with one example per microbatch.
                    depends_on_others=mixing[mechanism] if per_example else None,
                )
            )
            log(
                f"{norm} norm, {variant}, {count} microbatches: {step_seconds:.3f} s/step, "
                f"{rows[-1]['ratio']:.1f}x plain"
            )
        # Written after each normalization, so a stopped run keeps what it measured.
        results = _summary(rows, plain, steps_per_epoch, load_at_start)
        atomic_write_json(output, results)
    log(markdown(results))
    log(f"wrote {output}")


def markdown(results: dict) -> str:
    """The table as Markdown."""

    def text(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = [
        "| norm | variant | microbatches | s/step | s/epoch | x plain | per-example clipping | "
        "example's gradient depends on others |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["table"]:
        lines.append(
            f"| {r['norm']} | {r['variant']} | {text(r['microbatches'], 'd')} | "
            f"{r['seconds_per_step']:.3f} | {r['seconds_per_epoch']:.1f} | {r['ratio']:.1f} | "
            f"{text(r['per_example_clipping'], '')} | {text(r['depends_on_others'], '')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)
