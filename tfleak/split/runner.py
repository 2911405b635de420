"""Running the split-learning study: its state, the order of its rows, its time budget.

`SplitStudy` keeps results.json (refusing a directory that holds another
configuration), the data and the targets, and runs one row at a time through
`tfleak.split.study`, saving after every row so that the same call resumes.
`run_grid` runs the whole grid: the plain target, both attacks at every cut,
the published decoder, the DP-Adam targets and the code defences where an
attack works. `benchmarks/split_study.py` is its command line.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from tfleak import privacy
from tfleak.data.omniglot import omniglot_scheme
from tfleak.io import atomic_write_json, atomic_write_text, read_json
from tfleak.split import report, study
from tfleak.split.defenses import CodeNoise
from tfleak.split.model import CODE_SHAPES
from tfleak.training import ConfigMismatchError, epochs_done

__all__ = ["OutOfTime", "SplitStudy", "resolve_cuts", "run_grid", "strongest_first"]


class OutOfTime(Exception):
    """The time budget is spent: no new row or training starts."""


class SplitStudy:
    """The study's state: results.json, the data, the targets; one method per phase."""

    def __init__(
        self,
        settings: dict,
        output_dir,
        deadline: float = float("inf"),
        log: Callable[[str], None] = print,
    ):
        """Opens (or starts) the study in `output_dir`.

        Args:
          settings: the study's configuration (`benchmarks/split_study.py`'s flags):
            cuts, epochs, attack and defence grids, seed.
          output_dir: a writable directory (`pathlib.Path`).
          deadline: `time.monotonic()` after which no row or training starts.
          log: progress lines.

        Raises:
          ConfigMismatchError: `output_dir` holds a study of other settings.
        """
        self.settings, self.output_dir, self.deadline = settings, Path(output_dir), deadline
        self.log = log
        self.path = output_dir / "results.json"
        results = read_json(self.path) or {}
        if results and results.get("config") != settings:
            old = results.get("config") or {}
            changed = [
                f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v
            ]
            raise ConfigMismatchError(
                f"{output_dir} holds a study of another configuration ({'; '.join(changed)}); "
                "pass another --output_dir, or the same flags to resume."
            )
        self.results = results
        results.setdefault("config", settings)
        results.setdefault("rows", [])
        results.setdefault("targets", {})
        results.setdefault("code_scales", {})
        results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
        results["code_shapes"] = {str(k): list(v) for k, v in CODE_SHAPES.items()}

    def load_data(self, data_dir) -> None:
        self.scheme = omniglot_scheme("offline", data_dir)
        self.test_images, _ = study.arrays(self.scheme["attacker_test"])
        self.val_images, self.val_labels = study.arrays(self.scheme["target_val"])
        self.surrogate_images, _ = study.arrays(self.scheme["attacker_train"])
        self.n_train = sum(1 for _ in self.scheme["target_train"])
        self.mean_image = np.mean(self.surrogate_images, axis=0)
        self.results["gallery"] = len(self.test_images)

    def save(self) -> None:
        atomic_write_json(self.path, self.results)
        if "plain" in self.results["targets"]:
            atomic_write_text(self.output_dir / "results.md", report.markdown(self.results))

    def _check_time(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise OutOfTime(what)

    def target(self, name: str, kind: str, strength=None, cut: int = 4):
        """Trains (or resumes) a target and records its accuracy (and epsilon)."""
        settings = self.settings
        epochs = settings["dp_epochs"] if kind == "dp" else settings["target_epochs"]
        if epochs_done(self.output_dir / "checkpoints" / name) < epochs:
            self._check_time(name)
        start = time.perf_counter()
        model, run_ = study.train_target(
            kind,
            strength,
            self.scheme,
            epochs=epochs,
            seed=study.row_seed(settings["seed"], name),
            checkpoint_dir=self.output_dir / "checkpoints" / name,
            cut=cut,
            dp_variant=settings["dp_variant"],
            log=self.log,
        )
        record = {
            "kind": kind,
            "epochs": epochs,
            "val_accuracy": study.accuracy(
                model, 4, study.NO_DEFENSE, self.val_images, self.val_labels
            ),
            "train_accuracy": run_.final.get("accuracy"),
            "seconds_per_epoch": run_.seconds_per_epoch or None,  # None: nothing trained now
            "seconds_this_run": time.perf_counter() - start,
        }
        if kind == "dp":
            n = self.n_train
            record.update(
                noise_multiplier=strength,
                n_train=n,
                **{
                    key: privacy.compute_epsilon(
                        n, study.BATCH_SIZE, epochs, strength, conversion=conversion
                    )
                    for key, conversion in (("epsilon", "rdp"), ("epsilon_classic", "classic"))
                },
            )
        if kind == "nopeek":
            record.update(alpha=strength, cut=cut)
        self.results["targets"][name] = record
        self.log(f"{name}: {json.dumps(record)}")
        return model

    def row(self, name, target_name, model, cut, attack, defense=study.NO_DEFENSE, strength=None):
        done = {r["name"]: r for r in self.results["rows"]}
        if name in done:
            self.log(f"{name}: already done")
            return done[name]
        self._check_time(name)
        self.log(f"{name}: running")
        seed = study.row_seed(self.settings["seed"], name)
        new, reconstructions = study.attack_cut(
            model,
            cut,
            attack,
            defense,
            self.scheme["attacker_train"],
            self.test_images,
            self.mean_image,
            self.settings,
            seed,
            log=self.log,
        )
        keras.utils.set_random_seed(seed + 1)  # The accuracy's draw of the code noise.
        target = self.results["targets"][target_name]
        new = {
            "name": name,
            "target": target_name,
            "target_kind": target["kind"],
            "strength": strength,
            "val_accuracy": target["val_accuracy"]
            if defense.mechanism == "none"
            else study.accuracy(model, cut, defense, self.val_images, self.val_labels),
            **{
                k: target[k]
                for k in ("noise_multiplier", "epsilon", "epsilon_classic", "alpha")
                if k in target
            },
            **new,
        }
        self._record(new, reconstructions)
        return new

    def _record(self, row: dict, reconstructions) -> None:
        self.results["rows"].append(row)
        report.save_reconstructions(
            self.output_dir / "reconstructions" / f"{row['name']}.npz",
            reconstructions[: self.settings["figure_images"]],
        )
        self.save()
        self.log(f"{row['name']}: " + json.dumps({k: v for k, v in row.items() if k != "whitebox"}))

    def published_decoder(self, plain) -> None:
        if any(r["name"] == "cut4_decoder_published" for r in self.results["rows"]):
            self.log("cut4_decoder_published: already done")
            return
        self._check_time("cut4_decoder_published")
        row, reconstructions = study.train_published_decoder(
            plain,
            self.scheme["attacker_train"],
            self.test_images,
            self.mean_image,
            epochs=self.settings["published_decoder_epochs"],
            patience=self.settings["published_decoder_patience"],
            learning_rate=self.settings["attacker_learning_rate"],
            seed=study.row_seed(self.settings["seed"], "published_decoder"),
            checkpoint_dir=self.output_dir / "checkpoints" / "published_decoder",
            log=self.log,
        )
        row.update(
            name="cut4_decoder_published",
            target="plain",
            target_kind="plain",
            strength=None,
            val_accuracy=self.results["targets"]["plain"]["val_accuracy"],
        )
        self._record(row, reconstructions)

    def code_defense(self, plain, cuts, attacks, kind: str, strength: float) -> None:
        """One code defence of the plain target at each of `cuts`: Gaussian noise (in units
        of the codes' standard deviation), the clipped Laplace mechanism, or a NoPeek target."""
        for cut in cuts:
            if kind == "nopeek":
                name = f"nopeek{strength:g}_cut{cut}"
                model = self.target(name, "nopeek", strength, cut)
                for attack in attacks:
                    self.row(f"cut{cut}_{attack}_{name}", name, model, cut, attack)
                continue
            scales = self.results["code_scales"].setdefault(
                str(cut), study.code_scales(plain, cut, self.surrogate_images)
            )
            defense = (
                CodeNoise("gaussian", strength * scales["std"])
                if kind == "gaussian"
                else CodeNoise("laplace", strength, clip_norm=scales["l1_median"])
            )
            for attack in attacks:
                self.row(
                    f"cut{cut}_{attack}_{kind}{strength:g}",
                    "plain",
                    plain,
                    cut,
                    attack,
                    defense,
                    strength,
                )


def strongest_first(settings) -> list[tuple[str, float]]:
    """The code defences, kinds taking turns, each kind's strongest first: a run cut short
    by its time budget has measured every kind at its strongest before any at its weakest."""
    queues = [
        [("gaussian", s) for s in sorted(settings["gaussian_stddevs"], reverse=True)],
        [("laplace", e) for e in sorted(settings["laplace_epsilons"])],
        [("nopeek", a) for a in sorted(settings["nopeek_alphas"], reverse=True)],
    ]
    return [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]


def resolve_cuts(cuts: list, auto: int | None) -> list[int]:
    """Cuts 1..4 and 'auto' (the cut `auto`; none where it is None), sorted, once each."""
    return sorted({auto if cut == "auto" else cut for cut in cuts} - {None})


def run_grid(state: SplitStudy) -> None:
    """The whole grid, in order: the plain target; both attacks at every cut; the published
    decoder at cut 4; the DP-Adam targets at the DP cuts; the code defences (strongest first).

    Raises:
      OutOfTime: the deadline passed before some row; the rows done are saved.
    """
    settings = state.settings
    plain = state.target("plain", "plain")
    attacks = ["decoder"] + (["whitebox"] if settings["whitebox_images"] else [])
    for cut in settings["cuts"]:
        for attack in attacks:
            state.row(f"cut{cut}_{attack}", "plain", plain, cut, attack)
    if 4 in settings["cuts"]:
        state.published_decoder(plain)
    rows = state.results["rows"]
    auto = max([report.deepest_cut(rows, attack, report.works) or 0 for attack in attacks])
    dp_cuts = resolve_cuts(settings["dp_cuts"], auto or None)
    code_cuts = resolve_cuts(settings["code_defense_cuts"], auto or None)
    state.results["defense_cuts"] = sorted(set(dp_cuts) | set(code_cuts))
    state.log(
        f"deepest cut where an attack works: {auto or 'none'}; DP rows at {dp_cuts}, code "
        f"defences at {code_cuts}"
    )
    for noise in settings["noise_multipliers"]:
        name = f"dp{noise:g}"
        model = state.target(name, "dp", noise)
        for cut in dp_cuts:
            for attack in attacks:
                state.row(f"cut{cut}_{attack}_{name}", name, model, cut, attack)
    for kind, strength in strongest_first(settings):
        state.code_defense(plain, code_cuts, attacks, kind, strength)
