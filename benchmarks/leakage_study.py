"""How much a shared update leaks as one thing changes: a curve per study (issue 8).

`--study` picks what is swept; every setting attacks `--batches` private
batches of random CIFAR-10 (JPEG) test images (the same rows for every setting
of equal batch size), shares each batch's update, attacks all of them with one
`attack_many` call (one graph), and records the mean matched PSNR, SSIM,
label accuracy (label multiset), the fraction of images above 20 dB and the
seconds per attack:

- `batch_size`: images per batch, 1..64, FedSGD on LeNet.
- `local_steps`: FedAvg's K local SGD steps on the whole batch of 4
  (learning rate `--local_learning_rate`, 0.1), the attacker unrolling the
  same K steps (quick 1, 2, 5, 10; full 1..10).
- `trained_epochs`: the victim LeNet trained 0..N epochs on `--train_limit`
  CIFAR-10 images first (`train_victim`, peak learning rate
  `--train_learning_rate`; its test accuracy beside it), batches of 4.
- `architecture`: mlp, lenet, convnet (Inverting Gradients' ConvNet, width
  64), resnet20 (and resnet32 in the full grid), batches of 1.
- `defense`: each defence of `tfleak.threats.defenses` at several strengths, batch 1
  on the DLG paper's LeNet: DLG as the paper ran it (L-BFGS, labels
  optimised, a naive attacker), and the stronger attack naive and adaptive
  (the defence's deterministic part applied to its dummy update). The price
  of a defence is the cosine between the defended and the clean update of the
  same batch (mean over the batches), not the victim's accuracy after training
  with the defence on every step, which costs hours on this 2-core CPU; the
  epsilon of DP-SGD's release at delta 1e-5 sits beside it. The anchors of
  the DLG paper (Zhu et al. 2019, sec. 5) are rows of the grid: Gaussian
  noise of std 0.01 (variance 1e-4) does not stop DLG, std 0.1 (1e-2) does;
  pruning above about 20 % stops it; float16 does not defend. GradAttack and
  iLRG report labels still restored after 80 % pruning (`prune:0.8`).

The default attack suits the study: Inverting Gradients (Adam, cosine
distance, TV, box; labels restored by 'counts', or optimised with the data
where 'counts' refuses the update), which degrades more
gracefully than DLG's L2 distance; `--attack` overrides it (dlg, idlg,
inverting_gradients). L-BFGS attacks (dlg, idlg) run `restarts=0`.

Budget (`--quick`, each study under 20 minutes on this project's shared
2-core CPU): a LeNet L-BFGS attack of one image costs ~0.3 s per 50
iterations, Inverting Gradients on a LeNet batch of 8 a few ms per step,
ResNet-20 ~13 ms per step at batch 1, and every new setting traces a graph
(5-20 s). The quick grid therefore runs 4 batches per setting, 300
iterations (DLG 300), fewer strengths and sizes; the full grid 8 batches and
1,500 iterations (DLG 600). Measured quick runs took 1-10 minutes each (the
ConvNet's 2.9M parameters are most of `architecture`'s 9.5). DLG at 300
iterations is far from converged (21 dB undefended against 49 dB at 1,500);
`--dlg_iterations` raises it.

    python benchmarks/leakage_study.py --study=defense --quick

Writes `--output_dir/leakage_<study>[_<model>][_lr<rate>][_quick][<tag>].json`
(`_<model>` for a `--model` other than lenet, `_lr<rate>` for a local
learning rate other than 0.1, `--tag` appended) after every setting (a rerun
of the same command resumes after the last finished setting; one with other
settings is refused), then a PNG of the same name (PSNR and label accuracy
against the swept value; for defences PSNR against the price) and prints a
markdown table.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import app, flags  # noqa: E402

STUDIES = ("batch_size", "local_steps", "trained_epochs", "architecture", "defense")
ATTACKS = ("dlg", "idlg", "inverting_gradients")

# study -> (quick values, full values)
GRIDS = {
    "batch_size": ([1, 2, 4, 8, 16, 32, 64], [1, 2, 4, 8, 16, 32, 64]),
    "local_steps": ([1, 2, 5, 10], list(range(1, 11))),
    "trained_epochs": ([0, 1, 3], [0, 1, 2, 5, 10]),
    "architecture": (
        ["mlp", "lenet", "convnet", "resnet20"],
        ["mlp", "lenet", "convnet", "resnet20", "resnet32"],
    ),
    "defense": (
        ["none", "noise:0.01", "noise:0.1", "prune:0.2", "prune:0.8", "quantize:float16",
         "quantize:8", "dpsgd:1/0.1"],
        ["none", "noise:0.001", "noise:0.01", "noise:0.0316", "noise:0.1", "prune:0.1",
         "prune:0.2", "prune:0.3", "prune:0.5", "prune:0.8", "prune:0.9", "prune:0.99",
         "quantize:float16", "quantize:8", "quantize:4", "quantize:sign", "dpsgd:1/0.01",
         "dpsgd:1/0.1", "dpsgd:1/1"],
    ),
}  # fmt: skip

# What the papers say about the anchors of the defence study.
ANCHORS = {
    "noise:0.01": "DLG paper: variance 1e-4 does not stop DLG",
    "noise:0.1": "DLG paper: variance 1e-2 stops DLG",
    "prune:0.2": "DLG paper: pruning above ~20 % stops DLG",
    "prune:0.8": "GradAttack / iLRG: labels still recovered at 80 % pruning",
    "quantize:float16": "DLG paper: half precision does not defend",
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("study", None, list(STUDIES), "What to sweep.")
flags.DEFINE_bool("quick", False, "The reduced grid (each study < 20 min on a 2-core CPU).")
flags.DEFINE_integer("batches", None, "Private batches attacked per setting (4 quick, 8 full).")
flags.DEFINE_integer("iterations", None, "Attack iterations (300 quick, 1500 full).")
flags.DEFINE_integer("dlg_iterations", None, "DLG's L-BFGS iterations (300 quick, 600 full).")
flags.DEFINE_string("attack", None, f"Attack ({', '.join(ATTACKS)}); default per study.")
flags.DEFINE_list("values", [], "Override the grid's swept values (strings, as the grid).")
flags.DEFINE_string("model", "lenet", "Victim of every study but architecture (VICTIMS name).")
flags.DEFINE_integer("batch_size", None, "Images per batch (default per study; not batch_size).")
flags.DEFINE_integer("train_limit", 5000, "CIFAR-10 training images of trained victims.")
flags.DEFINE_float("local_learning_rate", 0.1, "FedAvg's local SGD step size.")
flags.DEFINE_float(
    "train_learning_rate",
    0.01,
    "Peak SGD learning rate of trained victims (the DLG LeNet, sigmoids and large "
    "uniform weights, stays at chance at train_victim's default 0.1; ResNet-20 wants 0.1).",
)
flags.DEFINE_integer("seed", 0, "Seed of the victims, batches, noise and attacks.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding cifar10/{train,test}.")
flags.DEFINE_string("output_dir", "benchmarks/results", "Where the JSON and PNG go.")
flags.DEFINE_enum(
    "strategy",
    "default",
    ["default", "mirrored", "tpu", "multi_worker"],
    "tf.distribute strategy: an L-BFGS attack's batches are split across its replicas "
    "(tfleak.distribute.get_strategy; first-order attacks run on one replica).",
)
flags.DEFINE_string("tag", "", "Appended to the file names (e.g. _dlg1500), letters, digits, _.-")
flags.mark_flag_as_required("study")


def _grid() -> list:
    """The swept values of the study, parsed (ints or strings) and checked."""
    from tfleak.models import VICTIMS
    from tfleak.threats.defenses import parse_defense

    values = list(FLAGS.values) or GRIDS[FLAGS.study][0 if FLAGS.quick else 1]
    if FLAGS.study == "defense":
        for value in values:
            if value != "none":
                try:
                    parse_defense(value)
                except ValueError as error:
                    raise app.UsageError(f"--values: {error}") from None
        return [str(v) for v in values]
    if FLAGS.study == "architecture":
        unknown = [v for v in values if v not in VICTIMS]
        if unknown:
            raise app.UsageError(
                f"--values: unknown architecture {unknown[0]!r}; choose from "
                f"{', '.join(sorted(VICTIMS))}."
            )
        return [str(v) for v in values]
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--values of --study={FLAGS.study} must be integers.") from None
    least = 0 if FLAGS.study == "trained_epochs" else 1
    if min(numbers) < least:
        raise app.UsageError(f"--values of --study={FLAGS.study} must be >= {least}.")
    return numbers


def _settings() -> dict:
    """The settings a result file was written under, checked before any work."""
    attack = FLAGS.attack or "inverting_gradients"
    if attack not in ATTACKS:
        raise app.UsageError(f"--attack must be one of {', '.join(ATTACKS)}; got {attack!r}.")
    batches = FLAGS.batches or (4 if FLAGS.quick else 8)
    iterations = FLAGS.iterations or (300 if FLAGS.quick else 1500)
    dlg_iterations = FLAGS.dlg_iterations or (300 if FLAGS.quick else 600)
    for name, value in (
        ("batches", batches),
        ("iterations", iterations),
        ("dlg_iterations", dlg_iterations),
        ("train_limit", FLAGS.train_limit),
    ):
        if value < 1:
            raise app.UsageError(f"--{name} must be at least 1; got {value}.")
    for name in ("local_learning_rate", "train_learning_rate"):
        if not (math.isfinite(getattr(FLAGS, name)) and getattr(FLAGS, name) > 0):
            raise app.UsageError(f"--{name} must be > 0; got {getattr(FLAGS, name)}.")
    if not (Path(FLAGS.data_dir) / "cifar10" / "test").is_dir():
        raise app.UsageError(f"no cifar10/test under --data_dir={FLAGS.data_dir}.")
    if FLAGS.tag and not re.fullmatch(r"[A-Za-z0-9_.-]+", FLAGS.tag):
        raise app.UsageError(f"--tag must be letters, digits, '_', '.' or '-'; got {FLAGS.tag!r}.")
    from tfleak.models import VICTIMS

    if FLAGS.model not in VICTIMS:
        raise app.UsageError(f"--model must be one of {', '.join(sorted(VICTIMS))}.")
    if FLAGS.batch_size is not None and (FLAGS.batch_size < 1 or FLAGS.study == "batch_size"):
        raise app.UsageError("--batch_size must be >= 1, and --study=batch_size sweeps it.")
    settings = {
        "study": FLAGS.study,
        "quick": FLAGS.quick,
        "values": _grid(),
        "attack": attack,
        "batches": batches,
        "iterations": iterations,
        "dlg_iterations": dlg_iterations,
        "train_limit": FLAGS.train_limit,
        "local_learning_rate": FLAGS.local_learning_rate,
        "seed": FLAGS.seed,
    }
    if FLAGS.study == "trained_epochs":
        settings["train_learning_rate"] = FLAGS.train_learning_rate
    # Only when set, so files written before these flags existed still resume.
    if FLAGS.model != "lenet":
        settings["model"] = FLAGS.model
    if FLAGS.batch_size is not None:
        settings["batch_size"] = FLAGS.batch_size
    return settings


def _setup(study: str, value) -> dict:
    """Victim name, trained epochs, batch size and threat of one setting."""
    from tfleak.threats.federated import FedAvg, FedSGD

    setup = {"model": FLAGS.model, "epochs": 0, "batch_size": 1, "threat": FedSGD(), "chain": ()}
    if study == "batch_size":
        setup["batch_size"] = value
    elif study == "local_steps":
        setup["batch_size"] = 4
        setup["threat"] = FedAvg(local_steps=value, local_learning_rate=FLAGS.local_learning_rate)
    elif study == "trained_epochs":
        setup["batch_size"], setup["epochs"] = 4, value
    elif study == "architecture":
        setup["model"] = value
    if FLAGS.batch_size is not None:
        setup["batch_size"] = FLAGS.batch_size
    return setup


def _victim(name: str, epochs: int, cache: dict):
    """`(victim, test accuracy or None)`, built once per (name, epochs)."""
    import tfleak
    from tfleak.models import VICTIMS
    from tfleak.training.victims import train_victim

    if (name, epochs) not in cache:
        model = VICTIMS[name]((32, 32, 3), 10, seed=FLAGS.seed)
        accuracy = None
        if epochs:
            model, accuracy = train_victim(
                model,
                f"{name}-n{FLAGS.train_limit}",
                epochs=epochs,
                data_dir=FLAGS.data_dir,
                seed=FLAGS.seed,
                limit=FLAGS.train_limit,
                learning_rate=FLAGS.train_learning_rate,
                verbose=2,
            )
        cache[(name, epochs)] = (tfleak.as_victim(model), accuracy)
    return cache[(name, epochs)]


def _make_attack(name: str, iterations: int, update, seed: int, label_strategy: str):
    import tfleak

    if name == "dlg":
        # The paper's attacker: L-BFGS, labels optimised with the data.
        return tfleak.DLG(iterations=iterations, restarts=0, seed=seed, update=update)
    attack = tfleak.IDLG if name == "idlg" else tfleak.InvertingGradients
    return attack(
        iterations=iterations, restarts=0, seed=seed, label_strategy=label_strategy, update=update
    )


def _runs(settings: dict, value) -> list:
    """`(attack, adaptive)` pairs run per setting.

    In the defence study: DLG as the paper ran it (naive), then the stronger
    attack naive and, where the defence has a deterministic part for an
    adaptive attacker to apply (pruning, quantisation, DP-SGD's clip), adaptive.
    """
    if settings["study"] != "defense":
        return [(settings["attack"], None)]  # no defence: neither naive nor adaptive
    runs = [("dlg", False)]
    if settings["attack"] != "dlg":
        runs.append((settings["attack"], False))
        if value != "none" and not value.startswith("noise:"):
            runs.append((settings["attack"], True))
    return runs


def _cosine(a, b) -> float:
    import numpy as np

    from tfleak.models import flatten_gradient

    a, b = np.asarray(flatten_gradient(a))[0], np.asarray(flatten_gradient(b))[0]
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else 0.0


def _measure(settings, value, victim, accuracy, truths, cache_observed, attack_name, adaptive):
    """One row: the setting's batches shared and attacked at once."""
    import numpy as np
    import tensorflow as tf

    from tfleak.threats.defenses import DefendedUpdate, parse_defenses

    setup = _setup(settings["study"], value)
    chain = parse_defenses([value]) if settings["study"] == "defense" else ()
    key = (str(value), tuple(d.spec for d in chain))
    if key not in cache_observed:
        release = DefendedUpdate(setup["threat"], chain)
        observed, cosines = [], []
        for b, (x, y) in enumerate(truths):
            tf.random.set_seed(settings["seed"] + b)  # DP-SGD's noise
            observed.append(release.share(victim, x, y, seed=settings["seed"] + b))
            clean = setup["threat"].share(victim, x, y)
            cosines.append(_cosine(observed[-1], clean))
        epsilon = release.epsilon(batch_size=setup["batch_size"])
        cache_observed[key] = (observed, float(np.mean(cosines)), epsilon)
    observed, cosine, epsilon = cache_observed[key]
    iterations = settings["dlg_iterations"] if attack_name == "dlg" else settings["iterations"]
    update = DefendedUpdate(setup["threat"], chain, adaptive=bool(adaptive))
    began = time.perf_counter()
    # Labels restored by 'counts'; where its rule refuses the update (FedAvg's
    # moving weights, heavy noise), optimised with the data, as tfleak.audit does.
    for label_strategy in ("counts", "optimize"):
        attack = _make_attack(attack_name, iterations, update, settings["seed"], label_strategy)
        try:
            strategy = _strategy() if attack.optimizer == "lbfgs" else None
            results = attack.attack_many(
                victim, observed, ground_truths=truths, strategy=strategy, verbose=0
            )
            break
        except ValueError as error:
            if label_strategy == "optimize" or attack_name == "dlg":
                raise
            print(f"  'counts' refused ({str(error)[:80]}...); labels optimised instead.")
    seconds = time.perf_counter() - began
    per_image, ssims, labels = [], [], []
    for (_, y), result in zip(truths, results):
        if result.reconstruction is None:  # every start diverged
            per_image += [0.0] * len(y)
            ssims += [0.0] * len(y)
            labels.append(0.0)
            continue
        per_image += list(result.metrics["psnr_per_image"])
        ssims += list(result.metrics["ssim_per_image"])
        labels.append(result.metrics["label_accuracy"])
    per_image = np.asarray(per_image)
    return {
        "value": value,
        "attack": attack_name,
        "adaptive": adaptive,
        "model": setup["model"],
        "batch_size": setup["batch_size"],
        "threat": repr(setup["threat"]),
        "label_strategy": attack.label_strategy,
        "victim_test_accuracy": accuracy,
        "psnr": float(per_image.mean()),
        "psnr_std": float(per_image.std()),
        "ssim": float(np.mean(ssims)),
        "label_accuracy": float(np.mean(labels)),
        "recovered_20db": float(np.mean(per_image > 20.0)),
        "cosine_to_clean": cosine,
        "epsilon": epsilon,
        "seconds_per_attack": seconds / len(truths),
        "psnr_per_image": per_image.tolist(),
    }


def _load(path: Path, settings: dict) -> list:
    if not path.exists():
        return []
    saved = json.loads(path.read_text())
    if saved.get("settings") != settings:
        raise app.UsageError(
            f"{path} was written with other settings ({saved.get('settings')}); pass another "
            "--output_dir or delete it."
        )
    return saved["rows"]


def _label(row: dict) -> str:
    if row["adaptive"] is None:
        return row["attack"]
    if row["attack"] == "dlg" and not row["adaptive"]:
        return "dlg (paper, naive)"
    return f"{row['attack']} ({'adaptive' if row['adaptive'] else 'naive'})"


def _table(settings: dict, rows: list) -> str:
    study = settings["study"]
    extra = {
        "defense": " cosine to clean | epsilon |",
        "trained_epochs": " victim test acc. |",
    }.get(study, "")
    lines = [
        f"| {study} | attack | PSNR (dB) | SSIM | label acc. | > 20 dB |{extra} s / attack |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * extra.count("|") + "---:|",
    ]
    for row in rows:
        cells = ""
        if study == "defense":
            eps = "" if row["epsilon"] is None else f"{row['epsilon']:.3g}"
            cells = f" {row['cosine_to_clean']:.3f} | {eps} |"
        elif study == "trained_epochs":
            acc = row["victim_test_accuracy"]
            cells = f" {'-' if acc is None else f'{acc:.3f}'} |"
        lines.append(
            f"| {row['value']} | {_label(row)} | {row['psnr']:.2f} +- {row['psnr_std']:.2f} | "
            f"{row['ssim']:.3f} | {row['label_accuracy']:.2f} | {row['recovered_20db']:.2f} |"
            f"{cells} {row['seconds_per_attack']:.1f} |"
        )
    return "\n".join(lines)


def _plot(settings: dict, rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study = settings["study"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    series = {}
    for row in rows:
        series.setdefault(_label(row), []).append(row)
    values = [str(v) for v in settings["values"]]
    for name, points in series.items():
        if study == "defense":
            left.scatter(
                [p["cosine_to_clean"] for p in points], [p["psnr"] for p in points], label=name
            )
            for p in points:
                left.annotate(str(p["value"]), (p["cosine_to_clean"], p["psnr"]), fontsize=6)
        else:
            x = [values.index(str(p["value"])) for p in points]
            left.errorbar(
                x, [p["psnr"] for p in points], [p["psnr_std"] for p in points], marker="o",
                capsize=3, label=name,
            )  # fmt: skip
        x = [values.index(str(p["value"])) for p in points]
        right.plot(x, [p["label_accuracy"] for p in points], "o-", label=name)
    if study == "defense":
        left.set_xlabel("price: cosine between the defended and the clean update")
    else:
        left.set_xticks(range(len(values)))
        left.set_xticklabels(values)
        left.set_xlabel(study)
    right.set_xticks(range(len(values)))
    right.set_xticklabels(values, rotation=45 if study == "defense" else 0, fontsize=7)
    right.set_xlabel(study)
    left.axhline(20.0, color="grey", linestyle=":", linewidth=1)
    left.set_ylabel("PSNR (dB, matched)")
    right.set_ylabel("label accuracy")
    right.set_ylim(-0.05, 1.05)
    left.legend(fontsize=7)
    figure.suptitle(
        f"Leakage vs {study}: CIFAR-10 (JPEG), {settings['batches']} batches per setting, "
        f"{settings['iterations']} iterations"
        + (f" (DLG {settings['dlg_iterations']})" if study == "defense" else "")
        + (" (quick)" if settings["quick"] else ""),
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


@functools.cache
def _strategy():
    """The `--strategy` (built once): results do not depend on it, only where they run."""
    from tfleak.distribute import get_strategy

    return get_strategy(FLAGS.strategy)


def main(argv):
    del argv
    settings = _settings()

    import numpy as np

    from tfleak.data import index_image_folder, load_examples, sample_batch
    from tfleak.io import atomic_write_json

    output_dir = Path(FLAGS.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"leakage_{settings['study']}" + (f"_{FLAGS.model}" if FLAGS.model != "lenet" else "")
    if settings["study"] == "local_steps" and settings["local_learning_rate"] != 0.1:
        stem += f"_lr{settings['local_learning_rate']:g}"
    stem += ("_quick" if settings["quick"] else "") + FLAGS.tag
    path = output_dir / f"{stem}.json"
    rows = _load(path, settings)
    done = {(str(r["value"]), r["attack"], r["adaptive"]) for r in rows}
    all_labels = np.asarray(index_image_folder(Path(FLAGS.data_dir) / "cifar10" / "test").labels)
    started = time.perf_counter()
    victims, truths_by_size = {}, {}
    for value in settings["values"]:
        setup = _setup(settings["study"], value)
        size = setup["batch_size"]
        if size not in truths_by_size:
            truths_by_size[size] = []
            for b in range(settings["batches"]):
                rows_drawn = sample_batch(all_labels, size, "random", seed=settings["seed"] + b)
                x, y, _ = load_examples("cifar10", rows_drawn, "test", FLAGS.data_dir)
                truths_by_size[size].append((x, y))
        truths = truths_by_size[size]
        cache_observed = {}
        for attack_name, adaptive in _runs(settings, value):
            if (str(value), attack_name, adaptive) in done:
                continue
            victim, accuracy = _victim(setup["model"], setup["epochs"], victims)
            try:
                row = _measure(
                    settings, value, victim, accuracy, truths, cache_observed, attack_name,
                    adaptive,
                )  # fmt: skip
            except ValueError as error:
                print(f"{settings['study']}={value} {attack_name}: skipped ({error})", flush=True)
                continue
            rows.append(row)
            print(
                f"{settings['study']}={value} {_label(row)}: PSNR {row['psnr']:.2f} dB, labels "
                f"{row['label_accuracy']:.2f}, > 20 dB {row['recovered_20db']:.2f}, cosine "
                f"{row['cosine_to_clean']:.3f}, {row['seconds_per_attack']:.1f} s/attack "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            atomic_write_json(path, {"settings": settings, "rows": rows})
    order = {str(v): i for i, v in enumerate(settings["values"])}
    rows.sort(key=lambda r: (order.get(str(r["value"]), 1e9), _label(r)))
    atomic_write_json(path, {"settings": settings, "rows": rows})
    _plot(settings, rows, output_dir / f"{stem}.png")
    print(_table(settings, rows))
    if settings["study"] == "defense":
        print("\nAnchors (PSNR of the 'none' row for reference):")
        for spec, claim in ANCHORS.items():
            for row in rows:
                if row["value"] == spec:
                    print(
                        f"- {spec} {_label(row)}: {row['psnr']:.2f} dB, > 20 dB "
                        f"{row['recovered_20db']:.2f}, labels {row['label_accuracy']:.2f} ({claim})"
                    )
    print(f"Wrote {path} and {stem}.png; {time.perf_counter() - started:.0f} s this run.")


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
