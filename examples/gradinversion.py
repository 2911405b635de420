"""Gradient inversion of a private batch: DLG, iDLG, Inverting Gradients, GradInversion.

A federated client shares an update of the model computed on its private batch:
one gradient (FedSGD) or the weight change after local SGD steps (FedAvg),
perhaps through a defence (noise, DP-SGD, pruning, quantisation). The server,
which holds the weights, optimises dummy images until their update matches the
shared one. This script plays both parts with any of the four attacks, then
matches the reconstruction to the true batch and scores it.

    python examples/gradinversion.py --attack=inverting_gradients --model=resnet20 \
        --data_dir=../shared/data --batch_size=4 --iterations=2000
    python examples/gradinversion.py --attack=gradinversion --trained \
        --data_dir=../shared/data --batch_size=8 --starts=4
    python examples/gradinversion.py --attack=idlg --model=lenet --data_dir=../shared/data \
        --indices=3000 --update=fedavg:2/0.01 --defense=prune:0.5 --adaptive

It writes into --output_dir: metrics.json, reconstruction.png (the true batch
above the matched reconstruction) and progress.gif.
"""

import tfleak  # first: TensorFlow's start-up lines stay off the terminal

# isort: split
import dataclasses

import numpy as np
import tensorflow as tf
from absl import app, flags

from tfleak import plotting
from tfleak.io import atomic_write_json, check_writable_dir
from tfleak.threats.defenses import DefendedUpdate, parse_defenses
from tfleak.threats.federated import parse_update

ATTACKS = {
    "dlg": tfleak.DLG,
    "idlg": tfleak.IDLG,
    "inverting_gradients": tfleak.InvertingGradients,
    "gradinversion": tfleak.GradInversion,
}

FLAGS = flags.FLAGS
flags.DEFINE_enum("attack", "inverting_gradients", list(ATTACKS), "The attack.")
flags.DEFINE_enum("model", "resnet20", sorted(tfleak.models.VICTIMS), "Victim architecture.")
flags.DEFINE_bool("trained", False, "Victim: ResNet-20 with tfleak's CIFAR-10 weights.")
flags.DEFINE_enum("batch_norm", "train", ["train", "eval"], "Client's batch-norm mode.")
flags.DEFINE_enum("dataset", "cifar10", ["cifar10", "mnist", "folder", "sample"], "Data.")
flags.DEFINE_string("data_dir", None, "Dataset files, or for 'folder' one sub-folder per class.")
flags.DEFINE_integer("batch_size", 1, "Examples in the private batch (distinct labels).")
flags.DEFINE_list("indices", None, "Test rows of the batch (default: drawn by --seed).")
flags.DEFINE_string("update", "gradient", "What the client shares: gradient, fedavg:K/LR[/B].")
flags.DEFINE_multi_string("defense", [], "Defence NAME:STRENGTH (noise:1e-3, prune:0.9, ...).")
flags.DEFINE_bool("adaptive", False, "The attacker applies the defences' deterministic part.")
flags.DEFINE_string("labels", None, "Label strategy: known, optimize, idlg, counts, ...")
flags.DEFINE_integer("iterations", None, "Optimiser steps per trial (default: the attack's).")
flags.DEFINE_float("learning_rate", None, "Step size of Adam attacks (default: the attack's).")
flags.DEFINE_integer("starts", None, "Random starts optimised together (GradInversion's group).")
flags.DEFINE_integer("restarts", None, "Further trials from new starts (default: the attack's).")
flags.DEFINE_integer("seed", 0, "Seed of the drawn batch and of the dummy data.")
flags.DEFINE_string("output_dir", "results/gradinversion", "Where the results are written.")


def main(argv):
    del argv
    # The library checks every value and says what to pass instead: that one line is the error.
    try:
        run_attack()
    except (ValueError, FileNotFoundError, PermissionError) as error:
        raise app.UsageError(str(error)) from error


def run_attack():
    output_dir = check_writable_dir(FLAGS.output_dir)
    # What the client releases, built from strings: 'fedavg:2/0.01' is two local
    # SGD steps at learning rate 0.01; each --defense is applied in order.
    update, defenses = parse_update(FLAGS.update), parse_defenses(FLAGS.defense)
    if FLAGS.adaptive and not defenses:
        raise ValueError("--adaptive applies a defence's deterministic part; add --defense.")
    release = DefendedUpdate(update, defenses, FLAGS.adaptive) if defenses else update
    # The attack simulates that same release on its dummy data. Only the
    # settings given are passed; the rest are the paper's.
    names = ("iterations", "learning_rate", "starts", "restarts")
    settings = {name: FLAGS[name].value for name in names if FLAGS[name].value is not None}
    if FLAGS.labels:
        settings["label_strategy"] = FLAGS.labels
    attack = ATTACKS[FLAGS.attack](update=release, seed=FLAGS.seed, **settings)
    if FLAGS.trained and (FLAGS.model != "resnet20" or FLAGS.dataset != "cifar10"):
        raise ValueError("--trained loads ResNet-20 weights trained on CIFAR-10: pass "
                         "--model=resnet20 and --dataset=cifar10, or drop --trained.")  # fmt: skip

    # The private batch: the rows asked for, or one image of each of
    # --batch_size classes drawn from the labels of the whole test split.
    if FLAGS.indices:
        indices = np.array([int(i) for i in FLAGS.indices])
    else:
        every = tfleak.data.load_dataset(FLAGS.dataset, "test", FLAGS.data_dir)
        indices = tfleak.data.sample_batch(every.labels, FLAGS.batch_size, seed=FLAGS.seed)
    batch = tfleak.data.load_dataset(FLAGS.dataset, "test", FLAGS.data_dir, indices=indices)
    images, labels = batch.images, batch.labels

    # The client computes its release with the victim's current weights.
    if FLAGS.trained:
        victim = tfleak.models.trained_victim("resnet20", batch_norm=FLAGS.batch_norm)
    else:
        victim = tfleak.models.get_victim(
            FLAGS.model, images.shape[1:], batch.num_classes, batch_norm=FLAGS.batch_norm
        )
    tf.random.set_seed(FLAGS.seed)  # DP-SGD's noise
    observed = release.share(victim, images, tf.constant(labels), seed=FLAGS.seed)

    print(f"Attacking {batch.description} rows {indices.tolist()} (labels {labels.tolist()}) "
          f"shared by {victim!r} as {release!r}\nwith {attack!r}")  # fmt: skip
    known = labels if attack.label_strategy == "known" else None
    result = attack(victim, observed, labels=known, ground_truth=(images, labels))

    summary = {
        **result.metrics,  # matched means psnr, ssim, mse; per image; label_accuracy
        **{k: getattr(result, k) for k in ("success", "message", "iterations", "seconds")},
        "labels_true": labels.tolist(),
        "labels_pred": None if result.labels is None else result.labels.tolist(),
        "dataset": batch.description,
        "indices": indices.tolist(),
        "model": "resnet20 (trained)" if FLAGS.trained else FLAGS.model,
        "update": FLAGS.update,
        "defense": [d.spec for d in defenses],
        "epsilon": release.epsilon(batch_size=len(labels)) if defenses else None,
        "attack": type(attack).__name__,
        "hyperparameters": dataclasses.asdict(attack),
    }
    atomic_write_json(output_dir / "metrics.json", summary)  # strict JSON: NaN becomes null
    if not result.history:  # every start diverged: no image to show
        print(f"FAILED: {result.message}")
        return
    save_figures(images, result, output_dir)
    print(f"PSNR {summary['psnr']:.2f} dB (matched mean), SSIM {summary['ssim']:.4f}, label "
          f"accuracy {summary['label_accuracy']:.2f}, {result.seconds:.1f} s")  # fmt: skip
    print(f"Wrote {output_dir}/metrics.json, reconstruction.png, progress.gif")


def save_figures(images, result, output_dir):
    """The true batch above the matched reconstruction; the batch over time as a GIF."""
    plotting.plot_image_rows(
        [list(images), list(result.reconstruction[result.metrics["order"]])],
        output_dir / "reconstruction.png",
        row_titles=["truth", "reconstruction"],
        column_titles=[f"{p:.1f} dB" for p in result.metrics["psnr_per_image"]],
        title=f"{type(result.attack).__name__}: PSNR {result.metrics['psnr']:.1f} dB (matched)",
    )
    plotting.save_progress_gif(
        [np.concatenate(list(s.images), axis=1) for s in result.history],
        output_dir / "progress.gif",
        captions=[f"iteration {s.iteration}" for s in result.history],
    )


if __name__ == "__main__":
    tfleak.cli.run(main)
