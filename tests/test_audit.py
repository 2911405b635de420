"""tfleak.audit on a user's own small Keras model and a real image folder."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfleak
from tfleak.audit import ATTACKS, DEFAULT_ATTACKS


@pytest.fixture(scope="module")
def image_folder(shared_data, tmp_path_factory):
    """A user's folder: two real CIFAR-10 (JPEG) test images each of 'cat' and 'ship'."""
    root = tmp_path_factory.mktemp("photos")
    for name in ("cat", "ship"):
        (root / name).mkdir()
        for path in sorted((shared_data / "cifar10" / "test" / name).iterdir())[:2]:
            shutil.copy(path, root / name / path.name)
    return root


def _user_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 4, strides=4, activation="sigmoid"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_audit_of_a_user_model_on_an_image_folder_writes_its_report(image_folder, tmp_path):
    model = _user_model()
    weights = [w.copy() for w in model.get_weights()]
    report = tfleak.audit(
        model,
        image_folder,
        defenses=[None, "prune:0.5"],
        attacks=["inverting_gradients"],
        batches=1,
        iterations=100,
        output_dir=tmp_path,
        verbose=0,
    )
    clean, pruned = report.settings
    assert (clean.defense, pruned.defense) == ("none", "prune:0.5")
    # Measured: 19.3 dB without a defence, 14.7 dB with half of each tensor pruned.
    assert clean.psnr > 16.0 and clean.label_accuracy == 1.0
    assert clean.psnr > pruned.psnr
    assert clean.recovered_20db in (0.0, 1.0) and clean.images == 1
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["settings"][0]["psnr"] == pytest.approx(clean.psnr)
    assert "| FedSGD() | prune:0.5 | inverting_gradients |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "worst_leaks.png").stat().st_size > 0
    # The user's model was never changed.
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_audit_takes_a_dataset_and_skips_what_the_budget_does_not_allow():
    images = tf.random.stateless_uniform((2, 32, 32, 3), seed=[0, 1])
    dataset = tf.data.Dataset.from_tensor_slices((images, tf.constant([0, 1])))
    report = tfleak.audit(_user_model(), dataset, iterations=5, time_budget_s=0, verbose=0)
    # By default every attack, cheapest first; closed-form recovery cannot determine the
    # image through a 4x4 stride-4 convolution (512 units + 384 kernel weights < 3072 values).
    assert [s.attack for s in report.settings] == list(DEFAULT_ATTACKS)
    analytic, *others = report.settings
    assert analytic.skipped.startswith("does not apply:") and "fewer equations" in analytic.skipped
    assert [s.skipped for s in others] == ["time budget of 0 s spent"] * 2
    assert "skipped: time budget" in report.to_markdown()


def _tiny_cnn():
    # Where L-BFGS's line search gives up before the tolerance (it crashed attack_many).
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def _tiny_mlp(shape=(8, 8, 1), classes=3):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(classes),
        ]
    )


def _two_images(shape=(8, 8, 1)):
    images = tf.random.stateless_uniform((2, *shape), seed=[0, 1])
    return tf.data.Dataset.from_tensor_slices((images, tf.constant([0, 1])))


def test_idlg_audit_survives_a_line_search_that_gives_up():
    report = tfleak.audit(_tiny_cnn(), _two_images(), attacks=["idlg"], iterations=50, verbose=0)
    (setting,) = report.settings
    assert not setting.skipped and setting.images == 2 and setting.label_accuracy == 1.0
    assert setting.psnr is not None


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_the_audit_accepts_runs(attack):
    report = tfleak.audit(_tiny_mlp(), _two_images(), attacks=[attack], iterations=5, verbose=0)
    (setting,) = report.settings
    assert setting.attack == attack and not setting.skipped
    assert setting.images == 2 and len(setting.psnr_per_image) == 2
    assert report.worst_cases[0].attacks == [attack]


def test_default_audit_reports_an_mlps_exact_leak_first(mnist, tmp_path):
    images, labels = mnist.images[:2], mnist.labels[:2]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    report = tfleak.audit(
        _tiny_mlp((28, 28, 1), classes=10), dataset, iterations=5, output_dir=tmp_path, verbose=0
    )
    analytic, idlg, inverting = report.settings
    assert analytic.attack == "analytic" and analytic.exact_per_image == [True, True]
    assert analytic.psnr_per_image == [100.0, 100.0]
    # Nothing is left to find once every image leaked exactly.
    assert idlg.skipped == inverting.skipped == "every image already recovered exactly by analytic"
    worst = report.worst_case()
    assert worst.exact == 1.0 and worst.attack_per_image == ["analytic", "analytic"]
    markdown = report.to_markdown()
    assert markdown.index("Worst case") < markdown.index("## Every attack")
    assert "2 of 2 images recovered exactly" in markdown
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["worst_cases"][0]["found_by"] == "analytic (2)"


@pytest.mark.parametrize(
    "make_model, data, message",
    [
        (
            lambda: keras.Sequential(
                [
                    keras.Input((32, 32, 3)),
                    keras.layers.Conv2D(2, 3),
                    keras.layers.GlobalAveragePooling2D(),
                ]
            ),
            None,
            "does not end in a Dense classifier .*GlobalAveragePooling2D",
        ),
        (
            _user_model,
            tf.data.Dataset.from_tensor_slices((tf.zeros((2, 16, 16, 3)), tf.constant([0, 1]))),
            r"images are shaped \[16, 16, 3\] but sequential.* takes \[32, 32, 3\]",
        ),
        (_user_model, "empty", "has no|one class folder|no image"),
        (lambda: "model.keras", None, "no model file at model.keras"),
        (lambda: 3, None, "needs a keras.Model .*got int"),
    ],
    ids=[
        "no-dense-classifier",
        "wrong-input-shape",
        "empty-folder",
        "no-model-file",
        "not-a-model",
    ],
)
def test_audit_refuses_what_it_cannot_attack(make_model, data, message, tmp_path):
    if data == "empty":
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        data = tmp_path
    data = data if data is not None else tmp_path
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        tfleak.audit(make_model(), data, verbose=0)
