r"""Model inversion on a split Omniglot model, against plain and DP-Adam targets.

A target classifier is split into an on-device stage (images -> 1x1x32 code)
and a server stage. An attacker who can query the on-device stage learns a
decoder from codes back to images on surrogate images, then inverts codes of
images it never saw. The experiment repeats the attack against targets
trained with DP Adam at each noise multiplier, and writes to --output_dir:

  results.json       rows (noise, epsilon, accuracies, attacker MSE/PSNR/SSIM),
                     the mean-image baseline, the data scheme, timings, config
  results.md         the same table in Markdown
  reconstructions.png  test originals, then one row of reconstructions per target
  models/            each target's on-device stage, native Keras format
  checkpoints/       per-epoch checkpoints: rerun the same command to resume

Offline, from the two small Omniglot zips (a few minutes on a laptop CPU):

  python examples/model_inversion.py --scheme=offline --data_dir=../shared/data \
      --target_epochs=5 --attacker_epochs=10 --dp_epochs=3 --output_dir=/tmp/mi

The published configuration (full Omniglot through tfds, a GPU recommended):

  python examples/model_inversion.py --scheme=tfds --target_epochs=10 \
      --attacker_epochs=100 --noise_multipliers=0.7,0.5,0.3 --dp_epochs=20 \
      --output_dir=/tmp/mi_tfds
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
from absl import app, flags
from tensorflow import keras

from tfleak import privacy, split
from tfleak.data.omniglot import OMNIGLOT_SCHEMES, describe_scheme, omniglot_scheme
from tfleak.distribute import STRATEGIES, get_strategy
from tfleak.plotting import plot_image_rows

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "scheme",
    "offline",
    list(OMNIGLOT_SCHEMES),
    "Which Omniglot images train and test the target and the attacker "
    "(tfleak.data.omniglot.OMNIGLOT_SCHEMES).",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "Folder with the Omniglot release zips (also looked for in its omniglot/ and "
    "downloads/); default $TFLEAK_DATA_DIR, else tfds.",
)
flags.DEFINE_integer("target_epochs", 10, "Epochs of the plain target (Adam).")
flags.DEFINE_integer("attacker_epochs", 100, "Epochs of each attacker (Adam, MSE).")
flags.DEFINE_list(
    "noise_multipliers",
    ["0.7", "0.5", "0.3"],
    "DP targets' noise multipliers (noise std / clipping norm), each > 0; empty = no DP rows.",
)
flags.DEFINE_integer("dp_epochs", 20, "Epochs of each DP target (DP Adam).")
flags.DEFINE_integer("batch_size", 32, "Batch size of every model.")
flags.DEFINE_integer(
    "num_microbatches",
    None,
    "DP microbatches per batch; must divide --batch_size. Default: --batch_size (one "
    "example each).",
)
flags.DEFINE_float("l2_norm_clip", 1.0, "DP clipping norm of each microbatch's gradient.")
flags.DEFINE_float("dp_learning_rate", 0.005, "DP Adam's learning rate.")
flags.DEFINE_float("attacker_learning_rate", 0.01, "Attacker Adam's learning rate.")
flags.DEFINE_float("delta", 1e-5, "The delta of (epsilon, delta)-DP.")
flags.DEFINE_enum(
    "epsilon_conversion",
    "rdp",
    ["rdp", "classic"],
    "Epsilon shown in the figure and log: 'rdp' (today's conversion) or 'classic' (the "
    "published table's). results.json and results.md always hold both.",
)
flags.DEFINE_integer(
    "limit", 0, "Use at most this many images of each dataset (0 = all); for smoke tests."
)
flags.DEFINE_enum(
    "strategy",
    "default",
    list(STRATEGIES),
    "tf.distribute strategy; models are built and trained under its scope.",
)
flags.DEFINE_string("output_dir", "results/model_inversion", "Where results go.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling, dropout and DP noise.")

NUM_SHOWN = 16
log = functools.partial(print, flush=True)


def _validate_flags() -> list[float]:
    """Checks flags before any work; returns the noise multipliers."""
    try:
        noises = [float(value) for value in FLAGS.noise_multipliers]
    except ValueError as error:
        raise app.UsageError(f"--noise_multipliers must be numbers: {error}") from error
    if any(noise <= 0 for noise in noises):
        raise app.UsageError(
            f"--noise_multipliers must all be > 0 (got {noises}); the plain target is always "
            "included, leave the list empty for no DP rows."
        )
    for name in ("target_epochs", "attacker_epochs", "dp_epochs", "batch_size"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be >= 1; got {getattr(FLAGS, name)}.")
    microbatches = FLAGS.num_microbatches or FLAGS.batch_size
    if FLAGS.batch_size % microbatches:
        raise app.UsageError(
            f"--num_microbatches={microbatches} does not divide --batch_size="
            f"{FLAGS.batch_size}; DP Adam needs equal microbatches."
        )
    if FLAGS.limit < 0:
        raise app.UsageError("--limit must be >= 0.")
    return noises


def _attack(target_name, on_device, data, strategy, output_dir, seed):
    """Trains an attacker against `on_device` and evaluates it on the test images."""
    keras.utils.set_random_seed(seed)
    with strategy.scope():
        attacker = split.compile_attacker(
            split.AttackModel(on_device), FLAGS.attacker_learning_rate
        )
    run = split.train_resumable(
        attacker,
        data["attacker_train"],
        epochs=FLAGS.attacker_epochs,
        batch_size=FLAGS.batch_size,
        seed=seed,
        checkpoint_dir=output_dir / "checkpoints" / f"attacker_{target_name}",
        log=log,
        name=f"attacker vs {target_name}",
    )
    metrics, originals, reconstructions = split.evaluate_attack(
        attacker, on_device, data["attacker_test"]
    )
    log(f"attacker vs {target_name} on test images: " + json.dumps(metrics))
    return metrics, originals, reconstructions, run.seconds_per_epoch


def run_experiment(noises: list[float], output_dir: Path) -> dict:
    """Trains the targets and attackers, writes the results; returns results.json's dict."""
    strategy = get_strategy(FLAGS.strategy)
    if noises and strategy.num_replicas_in_sync > 1:
        raise app.UsageError(
            f"--strategy={FLAGS.strategy} has {strategy.num_replicas_in_sync} replicas; DP "
            "training supports one (see tfleak.privacy.compile_dp_target). Use "
            "--strategy=default, or --noise_multipliers= for the plain target only."
        )
    try:
        data = omniglot_scheme(FLAGS.scheme, FLAGS.data_dir)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    if FLAGS.limit:
        data = {key: value.take(FLAGS.limit).cache() for key, value in data.items()}
    scheme = describe_scheme(FLAGS.scheme, data)
    log("data: " + json.dumps(scheme))
    n_train = scheme["target_train"]["images"]
    baseline = split.mean_image_baseline_mse(data["attacker_train"], data["attacker_test"])
    log(f"mean-image baseline MSE on the attacker's test images: {baseline:.4f}")
    models_dir = output_dir / "models"
    common = dict(batch_size=FLAGS.batch_size, validation_data=data["target_val"], log=log)

    # The plain target.
    keras.utils.set_random_seed(FLAGS.seed)
    with strategy.scope():
        target = split.compile_target(split.TargetModel())
    run = split.train_resumable(
        target,
        data["target_train"],
        epochs=FLAGS.target_epochs,
        seed=FLAGS.seed,
        checkpoint_dir=output_dir / "checkpoints" / "target",
        name="target",
        **common,
    )
    privacy.save_on_device(target.on_device_model, models_dir / "plain.keras")
    targets = [(None, "plain", run)]
    timings = {"target_seconds_per_epoch": run.seconds_per_epoch}

    # The DP targets.
    dp_seconds = []
    for index, noise in enumerate(noises, start=1):
        keras.utils.set_random_seed(FLAGS.seed + 1000 * index)
        with strategy.scope():
            dp_target = privacy.compile_dp_target(
                privacy.dp_target_model(),
                noise,
                batch_size=FLAGS.batch_size,
                num_microbatches=FLAGS.num_microbatches,
                l2_norm_clip=FLAGS.l2_norm_clip,
                learning_rate=FLAGS.dp_learning_rate,
            )
        name = f"dp_noise{noise:g}"
        run = split.train_resumable(
            dp_target,
            data["target_train"],
            epochs=FLAGS.dp_epochs,
            seed=FLAGS.seed + 1000 * index,
            checkpoint_dir=output_dir / "checkpoints" / name,
            drop_remainder=True,
            name=name,
            **common,
        )
        privacy.save_on_device(privacy.cut_on_device(dp_target), models_dir / f"{name}.keras")
        targets.append((noise, name, run))
        dp_seconds.append(run.seconds_per_epoch)
    if dp_seconds:
        timings["dp_target_seconds_per_epoch"] = float(np.mean(dp_seconds))

    # One attacker per target, against its saved on-device stage.
    rows, figure_rows, titles, attacker_seconds = [], [], ["original"], []
    for index, (noise, name, run) in enumerate(targets):
        with strategy.scope():
            on_device = privacy.load_on_device(models_dir / f"{name}.keras")
        metrics, originals, reconstructions, seconds = _attack(
            name, on_device, data, strategy, output_dir, FLAGS.seed + 1000 * index + 500
        )
        attacker_seconds.append(seconds)
        row = {"noise_multiplier": noise, "epsilon": None, "epsilon_classic": None}
        if noise is not None:
            for key, conversion in (("epsilon", "rdp"), ("epsilon_classic", "classic")):
                row[key] = privacy.compute_epsilon(
                    n_train, FLAGS.batch_size, FLAGS.dp_epochs, noise, FLAGS.delta, conversion
                )
        row.update(
            train_accuracy=run.final.get("accuracy"),
            val_accuracy=run.final.get("val_accuracy"),
            attacker_mse=metrics["mse"],
            attacker_psnr=metrics["psnr"],
            attacker_ssim=metrics["ssim"],
        )
        rows.append(row)
        if not figure_rows:
            figure_rows.append(list(originals[:NUM_SHOWN]))
        figure_rows.append(list(reconstructions[:NUM_SHOWN]))
        shown = row["epsilon" if FLAGS.epsilon_conversion == "rdp" else "epsilon_classic"]
        titles.append(
            "no DP"
            if noise is None
            else f"noise {noise:g}\neps {shown:.3g} ({FLAGS.epsilon_conversion})"
        )
    timings["attacker_seconds_per_epoch"] = float(np.mean(attacker_seconds))

    results = {
        "rows": rows,
        "baseline_mse": baseline,
        "scheme": scheme,
        "epsilon_note": (
            f"epsilon: RDP accountant (dp_accounting), delta {FLAGS.delta:g}, n {n_train}, "
            f"batch {FLAGS.batch_size}, {FLAGS.dp_epochs} epochs, Poisson-sampling "
            "approximation; 'epsilon' uses today's RDP-to-DP conversion (Canonne-Kamath-"
            "Steinke 2020), 'epsilon_classic' the older one (Mironov 2017) of the published table."
        ),
        "timings": timings,
        "config": {name: FLAGS[name].value for name in FLAGS if name in _OWN_FLAGS},
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=1))
    (output_dir / "results.md").write_text(markdown_table(results))
    plot_image_rows(
        figure_rows,
        output_dir / "reconstructions.png",
        row_titles=titles,
        title=f"Model inversion of the on-device code, Omniglot '{FLAGS.scheme}' scheme: "
        f"first {NUM_SHOWN} attacker test images",
    )
    log(markdown_table(results))
    log(f"wrote {output_dir / 'results.json'}, results.md, reconstructions.png")
    return results


def markdown_table(results: dict) -> str:
    """results.json's rows as a Markdown table."""

    def cell(value, digits=3):
        return "-" if value is None else f"{value:.{digits}g}" if digits else str(value)

    lines = [
        "| noise multiplier | epsilon (rdp) | epsilon (classic) | target train acc | "
        "target val acc | attacker MSE | PSNR (dB) | SSIM |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {cell(row['noise_multiplier'])} | {cell(row['epsilon'])} | "
            f"{cell(row['epsilon_classic'])} | {cell(row['train_accuracy'], 2)} | "
            f"{cell(row['val_accuracy'], 2)} | {cell(row['attacker_mse'], 3)} | "
            f"{cell(row['attacker_psnr'], 3)} | {cell(row['attacker_ssim'], 2)} |"
        )
    lines.append(f"\nMean-image baseline MSE: {results['baseline_mse']:.3f}\n")
    return "\n".join(lines)


_OWN_FLAGS = (
    "scheme data_dir target_epochs attacker_epochs noise_multipliers dp_epochs batch_size "
    "num_microbatches l2_norm_clip dp_learning_rate attacker_learning_rate delta "
    "epsilon_conversion limit strategy output_dir seed"
).split()


def main(argv):
    del argv
    noises = _validate_flags()
    start = time.perf_counter()
    run_experiment(noises, Path(FLAGS.output_dir))
    log(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    app.run(main)
