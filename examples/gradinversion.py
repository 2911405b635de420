"""Gradient inversion of a private batch: DLG, iDLG, Inverting Gradients, GradInversion.

A client computes the gradient of its training loss on a private batch (a
FedSGD update) with a victim Keras model, fresh or trained; the attacker
reconstructs the batch from that gradient alone; the script matches the
reconstruction to the truth and scores it.

    python examples/gradinversion.py --attack=inverting_gradients --model=resnet20 \
        --dataset=cifar10 --data_dir=../shared/data --batch_size=4 --iterations=2000
    python examples/gradinversion.py --attack=gradinversion --model=resnet20 \
        --dataset=cifar10 --data_dir=../shared/data --batch_size=8 --group_size=4
    python examples/gradinversion.py --attack=dlg --model=lenet --dataset=cifar10 \
        --data_dir=../shared/data --indices=3
    python examples/gradinversion.py --attack=inverting_gradients --dataset=folder \
        --data_dir=my_photos --image_size=32 --batch_size=2
    python examples/gradinversion.py --attack=inverting_gradients --model=lenet \
        --data_dir=../shared/data --update=fedavg --local_steps=2 \
        --local_learning_rate=1e-2 --defense=prune:0.5 --adaptive

Writes into --output_dir: metrics.json (strict JSON), reconstruction.png (the
true batch above the matched reconstruction), progress.gif.
"""

from __future__ import annotations

import os

# Before TensorFlow is imported (by tfleak): progress, not pages of TF's C++ INFO/WARNING lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dataclasses  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

ATTACKS = ("dlg", "idlg", "inverting_gradients", "gradinversion")
MODELS = ("lenet", "convnet", "resnet20", "resnet32", "resnet18", "mlp", "dense")

FLAGS = flags.FLAGS
flags.DEFINE_enum("attack", "inverting_gradients", ATTACKS, "The attack.")
flags.DEFINE_enum("model", "resnet20", MODELS, "Victim architecture.")
flags.DEFINE_enum(
    "dataset",
    "cifar10",
    ["cifar10", "folder", "mnist", "sample"],
    "Where the private batch comes from ('folder': --data_dir holds one sub-folder per class).",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "Directory with CIFAR-10 JPEG folders or release files (default $TFLEAK_DATA_DIR); for "
    "--dataset=folder, the folder of class sub-folders.",
)
flags.DEFINE_enum("split", "test", ["train", "test"], "Dataset split of the private batch.")
flags.DEFINE_integer("batch_size", 1, "Examples in the private batch.")
flags.DEFINE_list("indices", None, "Comma list of dataset rows (default: a batch drawn by --seed).")
flags.DEFINE_enum(
    "label_mode", "unique", ["unique", "random"], "Drawn batch: distinct labels, or any."
)
flags.DEFINE_string(
    "labels",
    None,
    "How the attacker gets the labels: 'known' (given), 'optimize' (jointly, as DLG), or a "
    "restoration method ('idlg'). Default: the attack's own.",
)
flags.DEFINE_enum(
    "batch_norm", "train", ["train", "eval"], "Client's batch-norm mode (batch or moving stats)."
)
flags.DEFINE_integer("trained_epochs", 0, "Train the victim on CIFAR-10 (JPEG) first (cached).")
flags.DEFINE_integer("iterations", None, "Optimiser iterations per round (default: the attack's).")
flags.DEFINE_float("learning_rate", None, "First-order step size (default: the attack's).")
flags.DEFINE_integer(
    "group_size",
    None,
    "Random starts (seeds) optimised together in one graph; the best one wins. For "
    "gradinversion, the group of seeds of its group consistency (default: the attack's, 8 "
    "for gradinversion, else 1).",
)
flags.DEFINE_enum(
    "registration",
    None,
    ["translation", "none"],
    "gradinversion: align seeds by translation before forming the consensus, or use the plain "
    "mean (default: translation).",
)
flags.DEFINE_integer("restarts", None, "Further rounds from new starts (default: the attack's).")
flags.DEFINE_integer("seed", 0, "Seed of the drawn batch and of the dummy data.")
flags.DEFINE_integer("model_seed", 0, "Seed of the victim's initial weights.")
flags.DEFINE_integer("image_size", 32, "Side in pixels that 'folder' and 'sample' images get.")
flags.DEFINE_string("cache_dir", None, "Where trained victims are cached (default ~/.cache).")
flags.DEFINE_string("output_dir", "results/gradinversion", "Where results are written.")
flags.DEFINE_enum(
    "update",
    "gradient",
    ["gradient", "fedavg"],
    "What the client shares: one gradient of the mean loss (FedSGD), or the weight difference "
    "after local SGD steps on its batch (FedAvg), which the attacker unrolls.",
)
flags.DEFINE_integer(
    "local_steps", None, "FedAvg: local SGD steps K (default: --local_epochs passes)."
)
flags.DEFINE_float("local_learning_rate", None, "FedAvg: the client's SGD step size (1e-4).")
flags.DEFINE_integer(
    "local_batch_size", None, "FedAvg: examples per local step (default: the whole batch)."
)
flags.DEFINE_integer(
    "local_epochs", None, "FedAvg: passes over the batch when --local_steps is not given (1)."
)
flags.DEFINE_multi_string(
    "defense",
    ["none"],
    "Defence of the shared update, NAME:STRENGTH: noise:1e-3 (stddev), dpsgd:1.0/0.5 (clip / "
    "noise multiplier), prune:0.9 (fraction removed), quantize:8|float16|sign; repeat the flag "
    "to chain defences in order; 'none' for none.",
)
flags.DEFINE_bool(
    "adaptive",
    False,
    "The attacker applies the defences' deterministic part (pruning mask, quantiser, DP-SGD's "
    "clip) to its dummy update; without it, the naive attacker.",
)


def _validate_flags() -> Path:
    """Every check that needs no data, before anything slow; returns the output directory."""
    from tfleak.cli import require_finite
    from tfleak.io import check_writable_dir

    for name in ("batch_size", "group_size", "image_size"):
        if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be at least 1; got {getattr(FLAGS, name)}.")
    for name in ("iterations",):
        if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be at least 1; got {getattr(FLAGS, name)}.")
    for name in ("restarts", "trained_epochs"):
        if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 0:
            raise app.UsageError(f"--{name} must be >= 0; got {getattr(FLAGS, name)}.")
    require_finite("learning_rate", FLAGS.learning_rate, minimum=0.0, inclusive=(False, True))
    if FLAGS.indices is not None:
        try:
            indices = [int(i) for i in FLAGS.indices]
        except ValueError as error:
            raise app.UsageError(f"--indices must be integers; got {FLAGS.indices}.") from error
        if len(indices) != FLAGS.batch_size and FLAGS["batch_size"].present:
            raise app.UsageError(
                f"--indices names {len(indices)} rows but --batch_size is {FLAGS.batch_size}."
            )
        if min(indices) < 0:
            raise app.UsageError(f"--indices must be >= 0; got {FLAGS.indices}.")
    if FLAGS.trained_epochs and FLAGS.model not in ("convnet", "resnet20", "resnet32", "resnet18"):
        raise app.UsageError(
            "--trained_epochs trains on CIFAR-10: use it with --model convnet, resnet20, "
            f"resnet32 or resnet18, not {FLAGS.model}."
        )
    if FLAGS.trained_epochs and FLAGS.dataset != "cifar10":
        raise app.UsageError("--trained_epochs trains on CIFAR-10; use it with --dataset=cifar10.")
    if FLAGS.attack == "idlg" and FLAGS.batch_size != 1:
        raise app.UsageError("--attack=idlg restores the label of one image; use --batch_size=1.")
    _make_release()
    try:
        return check_writable_dir(FLAGS.output_dir, "output_dir")
    except (ValueError, PermissionError) as error:
        raise app.UsageError(str(error)) from error


def _make_release():
    """`(client's release, attacker's update)`: the update through the defences, as flags say."""
    from tfleak.threats.defenses import DefendedUpdate, parse_defenses
    from tfleak.threats.federated import get_update

    local = {
        name: getattr(FLAGS, name) if FLAGS[name].present else None
        for name in ("local_steps", "local_learning_rate", "local_batch_size", "local_epochs")
    }
    try:
        update = get_update(FLAGS.update, **local)
        defenses = parse_defenses(FLAGS.defense)
        release = DefendedUpdate(update, defenses)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if FLAGS.adaptive and not defenses:
        raise app.UsageError("--adaptive applies a defence's deterministic part; add --defense.")
    attacker = DefendedUpdate(update, defenses, adaptive=FLAGS.adaptive) if defenses else update
    return release, attacker


def _make_attack():
    import tfleak

    attack_class = {
        "dlg": tfleak.DLG,
        "idlg": tfleak.IDLG,
        "inverting_gradients": tfleak.InvertingGradients,
        "gradinversion": tfleak.GradInversion,
    }[FLAGS.attack]
    overrides = {"seed": FLAGS.seed}
    if FLAGS.group_size is not None:
        overrides["starts"] = FLAGS.group_size
    if FLAGS.registration is not None:
        if FLAGS.attack != "gradinversion":
            raise app.UsageError("--registration applies to --attack=gradinversion only.")
        overrides["registration"] = FLAGS.registration
    for name in ("iterations", "learning_rate", "restarts"):
        if getattr(FLAGS, name) is not None:
            overrides[name] = getattr(FLAGS, name)
    if FLAGS.labels is not None:
        overrides["label_strategy"] = FLAGS.labels
    overrides["update"] = _make_release()[1]
    try:
        return attack_class(**overrides)
    except ValueError as error:
        raise app.UsageError(str(error)) from error


def _load_batch():
    import tfleak

    name, split = FLAGS.dataset, FLAGS.split
    if FLAGS.indices is not None:
        indices = np.array([int(i) for i in FLAGS.indices])
    else:
        # The labels of the whole split decide the batch (3 s for the 10,000
        # CIFAR-10 JPEG test images).
        every = tfleak.data.load_dataset(name, split, FLAGS.data_dir, FLAGS.image_size)
        indices = tfleak.data.sample_batch(
            every.labels, FLAGS.batch_size, FLAGS.label_mode, seed=FLAGS.seed
        )
    batch = tfleak.data.load_dataset(name, split, FLAGS.data_dir, FLAGS.image_size, indices)
    return batch.images, batch.labels, batch.num_classes, batch.description, indices


def main(argv):
    del argv
    output_dir = _validate_flags()
    attack = _make_attack()

    import tensorflow as tf

    import tfleak
    from tfleak.io import atomic_write_json

    try:
        images, labels, num_classes, description, indices = _load_batch()
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    victim_accuracy = None
    try:
        builder = tfleak.models.VICTIMS[FLAGS.model]
        model = builder(images.shape[1:], num_classes, seed=FLAGS.model_seed)
        if FLAGS.trained_epochs:
            from tfleak.models.training import train_victim

            model, victim_accuracy = train_victim(
                model,
                name=f"{FLAGS.model}",
                epochs=FLAGS.trained_epochs,
                data_dir=FLAGS.data_dir,
                seed=FLAGS.model_seed,
                cache_dir=FLAGS.cache_dir,
            )
            print(f"Victim {FLAGS.model} trained {FLAGS.trained_epochs} epochs: "
                  f"test accuracy {victim_accuracy:.4f} on CIFAR-10 (JPEG)")  # fmt: skip
        victim = tfleak.as_victim(model, batch_norm=FLAGS.batch_norm)
        release = _make_release()[0]
        tf.random.set_seed(FLAGS.seed)  # DP-SGD's noise
        observed = release.share(victim, images, tf.constant(labels), seed=FLAGS.seed)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error

    print(
        f"Attacking {len(labels)} {description} image(s) (rows {indices.tolist()}, labels "
        f"{labels.tolist()}) shared by {victim!r}\nas {release.update!r}, defences: "
        f"{[d.spec for d in release.defenses] or 'none'}\nwith {attack!r}"
    )
    known = labels if attack.label_strategy == "known" else None
    try:
        result = attack(victim, observed, labels=known, ground_truth=(images, labels))
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    print(result)

    metrics = result.metrics
    summary = {
        "psnr": metrics.get("psnr"),
        "ssim": metrics.get("ssim"),
        "mse": metrics.get("mse"),
        "psnr_per_image": metrics.get("psnr_per_image"),
        "ssim_per_image": metrics.get("ssim_per_image"),
        "psnr_capped_at": metrics.get("psnr_capped_at"),
        "label_accuracy": metrics.get("label_accuracy"),
        "consensus_psnr": result.consensus_metrics.get("psnr"),
        "consensus_ssim": result.consensus_metrics.get("ssim"),
        "labels_true": labels.tolist(),
        "labels_pred": None if result.labels is None else result.labels.tolist(),
        "matching": metrics.get("order"),
        "seconds": result.seconds,
        "iterations": result.iterations,
        "restarts_used": result.restarts_used,
        "success": bool(result.success and result.reconstruction is not None),
        "gradient_distance": result.gradient_distance,
        "relative_distance": result.relative_distance,
        "message": result.message,
        "dataset": description,
        "split": FLAGS.split,
        "indices": indices.tolist(),
        "model": FLAGS.model,
        "victim_parameters": victim.count_params(),
        "batch_norm": FLAGS.batch_norm,
        "trained_epochs": FLAGS.trained_epochs,
        "victim_test_accuracy": victim_accuracy,
        "attack": type(attack).__name__,
        "hyperparameters": dataclasses.asdict(attack),
        "update": release.name,
        "local_steps": release.steps(len(labels)),
        "defense": [d.spec for d in release.defenses] or "none",
        "adaptive": FLAGS.adaptive,
        "epsilon": release.epsilon(batch_size=len(labels)),
    }
    atomic_write_json(output_dir / "metrics.json", summary)
    if result.reconstruction is not None and result.history:
        _save_figures(images, result, output_dir)
    psnr = summary["psnr"]
    print(
        f"PSNR {psnr:.2f} dB (matched mean), SSIM {summary['ssim']:.4f}, label accuracy "
        f"{summary['label_accuracy']:.2f}, {result.seconds:.1f} s"
        if psnr is not None and math.isfinite(psnr)
        else f"FAILED: {result.message}"
    )
    print(f"Wrote {output_dir}/metrics.json, reconstruction.png, progress.gif")


def _save_figures(images, result, output_dir):
    from tfleak import plotting

    order = result.metrics["order"]
    matched = result.reconstruction[order]
    psnrs = result.metrics["psnr_per_image"]
    plotting.plot_image_rows(
        [list(images), list(matched)],
        output_dir / "reconstruction.png",
        row_titles=["truth", "reconstruction"],
        column_titles=[f"{p:.1f} dB" for p in psnrs],
        title=f"{type(result.attack).__name__}: PSNR {result.metrics['psnr']:.1f} dB (matched)",
    )
    frames = [np.concatenate(list(s.images), axis=1) for s in result.history]
    plotting.save_progress_gif(
        frames,
        output_dir / "progress.gif",
        captions=[f"iteration {s.iteration}" for s in result.history],
    )


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
