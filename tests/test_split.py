"""The split target, its attacker, and resumable training, on real Omniglot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfleak import split
from tfleak.data.omniglot import omniglot_scheme
from tfleak.io import atomic_write_text
from tfleak.split import report, runner, study
from tfleak.split.defenses import CodeNoise, NoPeekTarget, distance_correlation
from tfleak.split.reidentification import reidentify
from tfleak.split.whitebox import WhiteBoxInversion
from tfleak.training import ConfigMismatchError


@pytest.fixture(scope="module")
def scheme(shared_data):
    return omniglot_scheme("offline", shared_data)


@pytest.mark.parametrize("batch, norm", [(1, "batch"), (3, "batch"), (3, "group")])
def test_code_and_reconstruction_shapes(batch, norm):
    target = split.TargetModel(norm=norm)
    images = tf.random.uniform([batch, 105, 105, 1])
    code = target.mobile_step(images)
    assert code.shape == (batch, 1, 1, 32)
    assert target.server_step(code).shape == (batch, 50)
    np.testing.assert_allclose(target(images).numpy().sum(axis=1), 1.0, rtol=1e-5)
    attacker = split.AttackModel(target.on_device_model)
    assert attacker(code).shape == (batch, 105, 105, 1)


@pytest.mark.parametrize("cut, shape", sorted(split.CODE_SHAPES.items()))
def test_the_cut_after_any_block_sends_that_blocks_output(cut, shape):
    """105 -conv7-> 99 -pool3/3-> 33 -conv7-> 27 -pool3/2-> 13 -conv5-> 9 -pool2/2-> 4
    -conv3-> 2 -pool2/2-> 1: the code after block k, and the same network whatever the cut."""
    target = split.TargetModel(cut=cut)
    images = tf.random.uniform([2, 105, 105, 1])
    assert target.code_shape == shape
    assert target.mobile_step(images).shape == (2, *shape)
    assert target(images).shape == (2, 50)
    assert target.count_params() == split.TargetModel().count_params()
    with pytest.raises(ValueError, match="cut must be one of 1, 2, 3, 4"):
        split.TargetModel(cut=5)


def test_attacker_beats_mean_image_baseline(scheme):
    """A briefly trained attacker inverts unseen Tagalog codes better than the mean image.

    Predicting the attacker's mean training image scores MSE ~0.070 on the Tagalog
    test images (strokes are ~8% of pixels); the attacker has to recover where
    the strokes of each test image are from its 32 numbers.
    """
    keras.utils.set_random_seed(0)
    target = split.compile_target(split.TargetModel())
    split.train_resumable(
        target, scheme["target_train"].take(1024), epochs=1, batch_size=32, log=None
    )
    attacker = split.compile_attacker(split.AttackModel(target.on_device_model), 0.01)
    split.train_resumable(attacker, scheme["attacker_train"], epochs=6, batch_size=32, log=None)
    metrics, originals, reconstructions = split.evaluate_attack(
        attacker, target.on_device_model, scheme["attacker_test"]
    )
    baseline = split.mean_image_baseline_mse(scheme["attacker_train"], scheme["attacker_test"])
    assert originals.shape == reconstructions.shape == (340, 105, 105, 1)
    assert 0.06 < baseline < 0.08
    assert metrics["mse"] < baseline, (metrics, baseline)


class _Crash(keras.callbacks.Callback):
    """Raises during the second epoch, as a killed run would stop."""

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) == 6:  # 4 steps per epoch: mid epoch 2.
            raise RuntimeError("killed")


def _train(scheme, checkpoint_dir, callbacks=(), seed=7):
    keras.utils.set_random_seed(7)  # A new process builds the same initial model.
    target = split.compile_target(split.TargetModel())
    run = split.train_resumable(
        target,
        scheme["target_train"].take(128),
        epochs=3,
        batch_size=32,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        validation_data=scheme["target_val"].take(32),
        callbacks=callbacks,
        log=None,
    )
    return target, run


@pytest.mark.slow
def test_killed_and_resumed_training_matches_uninterrupted(scheme, tmp_path):
    """Same weights, Adam state and metrics, although dropout and shuffling are random."""
    uninterrupted, run = _train(scheme, tmp_path / "once")
    with pytest.raises(RuntimeError, match="killed"):
        _train(scheme, tmp_path / "killed", callbacks=[_Crash()])
    resumed, resumed_run = _train(scheme, tmp_path / "killed")
    assert resumed_run.resumed_from_epoch == 1
    assert [h["loss"] for h in resumed_run.history] == pytest.approx(
        [h["loss"] for h in run.history], rel=1e-6
    )
    for a, b in zip(uninterrupted.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for model in (uninterrupted, resumed):
        assert int(model.optimizer.iterations) == 12
    # Adam's step count, learning rate and moments, restored with the weights.
    assert len(resumed.optimizer.variables) == 2 + 2 * len(resumed.trainable_variables)
    for a, b in zip(uninterrupted.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-7)
    # Shuffling and dropout do matter: another seed ends elsewhere from the same start.
    other, _ = _train(scheme, tmp_path / "other", seed=8)
    assert not np.allclose(other.get_weights()[0], uninterrupted.get_weights()[0], atol=1e-6)


def test_train_resumable_refuses_too_little_data(scheme):
    target = split.compile_target(split.TargetModel())
    with pytest.raises(ValueError, match="no whole batch of 32"):
        split.train_resumable(
            target, scheme["target_val"].take(8), epochs=1, batch_size=32, drop_remainder=True
        )


def _tiny_run(scheme, checkpoint_dir, **kwargs):
    keras.utils.set_random_seed(0)
    target = split.compile_target(split.TargetModel())
    arguments = dict(epochs=1, batch_size=32, checkpoint_dir=checkpoint_dir, log=None)
    return split.train_resumable(target, scheme["target_train"].take(64), **arguments | kwargs)


def test_resuming_under_another_configuration_is_refused_or_restarted(scheme, tmp_path):
    _tiny_run(scheme, tmp_path, config={"learning_rate": 0.001})
    with pytest.raises(ConfigMismatchError, match="learning_rate: 0.001 -> 0.01"):
        _tiny_run(scheme, tmp_path, config={"learning_rate": 0.01}, epochs=2)
    with pytest.raises(ConfigMismatchError, match="seed: 0 -> 1"):
        _tiny_run(scheme, tmp_path, config={"learning_rate": 0.001}, seed=1)
    # The same configuration resumes; 'restart' discards the old run and says so.
    same = _tiny_run(scheme, tmp_path, config={"learning_rate": 0.001}, epochs=2)
    assert same.resumed_from_epoch == 1 and not same.restarted
    lines = []
    fresh = _tiny_run(scheme, tmp_path, config={"learning_rate": 0.01}, epochs=1,
                      on_config_change="restart", log=lines.append)  # fmt: skip
    assert fresh.restarted and fresh.resumed_from_epoch == 0
    assert any("training from scratch" in line for line in lines)


def test_a_checkpoint_it_did_not_write_is_not_resumed(scheme, tmp_path):
    """A TensorFlow-format checkpoint (an older tfleak's) is refused, or discarded on
    'restart'; it is never silently trained over."""
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n')
    (tmp_path / "ckpt-3.index").write_bytes(b"")
    with pytest.raises(ConfigMismatchError, match="TensorFlow-format checkpoint"):
        _tiny_run(scheme, tmp_path)
    run = _tiny_run(scheme, tmp_path, on_config_change="restart")
    assert run.restarted and run.resumed_from_epoch == 0
    assert not (tmp_path / "checkpoint").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.json", "config.json", "epoch-0001.weights.h5", "history.json",
    ]  # fmt: skip


def test_a_half_written_history_does_not_stop_a_resume(scheme, tmp_path):
    """A history.json cut short (as a non-atomic writer killed mid-write leaves it) is
    treated as lost: the run resumes from its checkpoint and marks the missing epoch."""
    _tiny_run(scheme, tmp_path)
    atomic_write_text(tmp_path / "history.json", '[{"loss": 1.2, "epo')
    run = _tiny_run(scheme, tmp_path, epochs=2)
    assert run.resumed_from_epoch == 1
    assert run.history[0] == {"epoch": 1, "history_lost": True}
    assert run.final["epoch"] == 2 and np.isfinite(run.final["loss"])
    assert json.loads((tmp_path / "history.json").read_text())[1]["epoch"] == 2


def test_checkpoint_with_more_epochs_than_asked_is_explained(scheme, tmp_path):
    _tiny_run(scheme, tmp_path, epochs=2)
    with pytest.raises(ValueError, match="already holds 2 epochs, more than the 1"):
        _tiny_run(scheme, tmp_path, epochs=1)


def _test_images(scheme, count):
    return np.stack([image.numpy() for image, _ in scheme["attacker_test"].take(count)])


def test_white_box_inverts_a_shallow_code_of_a_real_image(scheme):
    """He et al.'s rMLE recovers a Tagalog test image from a shallow split's code.

    Cut after the first block (conv 7x7, batch norm, pool 3/3: a 33 x 33 x 32 code) of
    an untrained target: 200 Adam steps from the mean surrogate image reach MSE ~1e-4
    (measured 1.3e-4), against 0.040 for the mean image itself, a 300x margin.
    """
    keras.utils.set_random_seed(0)
    stage = split.TargetModel(cut=1).on_device_model
    image = _test_images(scheme, 1)
    mean = split.mean_image(scheme["attacker_train"])
    attack = WhiteBoxInversion(stage, steps=200, learning_rate=0.05, tv_weight=0.01, init=mean)
    result = attack(stage(image).numpy())
    baseline = float(np.mean((image - mean) ** 2))
    mse = float(np.mean((result.reconstructions - image) ** 2))
    assert 0.03 < baseline < 0.05
    assert mse < baseline / 30, (mse, baseline)
    assert result.reconstructions.min() >= 0 and result.reconstructions.max() <= 1
    assert "steps=200" in repr(result) and "tv_weight=0.01" in repr(attack)


@pytest.fixture(scope="module")
def brief_target(scheme):
    """The split target after one epoch on 512 small1 images (as the study trains it, shorter).

    The network is the same whatever the cut, so this one model serves every cut
    through `split.device_stage`.
    """
    keras.utils.set_random_seed(0)
    target = split.compile_target(split.TargetModel())
    split.train_resumable(target, scheme["target_train"].take(512), epochs=1, batch_size=32,
                          log=None)  # fmt: skip
    return target


@pytest.mark.parametrize("cut, shape", sorted(split.CODE_SHAPES.items()))
def test_stages_of_any_cut_share_the_trained_weights_and_the_decoder_follows(cut, shape):
    """`device_stage` then `server_stage` is the whole target at every cut, and the decoder
    built on a stage reads the code's shape from it: 33 -(3, /3)-> 99 -(7)-> 105 for cut 1,
    13 -> 27 -> 33 -> 99 -> 105 for cut 2, the published 1 -> 9 -> 23 -> 51 -> 105 for cut 4."""
    target = split.TargetModel()
    images = tf.random.uniform([2, 105, 105, 1], seed=cut)
    device, server = split.device_stage(target, cut), split.server_stage(target, cut)
    codes = device(images)
    assert codes.shape == (2, *shape)
    np.testing.assert_allclose(server(codes).numpy(), target(images).numpy(), atol=1e-6)
    attacker = split.AttackModel(device)
    assert attacker.code_shape == shape
    assert attacker(codes).shape == (2, 105, 105, 1)
    first = attacker.decoder.layers[0]
    assert first.strides == ((3, 3) if cut == 1 else (2, 2) if cut in (2, 3) else (1, 1))


def test_a_dp_target_is_cut_anywhere_through_the_model_it_wraps():
    """`device_stage` / `server_stage` cut a `tfleak.privacy.DPModel` (a Sequential target
    without dropout inside) as they cut a `TargetModel`: together they are the whole model."""
    from tfleak import privacy

    target = privacy.build_dp_target(0.7, norm="group")
    images = tf.random.uniform([2, 105, 105, 1], seed=5)
    for cut in (1, 3):
        device, server = split.device_stage(target, cut), split.server_stage(target, cut)
        assert device(images).shape == (2, *split.CODE_SHAPES[cut])
        np.testing.assert_allclose(
            server(device(images)).numpy(), target.model(images).numpy(), atol=1e-6
        )


def test_a_decoder_for_a_code_no_cut_sends_is_refused():
    with pytest.raises(ValueError, match=r"no decoder for codes of shape \(7, 7, 32\)"):
        split.AttackModel(code_shape=(7, 7, 32))
    with pytest.raises(ValueError, match="cut must be one of 1, 2, 3, 4"):
        split.device_stage(split.TargetModel(), 0)


def test_white_box_at_the_first_cut_recovers_and_reidentifies_unseen_images(scheme, brief_target):
    """Cut after block 1 (a 33 x 33 x 32 code) of the briefly trained target, through the
    study's own row (`study.attack_cut`): 100 Adam steps from the mean surrogate image on 24
    unseen Tagalog images reach at least 10x lower MSE than the mean image (measured 1.6e-4
    against 0.072, 450x), and each reconstruction is nearest (MSE) to its own original among
    all 340 test images for at least 90% of them (measured: all 24)."""
    gallery = _test_images(scheme, 340)
    mean = split.mean_image(scheme["attacker_train"])
    settings = dict(whitebox_images=24, whitebox_steps=100, whitebox_learning_rate=0.05,
                    whitebox_tv=0.01)  # fmt: skip
    row, reconstructions = study.attack_cut(
        brief_target, 1, "whitebox", study.NO_DEFENSE, scheme["attacker_train"], gallery, mean,
        settings, seed=0, log=None,
    )  # fmt: skip
    assert reconstructions.shape == (24, 105, 105, 1) and row["images"] == 24
    assert row["code_shape"] == [33, 33, 32] and row["gallery"] == 340
    assert row["mse"] < row["mean_image_mse"] / 10, row
    assert row["reidentification_top1"] >= 0.9 and row["chance_top1"] == pytest.approx(1 / 340)


def test_the_network_is_the_same_whatever_the_cut_so_is_its_accuracy(scheme, brief_target):
    """`study.accuracy` runs the device stage of a cut, then the server stage of the same cut:
    without a defence every cut gives the whole model's accuracy (here on 128 validation
    images); Gaussian noise of 100x the codes' scale leaves about chance (1/5 alphabets)."""
    images, labels = study.arrays(scheme["target_val"].take(128))
    whole = float(np.mean(np.argmax(brief_target(images).numpy(), 1) == labels))
    for cut in split.CODE_SHAPES:
        assert study.accuracy(brief_target, cut, study.NO_DEFENSE, images, labels) == whole
    keras.utils.set_random_seed(0)
    scale = study.code_scales(brief_target, 2, images)["std"]
    drowned = study.accuracy(brief_target, 2, CodeNoise("gaussian", 100 * scale), images, labels)
    assert drowned < 0.45, drowned


def test_held_out_slice_keeps_every_eighth_image_apart(scheme):
    train, held = study.held_out_slice(scheme["attacker_train"].take(80))
    train_images, _ = study.arrays(train)
    held_images, _ = study.arrays(held)
    assert len(train_images) == 70 and len(held_images) == 10
    assert not set(map(bytes, held_images)) & set(map(bytes, train_images))
    with pytest.raises(ValueError, match="unknown target kind 'fancy'"):
        study.train_target("fancy", None, {}, epochs=1, seed=0, checkpoint_dir=None)


@pytest.mark.slow
def test_decoder_at_the_first_cut_reidentifies_unseen_images(scheme, brief_target):
    """The black box at cut 1: a mirrored decoder fitted for one epoch on the device's codes
    of katakana and Sanskrit surrogates re-identifies at least 90% of 48 unseen Tagalog
    images among all 340 (measured: all 48), although after one epoch its MSE is not yet
    below the mean image's (measured 0.073 against 0.068; the study's 5 epochs reach
    0.019): MSE against the mean image understates what a code gives away."""
    keras.utils.set_random_seed(0)
    device = split.device_stage(brief_target, 1)
    attacker = split.compile_attacker(split.AttackModel(device), 0.005)
    split.train_resumable(attacker, scheme["attacker_train"], epochs=1, batch_size=32, log=None)
    gallery = _test_images(scheme, 340)
    reconstructions = split.reconstruct(attacker, device, gallery[:48])
    mean = split.mean_image(scheme["attacker_train"])
    mse = float(np.mean((reconstructions - gallery[:48]) ** 2))
    baseline = float(np.mean((gallery[:48] - mean) ** 2))
    assert mse < 1.5 * baseline, (mse, baseline)
    reid = reidentify(reconstructions, gallery)
    assert reid.top1 >= 0.9 and reid.top5 == 1.0, reid.ranks
    # The mean image, the same for every code, re-identifies at chance.
    assert reidentify(np.repeat(mean[None], 48, axis=0), gallery).top1 <= 1 / 48


STUDY = Path(__file__).resolve().parents[1] / "benchmarks" / "split_study.py"


def test_split_study_refuses_another_configuration_in_its_directory(shared_data, tmp_path):
    """A directory holding a study is resumed only by the same flags: others are refused
    in one line, before any data is read or model trained."""
    atomic_write_text(tmp_path / "results.json", json.dumps({"config": {"target_epochs": 99}}))
    completed = subprocess.run(
        [sys.executable, str(STUDY), "--quick", f"--data_dir={shared_data}",
         f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "another configuration" in completed.stderr and "target_epochs: 99 -> 6" in (
        completed.stderr
    )
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be >= 1"),
        (dict(learning_rate=float("nan")), "finite learning_rate"),
        (dict(tv_weight=-1.0), "tv_weight >= 0"),
        (dict(init=np.full((28, 28, 1), 0.5)), "init must be one image"),
    ],
)
def test_white_box_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WhiteBoxInversion(lambda x, training=False: x, **kwargs)


def test_reidentification_of_exact_and_constant_reconstructions(scheme):
    images = _test_images(scheme, 40)
    exact = reidentify(images, images)
    assert exact.top1 == exact.top5 == 1.0
    assert exact.chance_top1 == pytest.approx(1 / 40) and exact.chance_top5 == pytest.approx(5 / 40)
    # A constant guess (the mean image) ranks the originals the same way for every image,
    # so exactly one is first and five are in the top 5: chance.
    mean = np.repeat(split.mean_image(scheme["attacker_train"])[None], 40, axis=0)
    constant = reidentify(mean, images)
    assert constant.top1 == pytest.approx(constant.chance_top1)
    assert constant.top5 == pytest.approx(constant.chance_top5)
    # Reconstructions of the first 10 ranked among all 40 originals.
    partial = reidentify(images[:10], images)
    assert partial.top1 == 1.0 and partial.chance_top1 == pytest.approx(1 / 40)


def test_code_noise_zero_is_no_defence_and_laplace_is_clipped():
    codes = tf.random.normal([64, 1, 1, 32], seed=1)
    np.testing.assert_array_equal(CodeNoise("gaussian", 0.0)(codes).numpy(), codes.numpy())
    np.testing.assert_array_equal(CodeNoise("none", 3.0)(codes).numpy(), codes.numpy())
    noisy = CodeNoise("gaussian", 2.0)(codes).numpy() - codes.numpy()
    assert 1.8 < noisy.std() < 2.2  # 2,048 draws of N(0, 4).
    laplace = CodeNoise("laplace", 1.0, clip_norm=4.0)
    assert laplace.epsilon_local == 1.0 and laplace.laplace_scale == 8.0  # b = 2 * 4 / 1.
    tf.random.set_seed(0)
    sent = laplace(codes).numpy()
    # Laplace(b) has mean absolute deviation b: the noise dominates the clipped code.
    assert 7.0 < np.mean(np.abs(sent)) < 9.5
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        CodeNoise("laplace", 0.0, clip_norm=1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        CodeNoise("gaussian", float("nan"))
    with pytest.raises(ValueError, match="unknown code defence 'blur'"):
        CodeNoise("blur", 1.0)


def test_distance_correlation_limits():
    x = tf.random.normal([64, 20], seed=2)
    assert float(distance_correlation(x, x)) == pytest.approx(1.0, abs=1e-4)
    assert float(distance_correlation(x, 3 * x + 1)) == pytest.approx(1.0, abs=1e-4)
    independent = float(distance_correlation(x, tf.random.normal([64, 5], seed=3)))
    assert independent < 0.6


def test_nopeek_lowers_distance_correlation_of_codes(scheme):
    """Same start, same 3 epochs on 256 images: NoPeek's codes correlate less with the
    images (held-out batch of 64) than the plain target's."""
    train = scheme["target_train"].take(256)
    held_out, held_out_labels = next(iter(scheme["target_val"].batch(64)))
    correlations = {}
    for alpha in (0.0, 20.0):
        keras.utils.set_random_seed(0)
        model = split.compile_target(NoPeekTarget(alpha))
        run = split.train_resumable(model, train, epochs=3, batch_size=32, log=None)
        assert "distance_correlation" in run.final
        correlations[alpha] = float(distance_correlation(held_out, model.mobile_step(held_out)))
        evaluated = model.evaluate(
            held_out, held_out_labels, batch_size=64, return_dict=True, verbose=0
        )
        assert evaluated["distance_correlation"] == pytest.approx(correlations[alpha], rel=1e-4)
    # Measured: 0.81 plain, 0.59 NoPeek (alpha 20).
    assert correlations[20.0] < correlations[0.0] - 0.1, correlations


def _report_row(cut, attack, top1, mse, **extra):
    return {
        "name": f"cut{cut}_{attack}",
        "cut": cut,
        "code_shape": list(split.CODE_SHAPES[cut]),
        "attack": attack,
        "target": "plain",
        "target_kind": "plain",
        "defense": "none",
        "strength": None,
        "epsilon_local": None,
        "images": 24,
        "val_accuracy": 0.65,
        "mse": mse,
        "mean_image_mse": 0.07,
        "psnr": 12.0,
        "ssim": 0.5,
        "reidentification_top1": top1,
        "reidentification_top5": top1,
        "chance_top1": 1 / 340,
        "beats_mean_image": mse < 0.07,
        "seconds": 1.0,
        **extra,
    }


def test_study_report_names_the_deepest_leaking_cut_and_tabulates_each_defence():
    """Re-identification 1.0 down to cut 2, 4 / 24 at cut 3 (0.167 = 57x chance), none at
    cut 4: the deepest cut where the attack works (top-1 >= 0.5) is 2, above 10x chance 3."""
    rows = [
        _report_row(1, "whitebox", 1.0, 0.001),
        _report_row(2, "whitebox", 1.0, 0.08),
        _report_row(3, "whitebox", 4 / 24, 0.17),
        _report_row(4, "whitebox", 0.0, 0.11),
    ]
    dp = _report_row(
        2,
        "whitebox",
        0.25,
        0.2,
        target="dp0.7",
        target_kind="dp",
        noise_multiplier=0.7,
        epsilon=3.6,
        epsilon_classic=4.3,
        val_accuracy=0.1,
    )
    dp["name"] = "cut2_whitebox_dp0.7"
    results = {
        "rows": rows + [dp],
        "gallery": 340,
        "defense_cuts": [2],
        "targets": {"plain": {"epochs": 6, "val_accuracy": 0.65}},
        "code_scales": {},
        "config": {"dp_epochs": 6, "dp_variant": "per_example"},
    }
    assert report.deepest_cut(rows, "whitebox", report.works) == 2
    assert report.deepest_cut(rows, "whitebox", report.above_chance) == 3
    assert report.deepest_cut(rows, "decoder", report.works) is None
    text = report.markdown(results)
    assert "re-identifying at least half (top-1 >= 0.5): 2." in text
    assert (
        "| DP-Adam 0.7 | 3.6 / 4.3 | - | 0.100 | - | - | - | - | 0.2000 | 0.250 | 0.250 |" in text
    )


def test_split_study_refuses_bad_cuts_before_any_work(shared_data, tmp_path):
    completed = subprocess.run(
        [sys.executable, str(STUDY), "--dp_cuts=auto,7", f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    assert completed.returncode == 2
    assert "--dp_cuts must name cuts 1..4 or auto; got '7'." in completed.stderr
    assert not list(tmp_path.iterdir())


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "model_inversion.py"


def _run_example(data_dir, *flags):
    return subprocess.run(
        [sys.executable, str(EXAMPLE), f"--data_dir={data_dir}", *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.mark.slow
def test_example_walks_through_train_attack_reidentify_and_resumes(shared_data, tmp_path):
    flags = ["--limit=64", "--target_epochs=1", "--attacker_epochs=1", "--whitebox_images=4",
             "--whitebox_steps=3", f"--output_dir={tmp_path}"]  # fmt: skip
    first = _run_example(shared_data, *flags)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["cut"] == 2 and results["target"] == "plain"
    for attack, images in (("decoder", 64), ("whitebox", 4)):
        assert results[attack]["images"] == images
        assert results[attack]["chance_top1"] == pytest.approx(1 / 64)
        assert 0 <= results[attack]["reidentification_top1"] <= 1
    assert (tmp_path / "reconstructions.png").stat().st_size > 10_000
    assert "the phone sends a (13, 13, 32) code" in first.stdout
    again = _run_example(shared_data, *flags)  # The classifier resumes from its checkpoint.
    assert again.returncode == 0 and "resumed" in again.stdout, again.stdout[-2000:]


@pytest.mark.parametrize(
    "flag, message",
    [("--cut=7", "--cut must be one of 1, 2, 3, 4; got 7."),
     ("--limit=10", "--limit=10 is smaller than one batch (32).")],
)  # fmt: skip
def test_example_explains_bad_flags_before_any_work(flag, message, shared_data, tmp_path):
    completed = _run_example(shared_data, flag, f"--output_dir={tmp_path}")
    assert completed.returncode == 2
    assert f"model_inversion.py: error: {message}" in completed.stderr
    assert not list(tmp_path.iterdir())


def test_a_study_cut_short_has_every_defence_at_its_strongest_first():
    settings = {"gaussian_stddevs": [1.0, 4.0, 16.0], "laplace_epsilons": [1e5, 1e3],
                "nopeek_alphas": [1.0, 10.0]}  # fmt: skip
    assert runner.strongest_first(settings) == [
        ("gaussian", 16.0), ("laplace", 1e3), ("nopeek", 10.0),
        ("gaussian", 4.0), ("laplace", 1e5), ("nopeek", 1.0), ("gaussian", 1.0),
    ]  # fmt: skip
    assert runner.resolve_cuts(["auto", 4], 3) == [3, 4]
    assert runner.resolve_cuts(["auto", 4], 4) == [4]
    assert runner.resolve_cuts(["auto"], None) == []
