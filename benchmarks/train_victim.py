"""Trains a CIFAR-10 victim resumably and writes its weights as a small fixture.

    python benchmarks/train_victim.py --model=resnet20 --epochs=15 \
        --data_dir=../shared/data --output_dir=tfleak/models/weights

Training goes through `tfleak.training.victims.train_victim` (SGD with Nesterov
momentum 0.9, cosine decay from 0.1, decoupled weight decay 5e-4, random
crops and flips; one checkpoint per epoch, so a killed run resumes after its
last finished epoch). With `--init_weights`, training starts from those weights instead of a fresh
initialisation: a second cosine cycle (a warm restart, Loshchilov & Hutter
2017) from `--learning_rate`, which is how the shipped ResNet-20 went past
its first 15 epochs:

    python benchmarks/train_victim.py --model=resnet20 --epochs=10 --learning_rate=0.05 \
        --init_weights=tfleak/models/weights/resnet20_cifar10.weights.h5 \
        --data_dir=../shared/data --output_dir=results/resnet20_restart

At the end the weights alone (no optimizer state) go to
`<output_dir>/<model>_cifar10.weights.h5` and the record (test accuracy on the
10,000 CIFAR-10 (JPEG) test images, seconds per epoch, versions) to
`<output_dir>/<model>_cifar10.json`; `tfleak.models.trained_victim(name)`
loads them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from absl import app, flags

flags.DEFINE_enum("model", "resnet20", ["resnet20", "resnet32", "convnet"], "Architecture.")
flags.DEFINE_integer("epochs", 15, "Passes over the 50,000 training images.")
flags.DEFINE_integer("seed", 0, "Seed of the initialisation, data order and augmentation.")
flags.DEFINE_string("data_dir", "../shared/data", "Folder holding cifar10/{train,test}.")
flags.DEFINE_string("output_dir", "tfleak/models/weights", "Where the fixture is written.")
flags.DEFINE_string("cache_dir", None, "Checkpoints and the full cache (default ~/.cache/tfleak).")
flags.DEFINE_string("init_weights", None, "Start from these .weights.h5 (a warm restart).")
flags.DEFINE_float("learning_rate", 0.1, "Peak SGD learning rate of the cosine schedule.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.epochs < 1:
        raise app.UsageError(f"--epochs must be at least 1; got {FLAGS.epochs}.")
    from tfleak.cli import require_finite

    require_finite("learning_rate", FLAGS.learning_rate, minimum=0.0, inclusive=(False, True))
    from tfleak.io import atomic_write, atomic_write_json, read_json
    from tfleak.models import VICTIMS
    from tfleak.training.victims import train_victim

    def build(seed):
        return VICTIMS[FLAGS.model]((32, 32, 3), 10, seed=seed)

    model, name, origin = build, FLAGS.model, None
    if FLAGS.init_weights:
        origin = Path(FLAGS.init_weights)
        if not origin.is_file():
            raise app.UsageError(f"--init_weights: no file {origin}.")
        model = build(FLAGS.seed)
        model.load_weights(str(origin))
        # Its own cache entry: the run depends on the very weights it started from.
        digest = hashlib.sha256(origin.read_bytes()).hexdigest()[:8]
        name = f"{FLAGS.model}_from_{digest}"
    model, accuracy = train_victim(
        model,
        name=name,
        learning_rate=FLAGS.learning_rate,
        epochs=FLAGS.epochs,
        data_dir=FLAGS.data_dir,
        seed=FLAGS.seed,
        cache_dir=FLAGS.cache_dir,
        verbose=2,
    )
    output = Path(FLAGS.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    weights = output / f"{FLAGS.model}_cifar10.weights.h5"
    atomic_write(weights, lambda path: model.save_weights(str(path), overwrite=True))
    command = (
        f"python benchmarks/train_victim.py --model={FLAGS.model} --epochs={FLAGS.epochs} "
        f"--seed={FLAGS.seed} --learning_rate={FLAGS.learning_rate} --data_dir=../shared/data "
        f"--output_dir={FLAGS.output_dir}"
    )
    record = {
        "model": FLAGS.model,
        "epochs": FLAGS.epochs,
        "seed": FLAGS.seed,
        "learning_rate": FLAGS.learning_rate,
        "test_accuracy": accuracy,
        "command": command + (f" --init_weights={origin}" if origin else ""),
    }
    if origin is not None:
        # Where the starting weights came from (their own record, if beside them).
        record["init_weights"] = read_json(origin.with_name(origin.name.split(".")[0] + ".json"))
    atomic_write_json(output / f"{FLAGS.model}_cifar10.json", record)
    print(json.dumps(record, indent=2))
    print(f"Wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    from tfleak.cli import run

    run(main)
