"""How much does my Keras classifier leak? One audit of a saved model on a folder of images.

    python examples/audit.py --model_path=model.keras --data_dir=my_photos \
        --output_dir=results/audit --defense=none --defense=prune:0.9

Loads the model (saved by Keras 3; never changed), draws a few private
batches from --data_dir (one sub-folder of images per class), attacks a clone
of the model for every threat x defence x attack, and writes report.json,
report.md and worst_leaks.png into --output_dir (see `tfleak.audit`).

By default (--attacks=auto) every attack runs that applies to the model,
cheapest and most likely first: closed-form recovery from a first Dense layer
or one convolution (exact where it applies), iDLG (L-BFGS with restored
labels), then Inverting Gradients. The report opens with the worst case: each
image's strongest reconstruction over the attacks, which attack found it, and
the images recovered exactly.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "A Keras 3 classifier saved as .keras.")
flags.DEFINE_string("data_dir", None, "A folder with one sub-folder of images per class.")
flags.DEFINE_string("output_dir", "results/audit", "Where the report is written.")
flags.DEFINE_list(
    "threats", ["gradient"], "Shared updates: gradient (FedSGD), fedavg, fedavg:K/LR[/B]."
)
flags.DEFINE_multi_string(
    "defense",
    ["none"],
    "A defence chain, NAME:STRENGTH joined by '+' (noise:1e-3, dpsgd:1.0/0.5, prune:0.9, "
    "quantize:8); repeat the flag for several chains; 'none' for no defence.",
)
flags.DEFINE_list(
    "attacks",
    ["auto"],
    "Attacks, run in this order: analytic (closed-form), idlg, inverting_gradients, dlg; "
    "'auto': analytic, idlg, inverting_gradients, those that do not apply reported as skipped.",
)
flags.DEFINE_integer("batch_size", 1, "Private examples per attacked batch.")
flags.DEFINE_integer("batches", 2, "Batches attacked per setting.")
flags.DEFINE_integer(
    "iterations", 300, "Iterations per batch of the optimisation attacks (analytic has none)."
)
flags.DEFINE_float("time_budget_s", 600.0, "No setting starts after this many seconds.")
flags.DEFINE_integer("seed", 0, "Seed of the drawn examples and of the attacks.")
flags.DEFINE_enum(
    "strategy",
    "default",
    ["default", "mirrored", "tpu", "multi_worker"],
    "tf.distribute strategy: an L-BFGS attack's batches are split across its replicas.",
)
flags.mark_flags_as_required(["model_path", "data_dir"])


def main(argv):
    del argv
    from tfleak.io import check_writable_dir
    from tfleak.threats.defenses import parse_defenses

    for name in ("batch_size", "batches", "iterations"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be at least 1; got {getattr(FLAGS, name)}.")
    if not os.path.exists(FLAGS.model_path):
        raise app.UsageError(f"--model_path {FLAGS.model_path} does not exist.")
    try:
        chains = [None if d == "none" else parse_defenses(d.split("+")) for d in FLAGS.defense]
        output_dir = check_writable_dir(FLAGS.output_dir, "output_dir")
    except (ValueError, PermissionError) as error:
        raise app.UsageError(str(error)) from error

    import tfleak
    from tfleak.distribute import get_strategy

    try:
        strategy = get_strategy(FLAGS.strategy)
        report = tfleak.audit(
            FLAGS.model_path,
            FLAGS.data_dir,
            threats=FLAGS.threats,
            defenses=chains,
            attacks=None if FLAGS.attacks == ["auto"] else FLAGS.attacks,
            batch_size=FLAGS.batch_size,
            batches=FLAGS.batches,
            iterations=FLAGS.iterations,
            time_budget_s=FLAGS.time_budget_s,
            output_dir=output_dir,
            seed=FLAGS.seed,
            strategy=strategy,
        )
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    print(report.to_markdown())
    print(f"Wrote {output_dir}/report.json, report.md, worst_leaks.png")


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
