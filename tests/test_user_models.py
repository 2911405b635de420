"""A user's own Keras 3 model is attacked as it is: subclassed, saved, or refused with a reason."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfleak
from tfleak.models.loss import soft_cross_entropy


class TutorialNet(keras.Model):
    """The tutorial's victim: Flatten, Dense, and `gradient(x, y)` under a tape."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(
            num_classes, kernel_initializer=keras.initializers.RandomUniform(-0.5, 0.5, seed=0)
        )

    def call(self, x):
        return self.dense(self.flatten(x))

    def gradient(self, x, y):
        # y: [batch, classes] label probabilities (one-hot for true labels).
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(soft_cross_entropy(y, self(x)))
        return tape.gradient(loss, self.trainable_variables)


class SoftmaxNet(keras.Model):
    """A subclassed model without `gradient`, returning probabilities."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, activation="sigmoid")
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(10, activation="softmax")

    def call(self, x, training=False):
        return self.dense(self.flatten(self.conv(x)))


def test_subclassed_model_with_its_own_gradient_is_recovered_by_dlg(mnist):
    model = TutorialNet()
    image, label = mnist.images[1:2], mnist.labels[1:2]
    model(image)
    observed = model.gradient(image, tf.one_hot(label, 10))
    result = tfleak.DLG(seed=0)(model, observed, ground_truth=(image, label), verbose=0)
    assert result.metrics["psnr"] >= 30.0, result
    assert result.labels.tolist() == label.tolist()


def test_subclassed_model_is_attacked_through_its_call(mnist):
    model = SoftmaxNet()
    image, label = mnist.images[3:4], mnist.labels[3:4]
    model(image)
    before = [w.numpy().copy() for w in model.weights]
    victim = tfleak.as_victim(model)
    # Softmax outputs are read as logits log p: the same cross entropy.
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(label, model(image))
    expected = tape.gradient(loss, model.trainable_variables)
    observed = victim.gradient(image, label)
    for want, got in zip(expected, observed):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
    result = tfleak.IDLG(seed=0)(victim, observed, ground_truth=(image, label), verbose=0)
    assert result.labels.tolist() == label.tolist()
    assert result.metrics["psnr"] >= 25.0, result
    for want, got in zip(before, model.weights):
        np.testing.assert_array_equal(want, got.numpy())


def test_a_model_saved_by_keras_3_is_attacked_from_its_file(tmp_path, mnist):
    model = tfleak.models.lenet((28, 28, 1), 10)
    path = tmp_path / "lenet.keras"
    model.save(path)
    stamp = path.stat().st_mtime_ns
    victim = tfleak.as_victim(path)
    image, label = mnist.images[1:2], mnist.labels[1:2]
    expected = tfleak.as_victim(model).gradient(image, label)
    for want, got in zip(expected, victim.gradient(image, label)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)
    assert path.stat().st_mtime_ns == stamp


def _keras_file(path, version):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": version}))
        archive.writestr("config.json", "{}")
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: _keras_file(tmp / "old.keras", "2.15.0"), "saved by Keras 2.15.0.*Keras 3"),
        (lambda tmp: tmp / "missing.keras", "no model file at"),
        (lambda tmp: _keras_file(tmp / "m.h5", "3.15.1"), "is not a .keras file"),
    ],
    ids=["keras-2-file", "missing-file", "not-keras-format"],
)
def test_bad_model_files_are_refused_with_the_fix(tmp_path, make, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        tfleak.as_victim(make(tmp_path))


def test_a_custom_class_that_cannot_be_imported_is_named(tmp_path):
    @keras.saving.register_keras_serializable(package="elsewhere")
    class Scale(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(Scale()(inputs)))
    path = tmp_path / "custom.keras"
    keras.Model(inputs, outputs).save(path)
    keras.saving.get_custom_objects().pop("elsewhere>Scale")
    with pytest.raises(ValueError, match="custom class cannot be imported.*register_keras_"):
        tfleak.as_victim(path)


def test_keras_2_model_objects_are_refused():
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(4,))])
    with pytest.raises(ValueError, match=r"Keras 2 \(tf_keras\) model; tfleak needs Keras 3"):
        tfleak.as_victim(model)


def test_a_victims_own_model_is_wrapped_again_in_the_other_batch_norm_mode(mnist):
    # `trained_victim(...).model` handed back to `as_victim`, as a benchmark does.
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = keras.layers.BatchNormalization()(h)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    model.layers[2].moving_mean.assign(np.full(4, 0.3, np.float32))
    images, labels = mnist.images[:2], mnist.labels[:2]
    again = tfleak.as_victim(tfleak.as_victim(model, batch_norm="train").model, batch_norm="eval")
    expected = tfleak.as_victim(model, batch_norm="eval").gradient(images, labels)
    for got, want in zip(again.gradient(images, labels), expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)


def test_subclassed_dropout_in_training_mode_is_refused():
    class Dropped(keras.Model):
        def __init__(self):
            super().__init__()
            self.flatten = keras.layers.Flatten()
            self.drop = keras.layers.Dropout(0.5)
            self.dense = keras.layers.Dense(3)

        def call(self, x, training=False):
            return self.dense(self.drop(self.flatten(x), training=training))

    model = Dropped()
    model(tf.zeros((1, 8, 8, 1)))
    with pytest.raises(ValueError, match="Dropout.*batch_norm='eval'"):
        tfleak.as_victim(model)
    assert tfleak.as_victim(model, batch_norm="eval").num_classes == 3


def test_examples_audit_reports_a_keras_3_saved_mlp_leaking_exactly(shared_data, tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    # A user's folder: two CIFAR-10 (JPEG) test photographs, one per class folder.
    for name in ("cat", "ship"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        source = sorted((shared_data / "cifar10" / "test" / name).glob("*.jpg"))[0]
        shutil.copy(source, tmp_path / "photos" / name / source.name)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.save(tmp_path / "mlp.keras")
    script = Path(__file__).resolve().parents[1] / "examples" / "audit.py"
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    process = subprocess.run(
        [
            sys.executable,
            str(script),
            f"--model_path={tmp_path / 'mlp.keras'}",
            f"--data_dir={tmp_path / 'photos'}",
            f"--output_dir={tmp_path / 'audit'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert "I0000" not in process.stderr  # TensorFlow's start-up lines stay quiet
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    worst = report["worst_cases"][0]
    assert worst["exact"] == 1.0, worst  # every 8-bit pixel of every photograph
    assert "analytic" in worst["found_by"]
