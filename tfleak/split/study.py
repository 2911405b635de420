"""The split-learning study's steps: train a target, attack one cut, score the attack.

One row of the study is one attacker against the codes one target sends at
one cut, possibly through a defence of the code:

- `train_target`: the plain target (Adam), a DP-Adam target
  (`tfleak.privacy.build_dp_target`, Abadi et al. 2016) or a NoPeek target
  (`NoPeekTarget`, Vepakomma et al. 2019), resumable from checkpoints.
- `attack_cut`: the decoder (black box, He, Zhang, Lee, ACSAC 2019, Section
  4.2) or the white box (Section 4.1) against the codes of the unseen test
  images, scored by MSE / PSNR / SSIM beside the mean image and by
  re-identification among all test images.
- `train_published_decoder`: the published decoder, trained for up to 100
  epochs with early stopping on a held-out slice of the surrogate images.
- `accuracy`: the target's validation accuracy when the server receives the
  (defended) code of a cut.

Library code: it takes plain arguments (a `settings` dict of the study's
hyperparameters), never flags; `benchmarks/split_study.py` drives it.
"""

from __future__ import annotations

import time
import zlib
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfleak import privacy
from tfleak.metrics import image_metrics
from tfleak.split.attack import AttackModel, compile_attacker, reconstruct
from tfleak.split.defenses import CodeNoise, NoPeekTarget
from tfleak.split.model import CODE_SHAPES, TargetModel, compile_target, device_stage, server_stage
from tfleak.split.reidentification import reidentify
from tfleak.split.whitebox import WhiteBoxInversion
from tfleak.training import train_resumable

__all__ = [
    "BATCH_SIZE",
    "NO_DEFENSE",
    "accuracy",
    "arrays",
    "attack_cut",
    "code_scales",
    "held_out_slice",
    "row_seed",
    "train_published_decoder",
    "train_target",
]

BATCH_SIZE = 32
NO_DEFENSE = CodeNoise("none", 0.0)
# Target kinds -> what the `strength` of `train_target` is.
TARGET_KINDS = {"plain": None, "dp": "noise multiplier", "nopeek": "alpha"}


def row_seed(seed: int, name: str) -> int:
    """A row's seed, a function of the study's seed and the row's name alone: a rerun with
    more or fewer rows gives every row it shares with another run the same numbers."""
    return seed + zlib.crc32(name.encode()) % 100_000


def arrays(dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Unbatched `(image, label)` elements -> images float32 `[n, 105, 105, 1]`, labels `[n]`."""
    images, labels = zip(*[(x.numpy(), int(y)) for x, y in dataset])
    return np.stack(images), np.array(labels)


def held_out_slice(dataset: tf.data.Dataset, every: int = 8):
    """`(train, held_out)`: every `every`-th element held out (for early stopping), the rest."""
    indexed = dataset.enumerate()
    keep = indexed.filter(lambda i, _: i % every != 0).map(lambda _, element: element)
    held = indexed.filter(lambda i, _: i % every == 0).map(lambda _, element: element)
    return keep.cache(), held.cache()


def accuracy(target: keras.Model, cut: int, defense: Callable, images, labels) -> float:
    """Accuracy when the server receives the device's codes of `cut` through `defense`.

    Args:
      target: a trained target (`TargetModel`, `NoPeekTarget` or `DPModel`).
      cut: conv blocks on the device, 1 to 4.
      defense: codes -> sent codes (`CodeNoise`; `NO_DEFENSE` sends them as they are).
      images: float32 `[n, 105, 105, 1]` in [0, 1]; labels: int `[n]`.
    """
    device, server = device_stage(target, cut), server_stage(target, cut)
    correct = 0
    for start in range(0, len(images), 128):
        codes = defense(device(images[start : start + 128], training=False))
        predicted = np.argmax(server(codes, training=False).numpy(), axis=1)
        correct += int(np.sum(predicted == labels[start : start + 128]))
    return correct / len(images)


def code_scales(target: keras.Model, cut: int, images) -> dict[str, float]:
    """Scales of a cut's codes of public (surrogate) images, the units of the code defences.

    Returns:
      `{'std': standard deviation of all code coordinates, 'l1_median': median
      L1 norm of one code}` (the Laplace mechanism's clip norm).
    """
    device = device_stage(target, cut)
    codes = np.concatenate(
        [device(images[i : i + 128]).numpy() for i in range(0, len(images), 128)]
    )
    return {
        "std": float(np.std(codes)),
        "l1_median": float(np.median(np.abs(codes).reshape(len(codes), -1).sum(1))),
    }


def train_target(
    kind: str,
    strength: float | None,
    scheme: dict,
    *,
    epochs: int,
    seed: int,
    checkpoint_dir,
    cut: int = 4,
    dp_variant: str = "per_example",
    log: Callable[[str], None] | None = print,
):
    """Trains (or resumes) one target on the scheme's `target_train`, validating on `target_val`.

    Args:
      kind: 'plain' (Adam 1e-3, dropout 0.2, batch norm), 'dp' (DP-Adam:
        batch norm as published, no dropout, clip 1, learning rate 0.005,
        one example per microbatch, `drop_remainder`) or 'nopeek' (as plain,
        plus alpha x distance correlation of the codes at `cut`).
      strength: 'dp': the noise multiplier (noise std / clip norm, > 0);
        'nopeek': alpha (>= 0); 'plain': None.
      scheme: `tfleak.data.omniglot.omniglot_scheme`'s datasets.
      epochs: training epochs; seed: seed of initialisation, shuffling, noise.
      checkpoint_dir: where the per-epoch checkpoint lives (resumed if present).
      cut: 'nopeek' only: the cut whose codes NoPeek decorrelates.
      dp_variant: 'dp' only: a key of `tfleak.privacy.DP_VARIANTS`.
      log: progress lines.

    Returns:
      `(model, run)`: the trained model and its `tfleak.training.TrainingRun`.

    Raises:
      ValueError: an unknown kind.
    """
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown target kind {kind!r}; choose one of {', '.join(TARGET_KINDS)}.")
    keras.utils.set_random_seed(seed)
    if kind == "dp":
        model = privacy.build_dp_target(
            strength, variant=dp_variant, norm="batch", batch_size=BATCH_SIZE
        )
        config = {
            "model": "dp_target_model(norm='batch')",
            "noise_multiplier": strength,
            "variant": dp_variant,
            "l2_norm_clip": 1.0,
            "learning_rate": 0.005,
        }
    elif kind == "nopeek":
        model = compile_target(NoPeekTarget(strength, cut=cut))
        config = {"model": f"NoPeekTarget(alpha={strength}, cut={cut})", "learning_rate": 1e-3}
    else:
        model = compile_target(TargetModel())
        config = {"model": "TargetModel(norm='batch', dropout_rate=0.2)", "learning_rate": 1e-3}
    run = train_resumable(
        model,
        scheme["target_train"],
        epochs=epochs,
        batch_size=BATCH_SIZE,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        config=config,
        validation_data=scheme["target_val"],
        drop_remainder=kind == "dp",
        log=log,
        name=checkpoint_dir.name if checkpoint_dir is not None else kind,
    )
    return model, run


def _score(originals, reconstructions, gallery, mean_image) -> dict:
    metrics = image_metrics(originals, reconstructions)
    mean_mse = float(np.mean((originals - mean_image[None]) ** 2))
    return {
        "images": len(originals),
        "gallery": len(gallery),
        "mse": metrics["mse"],
        "mean_image_mse": mean_mse,
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        **reidentify(reconstructions, gallery).as_dict(),
        "beats_mean_image": bool(metrics["mse"] < mean_mse),
    }


def _decoder_reconstructions(attacker, device, test_images) -> np.ndarray:
    return np.concatenate(
        [
            reconstruct(attacker, device, test_images[i : i + 64])
            for i in range(0, len(test_images), 64)
        ]
    )


def attack_cut(
    target: keras.Model,
    cut: int,
    attack: str,
    defense: CodeNoise,
    surrogates: tf.data.Dataset,
    test_images: np.ndarray,
    mean_image: np.ndarray,
    settings: dict,
    seed: int,
    log: Callable[[str], None] | None = print,
) -> tuple[dict, np.ndarray]:
    """One attacker against the codes a target sends at one cut, through one defence.

    The attacker knows the defence: the decoder trains on defended codes of
    the surrogates; the white box matches the defended code.

    Args:
      target: a trained target; cut: conv blocks on the device, 1 to 4.
      attack: 'decoder' or 'whitebox'.
      defense: what the device does to a code before sending it.
      surrogates: the attacker's unbatched `(image, label)` training images.
      test_images: float32 `[n, 105, 105, 1]` the attacker never saw (all of
        them are the re-identification gallery; the white box inverts the
        first `settings['whitebox_images']`).
      mean_image: float32 `[105, 105, 1]`, the mean surrogate image (the
        baseline to beat, and the white box's start).
      settings: `attacker_epochs`, `attacker_learning_rate`, `whitebox_images`,
        `whitebox_steps`, `whitebox_learning_rate`, `whitebox_tv`.
      seed: seed of the decoder's initialisation and of the code noise.

    Returns:
      `(row, reconstructions)`: the row's measurements (cut, code shape,
      defence, MSE, mean-image MSE, PSNR, SSIM, re-identification top-1 and
      top-5 with chance, seconds) and the reconstructions `[images, 105, 105, 1]`.

    Raises:
      ValueError: an unknown attack.
    """
    if attack not in ("decoder", "whitebox"):
        raise ValueError(f"unknown attack {attack!r}; choose 'decoder' or 'whitebox'.")
    keras.utils.set_random_seed(seed)
    device = device_stage(target, cut)
    start = time.perf_counter()
    if attack == "decoder":
        attacker = compile_attacker(
            AttackModel(device, defense=defense), settings["attacker_learning_rate"]
        )
        run = train_resumable(
            attacker,
            surrogates,
            epochs=settings["attacker_epochs"],
            batch_size=BATCH_SIZE,
            seed=seed,
            log=log,
            name="decoder",
        )
        originals = test_images
        reconstructions = _decoder_reconstructions(attacker, device, test_images)
        extra = {"decoder_train_loss_last_epoch": run.final.get("loss")}
    else:
        originals = test_images[: settings["whitebox_images"]]
        result = WhiteBoxInversion(
            device,
            steps=settings["whitebox_steps"],
            learning_rate=settings["whitebox_learning_rate"],
            tv_weight=settings["whitebox_tv"],
            init=mean_image,
        )(defense(device(originals, training=False)).numpy())
        reconstructions = result.reconstructions
        extra = {"whitebox": repr(result)}
    row = {
        "cut": cut,
        "code_shape": list(CODE_SHAPES[cut]),
        "attack": attack,
        "defense": defense.mechanism,
        "epsilon_local": defense.epsilon_local,
        **_score(originals, reconstructions, test_images, mean_image),
        "seconds": time.perf_counter() - start,
        **extra,
    }
    return row, reconstructions


def train_published_decoder(
    target: keras.Model,
    surrogates: tf.data.Dataset,
    test_images: np.ndarray,
    mean_image: np.ndarray,
    *,
    epochs: int = 100,
    patience: int = 5,
    learning_rate: float = 0.005,
    seed: int = 0,
    checkpoint_dir=None,
    log: Callable[[str], None] | None = print,
) -> tuple[dict, np.ndarray]:
    """The published decoder at the published cut (1x1x32), trained as published.

    Four transposed convolutions (`decoder_layers`), Adam on the MSE, batch 32,
    for up to `epochs` epochs on the surrogate images as they are (no
    augmentation), stopping when the MSE on a held-out eighth of them
    (`held_out_slice`) has not improved for `patience` epochs and restoring
    its best epoch.

    Returns:
      `(row, reconstructions)` as `attack_cut`'s, plus `train_loss` (Keras's
      running mean of the best epoch's training MSE: what the published 0.041
      is), `train_mse` (the same images evaluated after training),
      `held_out_mse`, `epochs_run` and `best_epoch`.
    """
    keras.utils.set_random_seed(seed)
    device = device_stage(target, 4)
    train, held_out = held_out_slice(surrogates)
    attacker = compile_attacker(AttackModel(device), learning_rate)
    start = time.perf_counter()
    run = train_resumable(
        attacker,
        train,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        config={
            "model": "AttackModel (published decoder, cut 4)",
            "learning_rate": learning_rate,
            "held_out": "every 8th surrogate",
        },
        validation_data=held_out,
        early_stopping=("val_loss", patience),
        log=log,
        name="published decoder",
    )
    evaluate = {"batch_size": 64, "return_dict": True, "verbose": 0}
    reconstructions = _decoder_reconstructions(attacker, device, test_images)
    row = {
        "cut": 4,
        "code_shape": list(CODE_SHAPES[4]),
        "attack": "decoder_published",
        "defense": "none",
        "epsilon_local": None,
        **_score(test_images, reconstructions, test_images, mean_image),
        "seconds": time.perf_counter() - start,
        "train_loss": run.final.get("loss"),
        "train_mse": attacker.evaluate(train.batch(64), **evaluate)["loss"],
        "held_out_mse": attacker.evaluate(held_out.batch(64), **evaluate)["loss"],
        "epochs_run": len(run.history),
        "best_epoch": run.final.get("epoch"),
    }
    return row, reconstructions
