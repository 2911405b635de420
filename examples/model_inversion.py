r"""Model inversion on a split Omniglot model: DP targets, two attacks, defences of the code.

A target classifier is split into an on-device stage (images -> 1x1x32 code)
and a server stage. Two attackers invert the codes of images they never saw:
a decoder learned from queries of the on-device stage on surrogate images
(black box, as published), and a white-box regularised maximum-likelihood
inversion of the saved stage (He, Zhang, Lee 2019). Both attack the plain
target, DP-Adam targets at each noise multiplier (batch norm as published, and
group norm, whose per-example gradients the epsilon covers), NoPeek targets,
and the plain target whose device noises its codes (Gaussian; clipped Laplace
with a local-DP epsilon per code). Writes to --output_dir:

  results.json         rows: target, defence, epsilon, accuracies, both attacks'
                       MSE/PSNR/SSIM and re-identification top-1/top-5 against
                       chance, the attacker's training MSE; baselines, timings, config
  results.md           the same tables in Markdown
  reconstructions.png  test originals, then each target's reconstructions
  reidentification.png best / median / worst re-identified test image, both attacks
  tradeoff.png         code defences: target accuracy against attack success
  models/, checkpoints/, attacks/   stages, per-epoch checkpoints, per-row attack
                       results: rerun the same command to resume; a different
                       command is refused (--on_config_change=restart discards)

Offline, from the two small Omniglot zips and MNIST's test digits:

  python examples/model_inversion.py --scheme=offline --data_dir=../shared/data \
      --output_dir=results/model_inversion
"""

from __future__ import annotations

import functools
import io
import json
import time
import zlib
from pathlib import Path

import tfleak  # noqa: F401  first: TensorFlow's start-up lines stay off the terminal

# isort: split
import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from tfleak import privacy, split
from tfleak.cli import parse_float_list, require_finite, run
from tfleak.data.omniglot import (
    OMNIGLOT_ALPHABETS,
    OMNIGLOT_SCHEMES,
    describe_scheme,
    mnist_surrogate,
    omniglot_scheme,
    split_by_alphabet,
)
from tfleak.distribute import STRATEGIES, get_strategy
from tfleak.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_writable_dir,
    read_json,
)
from tfleak.metrics import image_metrics
from tfleak.plotting import plot_image_rows
from tfleak.split.defenses import CodeNoise, NoPeekTarget
from tfleak.split.reidentification import best_median_worst, reidentify
from tfleak.split.whitebox import WhiteBoxInversion
from tfleak.training import ON_CONFIG_CHANGE, ConfigMismatchError, epochs_done

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "scheme",
    "offline",
    list(OMNIGLOT_SCHEMES),
    "Which Omniglot images train and test the target and the attacker.",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "Folder with the Omniglot zips (and mnist/ for MNIST "
    "surrogates); default $TFLEAK_DATA_DIR, else tfds.",
)
flags.DEFINE_integer("target_epochs", 10, "Epochs of the plain and NoPeek targets (Adam).")
flags.DEFINE_float("target_learning_rate", 0.001, "Adam's learning rate of the plain target.")
flags.DEFINE_list(
    "noise_multipliers",
    ["0.7", "0.5", "0.3"],
    "DP targets' noise multipliers (noise std / clipping norm), each > 0; empty = no DP rows.",
)
flags.DEFINE_list(
    "dp_norms",
    ["batch", "group"],
    "Normalizations of the DP targets: 'batch' (published; batch statistics mix "
    "examples) and/or 'group' (per-example; the epsilon holds).",
)
flags.DEFINE_enum(
    "dp_variant",
    "per_example",
    list(privacy.DP_VARIANTS),
    "What DP-Adam clips as one example's gradient: 'per_example' (the example run "
    "through the model alone) or 'full_batch' (a row of the Jacobian of one whole-batch "
    "pass); see tfleak.privacy.DP_VARIANTS.",
)
flags.DEFINE_integer("dp_epochs", 20, "Epochs of each DP target (DP Adam).")
flags.DEFINE_integer("batch_size", 32, "Batch size of every model.")
flags.DEFINE_integer(
    "num_microbatches",
    None,
    "DP microbatches per batch; must divide "
    "--batch_size. Default: --batch_size (one example each).",
)
flags.DEFINE_float("l2_norm_clip", 1.0, "DP clipping norm of each microbatch's gradient.")
flags.DEFINE_float("dp_learning_rate", 0.005, "DP Adam's learning rate.")
flags.DEFINE_float("delta", 1e-5, "The delta of (epsilon, delta)-DP, in (0, 1).")
flags.DEFINE_enum(
    "epsilon_conversion",
    "rdp",
    ["rdp", "classic"],
    "Epsilon shown in the figure: 'rdp' (today's) or 'classic' (the published "
    "table's). results.json holds both.",
)
flags.DEFINE_enum(
    "decoder",
    "strong",
    ["published", "strong"],
    "The learned decoder: 'published' (surrogate images as the scheme gives "
    "them, --attacker_epochs epochs) or 'strong' (augmented, plus MNIST digits, "
    "early stopping on the held-out --holdout_alphabet).",
)
flags.DEFINE_integer("attacker_epochs", 100, "Most epochs of each decoder (Adam, MSE).")
flags.DEFINE_float("attacker_learning_rate", 0.01, "Decoder Adam's learning rate.")
flags.DEFINE_integer(
    "mnist_surrogates",
    2000,
    "'strong': MNIST test digits added to the surrogate images (0 = none).",
)
flags.DEFINE_string(
    "holdout_alphabet", "Sanskrit", "'strong': surrogate alphabet held out for early stopping."
)
flags.DEFINE_integer(
    "patience", 5, "'strong': epochs without a better held-out MSE before stopping."
)
flags.DEFINE_integer(
    "whitebox_images",
    64,
    "Test images the white-box attack inverts (the "
    "first ones; 0 = skip it). Re-identification ranks them among all test "
    "images.",
)
flags.DEFINE_integer("whitebox_steps", 200, "Adam steps of the white-box inversion.")
flags.DEFINE_float("whitebox_learning_rate", 0.05, "White-box Adam step size (pixels).")
flags.DEFINE_float("whitebox_tv", 0.05, "White-box total-variation weight (lambda).")
flags.DEFINE_list(
    "gaussian_stddevs",
    ["0.3", "1", "3"],
    "Code defence: Gaussian noise standard deviations, in units of the standard deviation "
    "of codes of surrogate images (each >= 0).",
)
flags.DEFINE_list(
    "laplace_epsilons",
    ["100", "30", "10"],
    "Code defence: local-DP epsilon per code of the clipped Laplace mechanism (each > 0).",
)
flags.DEFINE_list(
    "nopeek_alphas", ["5", "20"], "NoPeek targets' distance-correlation weights (each > 0)."
)
flags.DEFINE_integer(
    "limit",
    0,
    "Use at most this many images of each dataset (0 = all); "
    "for smoke tests. At least --batch_size.",
)
flags.DEFINE_enum(
    "strategy",
    "default",
    list(STRATEGIES),
    "tf.distribute strategy; models are built and trained under its scope.",
)
flags.DEFINE_enum(
    "on_config_change",
    "refuse",
    list(ON_CONFIG_CHANGE),
    "A rerun into an output directory written with other flags: refuse, or "
    "restart the phases whose configuration changed.",
)
flags.DEFINE_bool(
    "skip_unfinished_dp",
    False,
    "Leave out (and do not train) the DP targets whose checkpoint holds fewer than "
    "--dp_epochs epochs: attacks and tables for what a run cut short has finished.",
)
flags.DEFINE_string("output_dir", "results/model_inversion", "Where results go.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling, dropout and noise.")

NUM_SHOWN = 16
log = functools.partial(print, flush=True)


def _validate_flags() -> dict:
    """Checks every flag before any work; returns the parsed lists."""
    parsed = {
        "noises": parse_float_list("noise_multipliers", FLAGS.noise_multipliers),
        "gaussian": parse_float_list("gaussian_stddevs", FLAGS.gaussian_stddevs, minimum=0),
        "laplace": parse_float_list("laplace_epsilons", FLAGS.laplace_epsilons),
        "alphas": parse_float_list("nopeek_alphas", FLAGS.nopeek_alphas),
    }
    for name, key in (
        ("noise_multipliers", "noises"),
        ("laplace_epsilons", "laplace"),
        ("nopeek_alphas", "alphas"),
    ):
        if any(value <= 0 for value in parsed[key]):
            raise app.UsageError(
                f"--{name} must all be > 0 (got {parsed[key]}); leave the list empty for none "
                "(the plain target is always included)."
            )
    unknown = sorted(set(FLAGS.dp_norms) - set(split.NORMALIZATIONS))
    if unknown or not FLAGS.dp_norms and parsed["noises"]:
        raise app.UsageError(
            f"--dp_norms must name some of {', '.join(split.NORMALIZATIONS)}; got {FLAGS.dp_norms}."
        )
    for name in (
        "target_epochs",
        "attacker_epochs",
        "dp_epochs",
        "batch_size",
        "patience",
        "whitebox_steps",
    ):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be >= 1; got {getattr(FLAGS, name)}.")
    for name in ("whitebox_images", "mnist_surrogates", "limit"):
        if getattr(FLAGS, name) < 0:
            raise app.UsageError(f"--{name} must be >= 0; got {getattr(FLAGS, name)}.")
    if FLAGS.mnist_surrogates > 10000:
        raise app.UsageError("--mnist_surrogates must be <= 10000 (the MNIST test set).")
    if FLAGS.num_microbatches is not None and FLAGS.num_microbatches <= 0:
        raise app.UsageError(
            f"--num_microbatches must be >= 1; got {FLAGS.num_microbatches} (leave it unset "
            "for one example per microbatch)."
        )
    microbatches = FLAGS.num_microbatches or FLAGS.batch_size
    if FLAGS.batch_size % microbatches:
        raise app.UsageError(
            f"--num_microbatches={microbatches} does not divide --batch_size="
            f"{FLAGS.batch_size}; DP Adam needs equal microbatches."
        )
    if 0 < FLAGS.limit < FLAGS.batch_size:
        raise app.UsageError(
            f"--limit={FLAGS.limit} is smaller than one batch (--batch_size="
            f"{FLAGS.batch_size}); use --limit >= {FLAGS.batch_size} or 0 for all images."
        )
    for name in (
        "l2_norm_clip",
        "dp_learning_rate",
        "attacker_learning_rate",
        "target_learning_rate",
        "whitebox_learning_rate",
    ):
        require_finite(name, getattr(FLAGS, name), minimum=0, inclusive=(False, True))
    require_finite("whitebox_tv", FLAGS.whitebox_tv, minimum=0)
    require_finite("delta", FLAGS.delta, minimum=0, maximum=1, inclusive=(False, False))
    if FLAGS.decoder == "strong" and FLAGS.holdout_alphabet not in OMNIGLOT_ALPHABETS:
        raise app.UsageError(
            f"--holdout_alphabet {FLAGS.holdout_alphabet!r} is not an Omniglot "
            "alphabet (see tfleak.data.omniglot.OMNIGLOT_ALPHABETS)."
        )
    try:
        check_writable_dir(FLAGS.output_dir)
    except (ValueError, PermissionError) as error:
        raise app.UsageError(str(error)) from error
    return parsed


def _load_data() -> dict:
    """The scheme's datasets, the decoder's surrogate train / held-out sets, baselines."""
    try:
        data = omniglot_scheme(FLAGS.scheme, FLAGS.data_dir)
        if FLAGS.decoder == "strong":
            train, held_out = split_by_alphabet(data["attacker_train"], [FLAGS.holdout_alphabet])
            if FLAGS.mnist_surrogates:
                train = train.concatenate(
                    mnist_surrogate(FLAGS.data_dir, FLAGS.mnist_surrogates)
                ).cache()
            data["decoder_train"], data["decoder_val"] = train, held_out
        else:
            data["decoder_train"], data["decoder_val"] = data["attacker_train"], None
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    if FLAGS.limit:
        data = {k: None if v is None else v.take(FLAGS.limit).cache() for k, v in data.items()}
    for key in ("target_train", "decoder_train", "attacker_test"):
        count = sum(1 for _ in data[key])
        if count < FLAGS.batch_size:
            raise app.UsageError(f"{key} has {count} images, fewer than one batch.")
    if data["decoder_val"] is not None and not sum(1 for _ in data["decoder_val"]):
        raise app.UsageError(
            f"--holdout_alphabet {FLAGS.holdout_alphabet} has no surrogate "
            "images in this scheme; pick one of its attacker_train alphabets."
        )
    return data


def _common_config() -> dict:
    return {"scheme": FLAGS.scheme, "limit": FLAGS.limit, "data": "omniglot zips"}


def _train(model, data, name, output_dir, epochs, seed, config, **kwargs):
    return split.train_resumable(
        model,
        data["target_train"],
        epochs=epochs,
        batch_size=FLAGS.batch_size,
        seed=seed,
        checkpoint_dir=output_dir / "checkpoints" / name,
        config={**_common_config(), **config},
        on_config_change=FLAGS.on_config_change,
        validation_data=data["target_val"],
        log=log,
        name=name,
        **kwargs,
    )


def train_targets(parsed, data, strategy, output_dir) -> list[dict]:
    """Trains (or resumes) every target; saves each on-device stage. Returns target records."""
    models_dir = output_dir / "models"
    targets = []
    keras.utils.set_random_seed(FLAGS.seed)
    with strategy.scope():
        plain = split.compile_target(split.TargetModel(), FLAGS.target_learning_rate)
    run = _train(
        plain,
        data,
        "target",
        output_dir,
        FLAGS.target_epochs,
        FLAGS.seed,
        {"kind": "plain", "learning_rate": FLAGS.target_learning_rate},
    )
    privacy.save_on_device(plain.on_device_model, models_dir / "plain.keras")
    targets.append(dict(name="plain", kind="plain", run=run, model=plain, norm="batch"))
    # Each target's seed is fixed by its place in the full grid (norms in NORMALIZATIONS'
    # order, then NoPeek), whatever --dp_norms names and in which order: a run of some norms
    # trains the same targets as a run of all of them, and each resumes the other's checkpoints.
    norms = list(split.NORMALIZATIONS)
    for norm in FLAGS.dp_norms if parsed["noises"] else ():
        for position, noise in enumerate(parsed["noises"]):
            index = norms.index(norm) * len(parsed["noises"]) + position + 1
            name = f"dp_{norm}_noise{noise:g}"
            seed = FLAGS.seed + 1000 * index
            done = epochs_done(output_dir / "checkpoints" / name)
            if FLAGS.skip_unfinished_dp and done < FLAGS.dp_epochs:
                log(
                    f"{name}: {done}/{FLAGS.dp_epochs} epochs done; left out (--skip_unfinished_dp)"
                )
                targets.append(dict(name=name, kind="dp", skipped=done))
                continue
            keras.utils.set_random_seed(seed)
            with strategy.scope():
                model = privacy.build_dp_target(
                    noise,
                    variant=FLAGS.dp_variant,
                    norm=norm,
                    batch_size=FLAGS.batch_size,
                    num_microbatches=FLAGS.num_microbatches,
                    l2_norm_clip=FLAGS.l2_norm_clip,
                    learning_rate=FLAGS.dp_learning_rate,
                )
            config = {
                "kind": "dp",
                "noise": noise,
                "norm": norm,
                "variant": FLAGS.dp_variant,
                "microbatches": FLAGS.num_microbatches or FLAGS.batch_size,
                "clip": FLAGS.l2_norm_clip,
                "learning_rate": FLAGS.dp_learning_rate,
            }
            run = _train(
                model, data, name, output_dir, FLAGS.dp_epochs, seed, config, drop_remainder=True
            )
            privacy.save_on_device(privacy.cut_on_device(model), models_dir / f"{name}.keras")
            targets.append(dict(name=name, kind="dp", run=run, noise=noise, norm=norm))
    for position, alpha in enumerate(parsed["alphas"]):
        index = len(norms) * len(parsed["noises"]) + position + 1
        name = f"nopeek_alpha{alpha:g}"
        seed = FLAGS.seed + 1000 * index
        keras.utils.set_random_seed(seed)
        with strategy.scope():
            model = split.compile_target(NoPeekTarget(alpha), FLAGS.target_learning_rate)
        run = _train(
            model,
            data,
            name,
            output_dir,
            FLAGS.target_epochs,
            seed,
            {"kind": "nopeek", "alpha": alpha, "learning_rate": FLAGS.target_learning_rate},
        )
        privacy.save_on_device(model.on_device_model, models_dir / f"{name}.keras")
        targets.append(dict(name=name, kind="nopeek", run=run, alpha=alpha, norm="batch"))
    return targets


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*[(x.numpy(), int(y)) for x, y in dataset])
    return np.stack(images), np.array(labels)


def _defended_accuracy(model, defense, data) -> float:
    """The plain target's validation accuracy when the server receives defended codes."""
    images, labels = _arrays(data["target_val"])
    correct = 0
    for start in range(0, len(images), 256):
        codes = defense(model.mobile_step(images[start : start + 256]))
        predicted = np.argmax(model.server_step(codes).numpy(), axis=1)
        correct += int(np.sum(predicted == labels[start : start + 256]))
    return correct / len(images)


def attack_row(
    target, defense, strength, data, strategy, output_dir, seed, test_images, mean_image
):
    """Both attacks against one target (and code defence); cached in attacks/<row>.json."""
    name = (
        target["name"]
        if defense.mechanism == "none"
        else (f"{target['name']}_{defense.mechanism}{strength:g}")
    )
    config = {
        **_common_config(),
        "target": target["name"],
        "defense": repr(defense),
        "decoder": FLAGS.decoder,
        "attacker_epochs": FLAGS.attacker_epochs,
        "attacker_learning_rate": FLAGS.attacker_learning_rate,
        "mnist_surrogates": FLAGS.mnist_surrogates,
        "holdout": FLAGS.holdout_alphabet,
        "patience": FLAGS.patience,
        "whitebox_images": FLAGS.whitebox_images,
        "whitebox_steps": FLAGS.whitebox_steps,
        "whitebox_tv": FLAGS.whitebox_tv,
        "whitebox_learning_rate": FLAGS.whitebox_learning_rate,
        "seed": seed,
    }
    cache = output_dir / "attacks" / f"{name}.json"
    arrays = output_dir / "attacks" / f"{name}.npz"
    cached = read_json(cache)
    if cached and cached.get("config") == config and arrays.is_file():
        log(f"{name}: attacks already done ({cache})")
        return cached["row"], dict(np.load(arrays))
    with strategy.scope():
        on_device = privacy.load_on_device(output_dir / "models" / f"{target['name']}.keras")
    keras.utils.set_random_seed(seed)
    strong = FLAGS.decoder == "strong"
    with strategy.scope():
        attacker = split.compile_attacker(
            split.AttackModel(on_device, augment=strong, defense=defense),
            FLAGS.attacker_learning_rate,
        )
    run = split.train_resumable(
        attacker,
        data["decoder_train"],
        epochs=FLAGS.attacker_epochs,
        batch_size=FLAGS.batch_size,
        seed=seed,
        checkpoint_dir=output_dir / "checkpoints" / f"attacker_{name}",
        config={k: v for k, v in config.items() if not k.startswith("whitebox")},
        on_config_change=FLAGS.on_config_change,
        validation_data=data["decoder_val"],
        early_stopping=("val_loss", FLAGS.patience) if strong else None,
        log=log,
        name=f"decoder vs {name}",
    )
    train_metrics, _, _ = split.evaluate_attack(attacker, on_device, data["decoder_train"])
    metrics, originals, reconstructions = split.evaluate_attack(
        attacker, on_device, data["attacker_test"]
    )
    decoder_reid = reidentify(reconstructions, originals)
    row = {
        "attacker_train_mse": train_metrics["mse"],
        "attacker_train_loss_last_epoch": run.final.get("loss"),
        "attacker_best_epoch": run.best_epoch or len(run.history),
        "attacker_mse": metrics["mse"],
        "attacker_psnr": metrics["psnr"],
        "attacker_ssim": metrics["ssim"],
        **decoder_reid.as_dict(),
    }
    saved = {"decoder": reconstructions.astype(np.float16)}
    if FLAGS.whitebox_images:
        count = min(FLAGS.whitebox_images, len(test_images))
        codes = on_device(test_images[:count], training=False)
        if defense.mechanism != "none":
            codes = defense(codes)
        attack = WhiteBoxInversion(
            on_device,
            steps=FLAGS.whitebox_steps,
            learning_rate=FLAGS.whitebox_learning_rate,
            tv_weight=FLAGS.whitebox_tv,
            init=mean_image,
        )
        start = time.perf_counter()
        result = attack(codes.numpy())
        log(f"white box vs {name}: {result!r} ({time.perf_counter() - start:.0f} s)")
        white = image_metrics(test_images[:count], result.reconstructions)
        white_reid = reidentify(result.reconstructions, test_images)
        row.update(
            whitebox_images=count,
            whitebox_mse=white["mse"],
            whitebox_psnr=white["psnr"],
            whitebox_ssim=white["ssim"],
            whitebox_reidentification_top1=white_reid.top1,
            whitebox_reidentification_top5=white_reid.top5,
        )
        saved["whitebox"] = result.reconstructions.astype(np.float16)
    log(f"attacks vs {name}: " + json.dumps(row))
    _save_npz(arrays, saved)
    atomic_write_json(cache, {"config": config, "row": row})
    return row, saved


def _save_npz(path: Path, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _target_row(target, n_train) -> dict:
    noise = target.get("noise")
    row = {
        "name": target["name"],
        "kind": target["kind"],
        "norm": target.get("norm"),
        "noise_multiplier": noise,
        "epsilon": None,
        "epsilon_classic": None,
        "alpha": target.get("alpha"),
        "train_accuracy": target["run"].final.get("accuracy"),
        "val_accuracy": target["run"].final.get("val_accuracy"),
        "defense": "none",
        "strength": None,
        "epsilon_local": None,
    }
    if noise is not None:
        for key, conversion in (("epsilon", "rdp"), ("epsilon_classic", "classic")):
            row[key] = privacy.compute_epsilon(
                n_train, FLAGS.batch_size, FLAGS.dp_epochs, noise, FLAGS.delta, conversion
            )
    return row


def run_experiment(parsed: dict, output_dir: Path) -> dict:
    """Trains the targets, runs both attacks and the defences; returns results.json's dict."""
    strategy = get_strategy(FLAGS.strategy)
    if parsed["noises"] and strategy.num_replicas_in_sync > 1:
        raise app.UsageError(
            f"--strategy={FLAGS.strategy} has {strategy.num_replicas_in_sync} replicas; DP "
            "training supports one (see tfleak.privacy.compile_dp_target). Use "
            "--strategy=default, or --noise_multipliers= for no DP rows."
        )
    data = _load_data()
    scheme = describe_scheme(
        FLAGS.scheme,
        {k: data[k] for k in ("target_train", "target_val", "attacker_train", "attacker_test")},
    )
    log("data: " + json.dumps(scheme))
    n_train = scheme["target_train"]["images"]
    if parsed["noises"]:  # Fails now, not after training, if the epsilon cannot be computed.
        try:
            privacy.compute_epsilon(
                n_train, FLAGS.batch_size, FLAGS.dp_epochs, parsed["noises"][0], FLAGS.delta
            )
        except ValueError as error:
            raise app.UsageError(f"epsilon: {error}") from error
    test_images, _ = _arrays(data["attacker_test"])
    mean_image = split.mean_image(data["decoder_train"])
    baseline = float(np.mean((test_images - mean_image[None]) ** 2))
    mean_reid = reidentify(np.repeat(mean_image[None], len(test_images), 0), test_images)
    log(
        f"mean-image baseline on the attacker's test images: MSE {baseline:.4f}, "
        f"re-identification top-1 {mean_reid.top1:.4f} (chance {mean_reid.chance_top1:.4f})"
    )

    targets = train_targets(parsed, data, strategy, output_dir)
    unfinished = {t["name"]: t["skipped"] for t in targets if "skipped" in t}
    targets = [t for t in targets if "skipped" not in t]
    plain = targets[0]
    results = {
        "rows": [],
        "baseline_mse": baseline,
        "baseline_reidentification_top1": mean_reid.top1,
        "scheme": scheme,
        "decoder": _decoder_description(data),
        "epsilon_note": (
            f"epsilon: RDP accountant (dp_accounting), delta {FLAGS.delta:g}, n {n_train}, "
            f"batch {FLAGS.batch_size}, {FLAGS.dp_epochs} epochs, Poisson-sampling "
            "approximation; 'epsilon' uses today's RDP-to-DP conversion (Canonne-Kamath-"
            "Steinke 2020), 'epsilon_classic' the older one (Mironov 2017) of the published "
            "table. For norm 'batch' it is the accountant's number only: batch statistics mix "
            "examples and the moving statistics ship un-noised."
        ),
        "unfinished_dp_targets_epochs_done": unfinished,
        "timings": {"target_seconds_per_epoch": plain["run"].seconds_per_epoch},
        "config": {name: FLAGS[name].value for name in FLAGS if name in _OWN_FLAGS},
    }
    dp_seconds = [t["run"].seconds_per_epoch for t in targets if t["kind"] == "dp"]
    if dp_seconds and all(dp_seconds):
        results["timings"]["dp_target_seconds_per_epoch"] = float(np.mean(dp_seconds))
    defenses = [(CodeNoise("none", 0), None)]
    code_std = None
    if parsed["gaussian"] or parsed["laplace"]:
        codes = plain["model"].mobile_step(_arrays(data["decoder_train"])[0][:512]).numpy()
        code_std = float(np.std(codes))
        clip = float(np.median(np.abs(codes).reshape(len(codes), -1).sum(1)))
        results["code_defense_note"] = (
            f"Gaussian strength: noise stddev / the std of codes of surrogate images "
            f"({code_std:.3g});"
            f" Laplace: codes clipped to L1 norm {clip:.3g} (median over 512 surrogate images), "
            "noise scale 2 * clip / epsilon_local; the server is not retrained."
        )
        defenses += [(CodeNoise("gaussian", s * code_std), s) for s in parsed["gaussian"]]
        defenses += [(CodeNoise("laplace", e, clip_norm=clip), e) for e in parsed["laplace"]]
    # Which (target, defence) pairs: every target undefended, and the plain target defended.
    jobs = [(t, *defenses[0]) for t in targets] + [(plain, *d) for d in defenses[1:]]
    figure_rows, titles, saved_plain = [list(test_images[:NUM_SHOWN])], ["original"], None
    for index, (target, defense, strength) in enumerate(jobs):
        row = _target_row(target, n_train)
        # A row's seeds depend on the row alone, not on which other rows this run has: a
        # rerun with more targets or defences reuses the rows already done.
        key = f"{target['name']} {defense.mechanism} {strength}"
        row_seed = FLAGS.seed + zlib.crc32(key.encode()) % 100_000
        if defense.mechanism != "none":
            keras.utils.set_random_seed(row_seed + 77)
            row.update(
                name=f"plain + {defense.mechanism} {strength:g}",
                kind="code_noise",
                defense=defense.mechanism,
                strength=strength,
                noise_stddev=defense.strength if defense.mechanism == "gaussian" else None,
                laplace_scale=defense.laplace_scale,
                epsilon_local=defense.epsilon_local,
                train_accuracy=None,
                val_accuracy=_defended_accuracy(plain["model"], defense, data),
            )
        attacks, saved = attack_row(
            target,
            defense,
            strength,
            data,
            strategy,
            output_dir,
            row_seed + 500,
            test_images,
            mean_image,
        )
        row.update(attacks)
        results["rows"].append(row)
        if index == 0:
            saved_plain = saved
        if defense.mechanism == "none":
            figure_rows.append(list(saved["decoder"][:NUM_SHOWN].astype(np.float32)))
            titles.append(_title(row))
            if "whitebox" in saved and target["kind"] == "plain":
                figure_rows.append(list(saved["whitebox"][:NUM_SHOWN].astype(np.float32)))
                titles.append("plain\nwhite box")
        atomic_write_json(output_dir / "results.json", results)  # Partial results as we go.
    atomic_write_text(output_dir / "results.md", markdown_tables(results))
    plot_image_rows(
        figure_rows,
        output_dir / "reconstructions.png",
        row_titles=titles,
        title=f"Model inversion of the on-device code, Omniglot '{FLAGS.scheme}': "
        f"first {NUM_SHOWN} attacker test images (decoder rows, then white box)",
    )
    _reidentification_figure(saved_plain, test_images, output_dir / "reidentification.png")
    if len(jobs) > len(targets) or parsed["alphas"]:
        _tradeoff_figure(results, output_dir / "tradeoff.png")
    log(markdown_tables(results))
    log(f"wrote {output_dir / 'results.json'}, results.md and figures")
    return results


def _decoder_description(data) -> str:
    if FLAGS.decoder == "published":
        return f"published: the scheme's surrogate images, up to {FLAGS.attacker_epochs} epochs"
    return (
        f"strong: surrogate images without {FLAGS.holdout_alphabet} "
        f"+ {FLAGS.mnist_surrogates} MNIST test digits (1-bit, inverted, 70 px on a 105 px "
        "page), random shifts/rotations/zooms, early stopping (patience "
        f"{FLAGS.patience}) on {FLAGS.holdout_alphabet}, up to {FLAGS.attacker_epochs} epochs"
    )


def _title(row) -> str:
    if row["kind"] == "dp":
        shown = row["epsilon" if FLAGS.epsilon_conversion == "rdp" else "epsilon_classic"]
        return f"DP {row['norm']} {row['noise_multiplier']:g}\neps {shown:.3g}"
    if row["kind"] == "nopeek":
        return f"NoPeek {row['alpha']:g}"
    return "plain\ndecoder"


def _reidentification_figure(saved, test_images, path):
    rows, titles = [], []
    for attack in ("decoder", "whitebox"):
        if attack not in saved:
            continue
        reconstructions = saved[attack].astype(np.float32)
        result = reidentify(reconstructions, test_images)
        distances = (
            np.argsort(
                (
                    (
                        reconstructions.reshape(len(reconstructions), -1)[:, None]
                        - test_images.reshape(len(test_images), -1)[None]
                    )
                    ** 2
                ).mean(-1),
                axis=1,
            )[:, 0]
            if len(reconstructions) <= 128
            else None
        )
        for case, i in zip(("best", "median", "worst"), best_median_worst(result)):
            nearest = (
                distances[i] if distances is not None else _nearest(reconstructions[i], test_images)
            )
            rows.append([test_images[i], reconstructions[i], test_images[nearest]])
            titles.append(f"{attack} {case}\nrank {result.ranks[i]}")
    plot_image_rows(
        rows,
        path,
        row_titles=titles,
        column_titles=["original", "reconstruction", "nearest test image"],
        title="Re-identification, plain target",
    )


def _nearest(image, gallery) -> int:
    return int(np.argmin(((gallery - image[None]) ** 2).reshape(len(gallery), -1).mean(1)))


def _tradeoff_figure(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    kinds = (
        ("plain", "o", "plain"),
        ("code_noise", "s", "code noise"),
        ("nopeek", "^", "NoPeek"),
        ("dp", "D", "DP-Adam (weights)"),
    )
    for axis, (key, white_key), ylabel in (
        (axes[0], ("attacker_mse", "whitebox_mse"), "attack test MSE (higher = safer)"),
        (
            axes[1],
            ("reidentification_top1", "whitebox_reidentification_top1"),
            "re-identification top-1",
        ),
    ):
        for attack_key, colour, attack in ((key, "C0", "decoder"), (white_key, "C3", "white box")):
            for kind, marker, kind_label in kinds:
                rows = [
                    r
                    for r in results["rows"]
                    if r["kind"] == kind
                    and r.get(attack_key) is not None
                    and r.get("val_accuracy") is not None
                ]
                if not rows:
                    continue
                axis.scatter(
                    [r["val_accuracy"] for r in rows],
                    [r[attack_key] for r in rows],
                    marker=marker,
                    c=colour,
                    label=f"{attack}, {kind_label}",
                )
                if attack == "decoder":
                    for r in rows:
                        axis.annotate(
                            r["name"].replace("plain + ", "").replace("_noise", " "),
                            (r["val_accuracy"], r[attack_key]),
                            fontsize=6,
                        )
        axis.set(xlabel="target validation accuracy", ylabel=ylabel)
    axes[0].axhline(results["baseline_mse"], ls="--", c="grey", label="mean image")
    chance = results["rows"][0].get("chance_top1")
    if chance is not None:
        axes[1].axhline(chance, ls="--", c="grey", label="chance")
    handles, labels = axes[1].get_legend_handles_labels()
    mean_handle = axes[0].get_legend_handles_labels()[0][-1]
    figure.legend(handles + [mean_handle], labels + ["mean image"], fontsize=7, loc="center right")
    figure.suptitle(
        "Utility against attack success: code defences, NoPeek and DP-Adam targets", fontsize=10
    )
    figure.tight_layout(rect=(0, 0, 0.83, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def markdown_tables(results: dict) -> str:
    """results.json's rows as Markdown tables."""

    def cell(value, digits=3):
        return "-" if value is None else f"{value:.{digits}g}"

    lines = [
        "| target | norm | noise | eps (rdp) | eps (classic) | defence | eps local | train acc "
        "| val acc | decoder train MSE | decoder MSE | PSNR | SSIM | re-id top-1 | top-5 "
        "| white-box MSE | PSNR | SSIM | re-id top-1 | top-5 |",
        "|" + " --- |" * 20,
    ]
    for r in results["rows"]:
        defense = "-" if r["defense"] == "none" else f"{r['defense']} {r['strength']:g}"
        lines.append(
            f"| {r['name']} | {r['norm'] or '-'} | {cell(r['noise_multiplier'])} | "
            f"{cell(r['epsilon'])} | {cell(r['epsilon_classic'])} | {defense} | "
            f"{cell(r['epsilon_local'])} | {cell(r['train_accuracy'], 2)} | "
            f"{cell(r['val_accuracy'], 2)} | {cell(r.get('attacker_train_mse'))} | "
            f"{cell(r.get('attacker_mse'))} | {cell(r.get('attacker_psnr'))} | "
            f"{cell(r.get('attacker_ssim'), 2)} | {cell(r.get('reidentification_top1'), 2)} | "
            f"{cell(r.get('reidentification_top5'), 2)} | {cell(r.get('whitebox_mse'))} | "
            f"{cell(r.get('whitebox_psnr'))} | {cell(r.get('whitebox_ssim'), 2)} | "
            f"{cell(r.get('whitebox_reidentification_top1'), 2)} | "
            f"{cell(r.get('whitebox_reidentification_top5'), 2)} |"
        )
    chance = results["rows"][0].get("chance_top1") if results["rows"] else None
    lines.append(
        f"\nMean-image baseline MSE: {results['baseline_mse']:.4f}; re-identification chance "
        f"top-1 {cell(chance)}. Decoder: {results['decoder']}.\n"
    )
    unfinished = results.get("unfinished_dp_targets_epochs_done") or {}
    if unfinished:
        lines.append(
            "Left out, unfinished (--skip_unfinished_dp; epochs done): "
            + ", ".join(f"{name} {done}" for name, done in unfinished.items())
            + "\n"
        )
    return "\n".join(lines)


_OWN_FLAGS = (
    "scheme data_dir target_epochs target_learning_rate noise_multipliers dp_norms dp_variant "
    "dp_epochs batch_size num_microbatches l2_norm_clip dp_learning_rate delta "
    "epsilon_conversion decoder attacker_epochs attacker_learning_rate mnist_surrogates "
    "holdout_alphabet patience whitebox_images whitebox_steps whitebox_learning_rate "
    "whitebox_tv gaussian_stddevs laplace_epsilons nopeek_alphas limit strategy "
    "on_config_change skip_unfinished_dp output_dir seed"
).split()


def main(argv):
    del argv
    parsed = _validate_flags()
    start = time.perf_counter()
    try:
        run_experiment(parsed, Path(FLAGS.output_dir))
    except ConfigMismatchError as error:
        raise app.UsageError(str(error)) from error
    log(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    run(main)
