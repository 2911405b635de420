r"""Study: how much a split model leaks at each cut, and what each defence buys back there.

Trains the split Omniglot target once (the network is the same whatever the cut;
only where the code leaves the device moves), then for every cut 1..4 runs two
attackers against the codes of the unseen test alphabet (offline scheme:
Tagalog, 340 images): the decoder (black box, He, Zhang, Lee, ACSAC 2019,
Section 4.2: transposed convolutions that follow the code's shape, learned from
the device's codes of katakana and Sanskrit surrogates) and the white box
(device weights known: code matching with a TV prior, Section 4.1), scored by
MSE beside the mean image and by re-identification among all 340 test images.
At the published 1x1x32 cut it also trains the published decoder as published
(up to --published_decoder_epochs, early stopping on a held-out eighth of the
surrogates).

Then, where an attack works (--dp_cuts, --code_defense_cuts; 'auto' = the
deepest cut at which an attack re-identifies at least half of its images):
- DP-Adam targets (batch norm as published, --dp_variant) at each
  --noise_multipliers, with epsilon (tfleak.privacy.compute_epsilon);
- code defences of the plain target: Gaussian noise (in units of the codes'
  standard deviation), the clipped Laplace mechanism (local epsilon per code),
  NoPeek targets (alpha);
each with the validation accuracy when the server receives what is sent.

Writes to --output_dir after every row (rerun the same command to resume; a
different configuration there is refused): results.json, results.md,
curve.png (cut x attacker), tradeoff.png (accuracy against re-identification,
per defence), reconstructions.png and reconstructions_cut<k>.png. The default
grid is for a GPU machine; --quick is the reduced grid for a 2-core CPU.

  python benchmarks/split_study.py --quick --data_dir=../shared/data \
      --output_dir=results/split_study_cpu
"""

from __future__ import annotations

import time

import tfleak  # noqa: F401  first: TensorFlow's start-up lines stay off the terminal

# isort: split
from absl import app, flags

from tfleak import privacy, split
from tfleak.cli import parse_float_list, run
from tfleak.io import check_writable_dir
from tfleak.split import report, runner
from tfleak.training import ConfigMismatchError

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data", "Folder with the two small Omniglot zips.")
flags.DEFINE_string("output_dir", "results/split_study", "Where results go.")
flags.DEFINE_bool("quick", False, "The reduced grid for a 2-core CPU (see QUICK).")
flags.DEFINE_list("cuts", ["1", "2", "3", "4"], "Cuts (conv blocks on the device) to attack.")
flags.DEFINE_integer("target_epochs", 10, "Epochs of the plain and NoPeek targets (Adam).")
flags.DEFINE_integer("attacker_epochs", 30, "Epochs of each decoder (Adam, MSE).")
flags.DEFINE_float("attacker_learning_rate", 0.005, "Decoder Adam's learning rate.")
flags.DEFINE_integer("whitebox_images", 340, "Test images the white box inverts (0 = none).")
flags.DEFINE_integer("whitebox_steps", 300, "Adam steps of the white box.")
flags.DEFINE_float("whitebox_learning_rate", 0.05, "White-box Adam step size (pixels).")
flags.DEFINE_float("whitebox_tv", 0.01, "White-box total-variation weight (lambda).")
flags.DEFINE_integer("published_decoder_epochs", 100, "Most epochs of the published decoder.")
flags.DEFINE_integer("published_decoder_patience", 5, "Its early-stopping patience (epochs).")
flags.DEFINE_list("dp_cuts", ["auto", "4"], "Cuts where the DP targets are attacked.")
flags.DEFINE_list("code_defense_cuts", ["auto", "4"], "Cuts of the code-defence rows.")
flags.DEFINE_list("noise_multipliers", ["0.7", "0.5", "0.3"], "DP-Adam noise multipliers.")
flags.DEFINE_integer("dp_epochs", 20, "Epochs of each DP target (published: 20).")
flags.DEFINE_enum(
    "dp_variant",
    "per_example",
    list(privacy.DP_VARIANTS),
    "What DP-Adam clips; 'full_batch' has the published optimizer's semantics.",
)
flags.DEFINE_list(
    "gaussian_stddevs",
    ["0.3", "1", "3", "10"],
    "Gaussian code noise, in units of the codes' standard deviation.",
)
flags.DEFINE_list(
    "laplace_epsilons",
    ["100000", "10000", "1000", "100"],
    "Local epsilons per code of the clipped Laplace mechanism.",
)
flags.DEFINE_list("nopeek_alphas", ["1", "5", "20"], "NoPeek distance-correlation weights.")
flags.DEFINE_integer("figure_images", 8, "Test images shown in the reconstruction figures.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling, dropout and noise.")
flags.DEFINE_float(
    "time_budget_min",
    0,
    "Start no row or training after this many minutes (0: no limit); "
    "the tables and figures then hold the rows done. Not part of the configuration.",
)

# --quick: what changes from the flags' defaults (the grid measured on a shared 2-core CPU).
QUICK = {
    "target_epochs": 6,
    "attacker_epochs": 5,
    "whitebox_images": 24,
    "whitebox_steps": 200,
    "dp_epochs": 6,
    "code_defense_cuts": ["auto"],
    "gaussian_stddevs": ["1", "4", "16"],
    "laplace_epsilons": ["100000", "10000", "1000"],
    "nopeek_alphas": ["1", "10"],
}
_SETTINGS = (
    "cuts target_epochs attacker_epochs attacker_learning_rate whitebox_images whitebox_steps "
    "whitebox_learning_rate whitebox_tv published_decoder_epochs published_decoder_patience "
    "dp_cuts code_defense_cuts noise_multipliers dp_epochs dp_variant gaussian_stddevs "
    "laplace_epsilons nopeek_alphas figure_images seed"
).split()


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def _cuts(name: str, values, allow_auto: bool) -> list:
    cuts = []
    for value in values:
        if allow_auto and value == "auto":
            cuts.append("auto")
        elif value.isdigit() and int(value) in split.CODE_SHAPES:
            cuts.append(int(value))
        else:
            raise app.UsageError(
                f"--{name} must name cuts 1..4{' or auto' if allow_auto else ''}; got {value!r}."
            )
    return cuts


def _settings() -> dict:
    """The flags that make the study what it is (--quick applied), validated."""
    settings = {name: getattr(FLAGS, name) for name in _SETTINGS}
    if FLAGS.quick:
        settings.update(QUICK)
    settings["cuts"] = sorted(set(_cuts("cuts", settings["cuts"], False)))
    if not settings["cuts"]:
        raise app.UsageError("--cuts must name some of 1, 2, 3, 4.")
    for name in ("dp_cuts", "code_defense_cuts"):
        settings[name] = _cuts(name, settings[name], True)
    for name in (
        "target_epochs",
        "attacker_epochs",
        "whitebox_steps",
        "dp_epochs",
        "published_decoder_epochs",
        "published_decoder_patience",
        "figure_images",
    ):
        if settings[name] < 1:
            raise app.UsageError(f"--{name} must be >= 1.")
    if settings["whitebox_images"] < 0:
        raise app.UsageError("--whitebox_images must be >= 0.")
    for name in ("noise_multipliers", "gaussian_stddevs", "laplace_epsilons", "nopeek_alphas"):
        settings[name] = parse_float_list(name, settings[name], minimum=0.0)
        if name != "gaussian_stddevs" and 0.0 in settings[name]:
            raise app.UsageError(f"--{name} must all be > 0.")
    return settings


def main(argv):
    del argv
    settings = _settings()
    try:
        output_dir = check_writable_dir(FLAGS.output_dir)
    except (ValueError, PermissionError) as error:
        raise app.UsageError(str(error)) from None
    if not 0 <= FLAGS.time_budget_min < float("inf"):
        raise app.UsageError("--time_budget_min must be >= 0 (0: no limit).")
    budget = FLAGS.time_budget_min * 60 or float("inf")
    try:
        state = runner.SplitStudy(settings, output_dir, time.monotonic() + budget, log)
    except ConfigMismatchError as error:
        raise app.UsageError(str(error)) from None
    state.load_data(FLAGS.data_dir)
    try:
        runner.run_grid(state)
    except runner.OutOfTime as stop:
        log(
            f"time budget of {FLAGS.time_budget_min:g} min spent before {stop}; the tables and "
            "figures hold the rows done: rerun the same command to continue."
        )
    state.save()
    if "plain" in state.results["targets"]:
        report.write_figures(state.results, state.test_images, output_dir)
        print(report.markdown(state.results), flush=True)


if __name__ == "__main__":
    run(main)
