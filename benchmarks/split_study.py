r"""Study: where can a split model be cut, and what does each defence buy there?

Trains the split Omniglot target once (the network is the same whatever the cut;
only where the code leaves the device moves), then for every cut 1..4 runs two
attackers against the codes of the unseen test alphabet (offline scheme:
Tagalog, 340 images):

- decoder (black box): transposed convolutions that follow the code's shape
  (`tfleak.split.decoder_layers`), learned from the device's codes of
  surrogate images (katakana and Sanskrit), as He, Zhang, Lee (ACSAC 2019)
  Section 4.2;
- white box (device weights known): code matching with a TV prior, He et al.
  Section 4.1 (`tfleak.split.WhiteBoxInversion`), on the first
  --whitebox_images test images.

Each is scored by MSE / PSNR / SSIM against the mean surrogate image's MSE on
the same images, and by re-identification among all test images (top-1 and
top-5 against chance 1/N and 5/N). The deepest cut at which each attack
still beats the mean image is printed. Then, at --defense_cut (default: the
deepest cut at which an attack re-identifies at least half the images), both
attacks against code noise (Gaussian, clipped Laplace with its local epsilon)
with the target's validation accuracy when the server receives noisy codes.

Writes to --output_dir after every row (rerun the same command to resume; a
different configuration there is refused): results.json, results.md,
reconstructions.png (the same test images reconstructed at each cut),
tradeoff.png (code defences: accuracy against re-identification).

  python benchmarks/split_study.py --quick --data_dir=../shared/data \
      --output_dir=results/split_study_quick
"""

from __future__ import annotations

import io
import json
import os
import platform
import time
from pathlib import Path

import tfleak  # noqa: F401  first: TensorFlow's start-up lines stay off the terminal

# isort: split
import keras
import numpy as np
from absl import app, flags

from tfleak import split
from tfleak.cli import parse_float_list, run
from tfleak.data.omniglot import omniglot_scheme
from tfleak.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_writable_dir,
    read_json,
)
from tfleak.metrics import image_metrics
from tfleak.plotting import plot_image_rows
from tfleak.split.defenses import CodeNoise
from tfleak.split.reidentification import reidentify
from tfleak.split.whitebox import WhiteBoxInversion

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data", "Folder with the two small Omniglot zips.")
flags.DEFINE_string("output_dir", "results/split_study", "Where results go.")
flags.DEFINE_bool("quick", False, "The reduced grid (see QUICK), under an hour on 2 CPU cores.")
flags.DEFINE_list("cuts", ["1", "2", "3", "4"], "Cuts (conv blocks on the device) to attack.")
flags.DEFINE_integer("target_epochs", 10, "Epochs of the target (Adam, batch 32).")
flags.DEFINE_integer("attacker_epochs", 30, "Epochs of each decoder (Adam, MSE).")
flags.DEFINE_float("attacker_learning_rate", 0.005, "Decoder Adam's learning rate.")
flags.DEFINE_integer("whitebox_images", 340, "Test images the white box inverts (0 = none).")
flags.DEFINE_integer("whitebox_steps", 300, "Adam steps of the white box.")
flags.DEFINE_float("whitebox_learning_rate", 0.05, "White-box Adam step size (pixels).")
flags.DEFINE_float("whitebox_tv", 0.01, "White-box total-variation weight (lambda).")
flags.DEFINE_integer("defense_cut", 0, "Cut of the code-defence rows; 0 = deepest that leaks.")
flags.DEFINE_list("gaussian_stddevs", ["0.1", "0.3", "1"], "Gaussian code-noise std devs.")
flags.DEFINE_list("laplace_epsilons", ["1000", "100", "10"], "Laplace local epsilons per code.")
flags.DEFINE_integer("figure_images", 8, "Test images shown in reconstructions.png.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling, dropout and noise.")

# --quick: what changes from the flags' defaults.
QUICK = {
    "target_epochs": 6,
    "attacker_epochs": 5,
    "whitebox_images": 24,
    "whitebox_steps": 200,
    "gaussian_stddevs": ["1"],
    "laplace_epsilons": ["100"],
}
BATCH_SIZE = 32


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def _settings() -> dict:
    """The flags that make the study what it is (quick applied), validated."""
    settings = {
        name: getattr(FLAGS, name)
        for name in (
            "cuts", "target_epochs", "attacker_epochs", "attacker_learning_rate",
            "whitebox_images", "whitebox_steps", "whitebox_learning_rate", "whitebox_tv",
            "defense_cut", "gaussian_stddevs", "laplace_epsilons", "figure_images", "seed",
        )
    }  # fmt: skip
    if FLAGS.quick:
        settings.update(QUICK)
    try:
        settings["cuts"] = sorted({int(cut) for cut in settings["cuts"]})
    except ValueError as error:
        raise app.UsageError(f"--cuts must be integers; {error}.") from None
    if not settings["cuts"] or not set(settings["cuts"]) <= set(split.CODE_SHAPES):
        raise app.UsageError(f"--cuts must name some of {', '.join(map(str, split.CODE_SHAPES))}.")
    if settings["defense_cut"] not in (0, *split.CODE_SHAPES):
        raise app.UsageError("--defense_cut must be 0 (automatic) or a cut 1..4.")
    for name in ("target_epochs", "attacker_epochs", "whitebox_steps"):
        if settings[name] < 1:
            raise app.UsageError(f"--{name} must be >= 1.")
    if not 0 <= settings["whitebox_images"] or settings["figure_images"] < 1:
        raise app.UsageError("--whitebox_images must be >= 0 and --figure_images >= 1.")
    settings["gaussian_stddevs"] = parse_float_list(
        "gaussian_stddevs", settings["gaussian_stddevs"], minimum=0.0
    )
    settings["laplace_epsilons"] = parse_float_list(
        "laplace_epsilons", settings["laplace_epsilons"], minimum=0.0
    )
    if 0.0 in settings["laplace_epsilons"]:
        raise app.UsageError("--laplace_epsilons must all be > 0.")
    return settings


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*[(x.numpy(), int(y)) for x, y in dataset])
    return np.stack(images), np.array(labels)


def _save_npz(path: Path, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _accuracy(target, cut, defense, images, labels) -> float:
    """Validation accuracy when the server receives (defended) codes of the cut."""
    device, server = split.device_stage(target, cut), split.server_stage(target, cut)
    correct = 0
    for start in range(0, len(images), 128):
        codes = device(images[start : start + 128], training=False)
        predicted = np.argmax(server(defense(codes), training=False).numpy(), axis=1)
        correct += int(np.sum(predicted == labels[start : start + 128]))
    return correct / len(images)


def _attack(name, cut, attack, defense, target, data, settings, output_dir) -> dict:
    """One row: one attacker against the codes of one cut (through one defence)."""
    keras.utils.set_random_seed(settings["seed"])
    device = split.device_stage(target, cut)
    test, mean = data["test_images"], data["mean_image"]
    start = time.perf_counter()
    if attack == "decoder":
        attacker = split.compile_attacker(
            split.AttackModel(device, defense=defense), settings["attacker_learning_rate"]
        )
        run_ = split.train_resumable(
            attacker,
            data["scheme"]["attacker_train"],
            epochs=settings["attacker_epochs"],
            batch_size=BATCH_SIZE,
            seed=settings["seed"],
            log=log,
            name=f"decoder {name}",
        )
        originals = test
        reconstructions = np.concatenate(
            [split.reconstruct(attacker, device, test[i : i + 64]) for i in range(0, len(test), 64)]
        )
        extra = {"decoder_train_loss_last_epoch": run_.final.get("loss")}
    else:
        originals = test[: settings["whitebox_images"]]
        codes = defense(device(originals, training=False)).numpy()
        result = WhiteBoxInversion(
            device,
            steps=settings["whitebox_steps"],
            learning_rate=settings["whitebox_learning_rate"],
            tv_weight=settings["whitebox_tv"],
            init=mean,
        )(codes)
        reconstructions = result.reconstructions
        extra = {"whitebox": repr(result)}
    metrics = image_metrics(originals, reconstructions)
    reid = reidentify(reconstructions, test)
    row = {
        "name": name,
        "cut": cut,
        "code_shape": list(split.CODE_SHAPES[cut]),
        "attack": attack,
        "defense": defense.mechanism,
        "strength": defense.strength if defense.mechanism != "none" else None,
        "epsilon_local": defense.epsilon_local,
        "images": len(originals),
        "gallery": len(test),
        "mse": metrics["mse"],
        "mean_image_mse": float(np.mean((originals - mean[None]) ** 2)),
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        **reid.as_dict(),
        "seconds": time.perf_counter() - start,
        **extra,
    }
    row["beats_mean_image"] = row["mse"] < row["mean_image_mse"]
    shown = settings["figure_images"]
    _save_npz(output_dir / "reconstructions" / f"{name}.npz",
              {"images": reconstructions[:shown].astype(np.float16)})  # fmt: skip
    return row


def _deepest(rows, attack, key) -> int | None:
    cuts = [r["cut"] for r in rows if r["attack"] == attack and r["defense"] == "none" and key(r)]
    return max(cuts) if cuts else None


def _above_chance(row) -> bool:
    """Re-identifies at least 10x chance (top-1); with 24 white-box images one hit is 14x."""
    return row["reidentification_top1"] >= 10 * row["chance_top1"]


def _works(row) -> bool:
    """Clearly works: re-identifies at least half of its images (top-1)."""
    return row["reidentification_top1"] >= 0.5


def markdown(results: dict) -> str:
    rows = results["rows"]
    lines = [
        f"Target: {results['target']['epochs']} epochs, validation accuracy "
        f"{results['target']['val_accuracy']:.3f}. Test: {results['gallery']} unseen Tagalog "
        f"images; chance re-identification top-1 {1 / results['gallery']:.4f}, top-5 "
        f"{5 / results['gallery']:.4f}.",
        "",
        "| cut | code | attack | defence | val acc | images | MSE | mean-image MSE | PSNR | SSIM "
        "| re-id top-1 | re-id top-5 | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        defense = "none" if r["defense"] == "none" else f"{r['defense']} {r['strength']:g}"
        accuracy = r.get("val_accuracy", results["target"]["val_accuracy"])
        lines.append(
            f"| {r['cut']} | {'x'.join(map(str, r['code_shape']))} | {r['attack']} | {defense} "
            f"| {accuracy:.3f} | {r['images']} | {r['mse']:.4f} | {r['mean_image_mse']:.4f} "
            f"| {r['psnr']:.1f} | {r['ssim']:.3f} | {r['reidentification_top1']:.3f} "
            f"| {r['reidentification_top5']:.3f} | {r['seconds']:.0f} |"
        )
    lines.append("")
    for attack in ("decoder", "whitebox"):
        beats = _deepest(rows, attack, lambda r: r["beats_mean_image"])
        above = _deepest(rows, attack, _above_chance)
        works = _deepest(rows, attack, _works)
        lines.append(
            f"- {attack}: deepest cut beating the mean image (MSE): {beats or 'none'}; "
            f"re-identifying >= 10x chance: {above or 'none'}; re-identifying at least "
            f"half (top-1 >= 0.5): {works or 'none'}."
        )
    return "\n".join(lines) + "\n"


def _figures(results, data, output_dir) -> None:
    shown = data["test_images"][: results["config"]["figure_images"]]
    rows, titles = [list(shown)], ["original"]
    for r in results["rows"]:
        path = output_dir / "reconstructions" / f"{r['name']}.npz"
        if path.is_file():
            rows.append(list(np.load(path)["images"].astype(np.float32)))
            titles.append(r["name"].replace("_", " "))
    plot_image_rows(
        rows,
        output_dir / "reconstructions.png",
        row_titles=titles,
        title="Unseen Tagalog test images reconstructed from the code at each cut",
    )
    defended = [r for r in results["rows"] if r["cut"] == results.get("defense_cut")]
    if len({r["defense"] for r in defended}) > 1:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 4))
        for attack, marker in (("decoder", "o"), ("whitebox", "s")):
            for r in (r for r in defended if r["attack"] == attack):
                label = "none" if r["defense"] == "none" else f"{r['defense']} {r['strength']:g}"
                accuracy = r.get("val_accuracy", results["target"]["val_accuracy"])
                size = 60 if attack == "decoder" else 30
                axis.scatter(accuracy, r["reidentification_top1"], marker=marker, alpha=0.7,
                             s=size, label=f"{attack}: {label}")  # fmt: skip
        axis.axhline(1 / results["gallery"], color="grey", linestyle=":", label="chance")
        axis.set_xlabel("validation accuracy (server receives the defended code)")
        axis.set_ylabel("re-identification top-1")
        axis.set_title(f"Code defences at cut {results['defense_cut']}")
        axis.legend(fontsize=7)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        atomic_write_bytes(output_dir / "tradeoff.png", buffer.getvalue())


def main(argv):
    del argv
    settings = _settings()
    try:
        output_dir = check_writable_dir(FLAGS.output_dir)
    except (ValueError, PermissionError) as error:
        raise app.UsageError(str(error)) from None
    path = output_dir / "results.json"
    results = read_json(path) or {}
    if results and results.get("config") != settings:
        old = results.get("config") or {}
        changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
        raise app.UsageError(
            f"{output_dir} holds a study of another configuration ({'; '.join(changed)}); "
            "pass another --output_dir, or the same flags to resume."
        )
    results.setdefault("config", settings)
    results.setdefault("rows", [])
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}

    scheme = omniglot_scheme("offline", FLAGS.data_dir)
    test_images, _ = _arrays(scheme["attacker_test"])
    val_images, val_labels = _arrays(scheme["target_val"])
    data = {
        "scheme": scheme,
        "test_images": test_images,
        "mean_image": split.mean_image(scheme["attacker_train"]),
    }
    results["gallery"] = len(test_images)

    keras.utils.set_random_seed(settings["seed"])
    target = split.compile_target(split.TargetModel())
    start = time.perf_counter()
    target_run = split.train_resumable(
        target,
        scheme["target_train"],
        epochs=settings["target_epochs"],
        batch_size=BATCH_SIZE,
        seed=settings["seed"],
        checkpoint_dir=output_dir / "checkpoints" / "target",
        config={"model": "TargetModel(norm='batch', dropout_rate=0.2)", "learning_rate": 1e-3},
        validation_data=scheme["target_val"],
        log=log,
        name="target",
    )
    results["target"] = {
        "epochs": settings["target_epochs"],
        "val_accuracy": _accuracy(target, 4, CodeNoise("none", 0.0), val_images, val_labels),
        "train_accuracy": target_run.final.get("accuracy"),
        "seconds_this_run": time.perf_counter() - start,
    }
    log(f"target: {json.dumps(results['target'])}")

    def save():
        atomic_write_json(path, results)
        atomic_write_text(output_dir / "results.md", markdown(results))

    def row(name, cut, attack, defense):
        done = {r["name"]: r for r in results["rows"]}
        if name in done:
            log(f"{name}: already done")
            return done[name]
        log(f"{name}: running")
        new = _attack(name, cut, attack, defense, target, data, settings, output_dir)
        if defense.mechanism != "none":
            new["val_accuracy"] = _accuracy(target, cut, defense, val_images, val_labels)
        results["rows"].append(new)
        save()
        log(f"{name}: " + json.dumps({k: v for k, v in new.items() if k != "whitebox"}))
        return new

    no_defense = CodeNoise("none", 0.0)
    attacks = ["decoder"] + (["whitebox"] if settings["whitebox_images"] else [])
    for cut in settings["cuts"]:
        for attack in attacks:
            row(f"cut{cut}_{attack}", cut, attack, no_defense)
    for attack in attacks:
        log(f"{attack}: deepest cut beating the mean image: "
            f"{_deepest(results['rows'], attack, lambda r: r['beats_mean_image'])}")  # fmt: skip

    defense_cut = settings["defense_cut"] or max(
        [_deepest(results["rows"], attack, _works) or 0 for attack in attacks]
    )
    if defense_cut:
        results["defense_cut"] = defense_cut
        device = split.device_stage(target, defense_cut)
        surrogate, _ = _arrays(scheme["attacker_train"])
        codes = np.concatenate([device(surrogate[i : i + 128]).numpy()
                                for i in range(0, len(surrogate), 128)])  # fmt: skip
        clip_norm = float(np.median(np.abs(codes).reshape(len(codes), -1).sum(1)))
        results["laplace_clip_norm"] = clip_norm
        defenses = [CodeNoise("gaussian", s) for s in settings["gaussian_stddevs"]] + [
            CodeNoise("laplace", e, clip_norm=clip_norm) for e in settings["laplace_epsilons"]
        ]
        for defense in defenses:
            for attack in attacks:
                name = f"cut{defense_cut}_{attack}_{defense.mechanism}{defense.strength:g}"
                row(name, defense_cut, attack, defense)
    save()
    _figures(results, data, output_dir)
    print(markdown(results), flush=True)


if __name__ == "__main__":
    run(main)
