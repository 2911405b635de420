"""One call that tells a Keras user how much their own classifier's updates leak.

`tfleak.audit(model, data, ...)` attacks a clone of `model` (the user's model
and weights are never changed, see `as_victim`) on a few private batches drawn
from `data`, for every threat (the shared update: FedSGD or FedAvg), defence
chain and attack, and reports the worst case first: per image, the strongest
reconstruction any attack found (best matched PSNR over the attacks) and which
attack found it; an image whose every 8-bit pixel value was recovered (largest
error below half a grey level, 0.5 / 255) is reported as an exact leak. Below
that, each attack's own numbers: matched PSNR and SSIM, label accuracy, and the
fraction of images recovered above 20 dB and 30 dB.

By default every attack that applies runs, cheapest and most likely first
(`DEFAULT_ATTACKS`): closed-form recovery (`AnalyticRecovery`: a first Dense
layer with a bias, or one convolution under the classifier; skipped with its
reason elsewhere), then L-BFGS with restored labels (iDLG), then Inverting
Gradients. Every threat and defence gets the first attack before any gets the
second, and a threat and defence whose images all leaked exactly get no
further attack, so the time budget goes to the attacks most likely to
succeed. The optimisation attacks restore the labels from the update
('counts', which tolerates repeated labels; see `tfleak.attacks.labels`) and, where a
defence has a deterministic part (pruning, quantisation, DP-SGD's clip),
apply it (the adaptive attacker of `tfleak.threats.defenses`).

They run with a reduced budget (`iterations`, 300 by default) so an audit
finishes in minutes on a CPU; their numbers are a lower bound on the leakage a
patient attacker achieves. Settings that would start after `time_budget_s`
are reported as skipped. A setting's batches are attacked at once, as one
graph with a leading axis of attacks (`tfleak.attack_many`).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from tfleak.threats.defenses import DefendedUpdate, Defense, parse_defenses

__all__ = ["ATTACKS", "DEFAULT_ATTACKS", "EXACT_ERROR", "SettingResult", "WorstCase",
           "AuditReport", "audit"]  # fmt: skip


def _attack_classes() -> dict:
    from tfleak.attacks import DLG, IDLG, AnalyticRecovery, InvertingGradients

    return {
        "analytic": AnalyticRecovery,
        "idlg": IDLG,
        "inverting_gradients": InvertingGradients,
        "dlg": DLG,
    }


# Every attack the audit runs by name, cheapest and most likely to succeed first.
ATTACKS = ("analytic", "idlg", "inverting_gradients", "dlg")
# What `attacks=None` (the default) runs: each that applies to the model, in this order.
DEFAULT_ATTACKS = ("analytic", "idlg", "inverting_gradients")
# An image is an exact leak when no pixel is off by half a grey level of 8 bits or more.
EXACT_ERROR = 0.5 / 255.0


@dataclasses.dataclass
class SettingResult:
    """One threat x defence x attack setting of an audit.

    Attributes:
      threat: the shared update, e.g. 'FedSGD()'.
      defense: the defence chain as `NAME:STRENGTH` joined by '+', or 'none'.
      attack: the attack's name.
      images: private images attacked.
      psnr, ssim: matched means over the images (dB; SSIM in [-1, 1]).
      label_accuracy: fraction of labels restored (as multisets).
      recovered_20db, recovered_30db: fraction of images above 20 dB / 30 dB.
      seconds: wall time of the setting.
      epsilon: DP-SGD's epsilon of one release at delta 1e-5, else None.
      psnr_per_image: every image's PSNR.
      exact_per_image: whether each image was recovered exactly (largest
        pixel error below `EXACT_ERROR`).
      skipped: why the setting did not run ('' when it ran).
      note: how the attack ended where it found no image ('' otherwise).
    """

    threat: str
    defense: str
    attack: str
    images: int = 0
    psnr: Optional[float] = None
    ssim: Optional[float] = None
    label_accuracy: Optional[float] = None
    recovered_20db: Optional[float] = None
    recovered_30db: Optional[float] = None
    seconds: float = 0.0
    epsilon: Optional[float] = None
    psnr_per_image: list = dataclasses.field(default_factory=list)
    exact_per_image: list = dataclasses.field(default_factory=list)
    skipped: str = ""
    note: str = ""
    # (true image, reconstruction, PSNR) of each image, for the figure; not in the JSON.
    pairs: list = dataclasses.field(default_factory=list, repr=False, compare=False)


@dataclasses.dataclass
class WorstCase:
    """The strongest leak of every image under one threat and defence, over the attacks.

    Attributes:
      threat, defense: as in `SettingResult`.
      images: private images attacked.
      psnr: mean over the images of each image's best PSNR (dB).
      psnr_per_image: each image's best PSNR over the attacks that ran.
      attack_per_image: the attack that found each image's best.
      exact: fraction of images recovered exactly (any attack).
      recovered_20db, recovered_30db: fraction of images whose best is above
        20 dB / 30 dB.
      attacks: the attacks that ran.
      epsilon: DP-SGD's epsilon of one release at delta 1e-5, else None.
    """

    threat: str
    defense: str
    images: int
    psnr: float
    psnr_per_image: list
    attack_per_image: list
    exact: float
    recovered_20db: float
    recovered_30db: float
    attacks: list
    epsilon: Optional[float] = None

    @property
    def found_by(self) -> str:
        """The attacks that found the best reconstructions, most images first."""
        names = sorted(set(self.attack_per_image), key=lambda a: -self.attack_per_image.count(a))
        return ", ".join(f"{a} ({self.attack_per_image.count(a)})" for a in names)


def _worst_cases(settings) -> list:
    """One `WorstCase` per threat and defence that at least one attack ran on."""
    cases = []
    keys = list(dict.fromkeys((s.threat, s.defense) for s in settings))
    for threat, defense in keys:
        ran = [
            s for s in settings if (s.threat, s.defense) == (threat, defense) and s.psnr_per_image
        ]
        if not ran:
            continue
        psnr = np.array([s.psnr_per_image for s in ran])  # [attacks, images]
        exact = np.array([s.exact_per_image for s in ran], bool)
        best = np.argmax(psnr, axis=0)
        per_image = psnr.max(axis=0)
        cases.append(
            WorstCase(
                threat=threat,
                defense=defense,
                images=int(psnr.shape[1]),
                psnr=float(per_image.mean()),
                psnr_per_image=per_image.tolist(),
                attack_per_image=[ran[int(a)].attack for a in best],
                exact=float(np.mean(exact.any(axis=0))),
                recovered_20db=float(np.mean(per_image > 20.0)),
                recovered_30db=float(np.mean(per_image > 30.0)),
                attacks=[s.attack for s in ran],
                epsilon=ran[0].epsilon,
            )
        )
    return cases


@dataclasses.dataclass
class AuditReport:
    """What `audit` measured; `to_dict`, `to_markdown`, `save`.

    Attributes:
      worst_cases: one `WorstCase` per threat and defence (the strongest leak
        of each image over the attacks), worst first in `to_markdown`.
      settings: one `SettingResult` per threat, defence and attack.
    """

    model: str
    parameters: int
    data: str
    batch_size: int
    iterations: int
    settings: list
    seconds: float
    time_budget_s: float
    worst_cases: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        for setting in fields["settings"]:
            setting.pop("pairs")
        for case, worst in zip(fields["worst_cases"], self.worst_cases):
            case["found_by"] = worst.found_by
        return fields

    def worst_case(self) -> Optional[WorstCase]:
        """The threat and defence that leaked most (exact images, then best PSNR)."""
        return max(self.worst_cases, key=lambda c: (c.exact, c.psnr), default=None)

    def worst(self) -> Optional[SettingResult]:
        """The setting that leaked most (highest matched PSNR), None if none ran."""
        ran = [s for s in self.settings if s.psnr is not None]
        return max(ran, key=lambda s: s.psnr) if ran else None

    def to_markdown(self) -> str:
        lines = [
            f"# Leakage audit of {self.model} ({self.parameters:,} parameters)",
            "",
            f"Data: {self.data}; batches of {self.batch_size}; {self.iterations} attack "
            f"iterations; {self.seconds:.0f} s of a {self.time_budget_s:.0f} s budget.",
            "",
        ]
        worst = self.worst_case()
        if worst is not None:
            exact = round(worst.exact * worst.images)
            lines += [
                f"**Worst case: {worst.threat} with defence {worst.defense}: "
                + (
                    f"{exact} of {worst.images} images recovered exactly"
                    if exact
                    else f"{worst.psnr:.1f} dB"
                )
                + f", {worst.recovered_30db:.0%} of the images above 30 dB "
                f"(found by {worst.found_by}).**",
                "",
                "## Strongest leak per image, over the attacks",
                "",
                "| threat | defence | images | exact | PSNR (dB) | > 30 dB | > 20 dB | found by "
                "| epsilon |",
                "|---|---|---:|---:|---:|---:|---:|---|---:|",
            ]
            for c in sorted(self.worst_cases, key=lambda c: (-c.exact, -c.psnr)):
                eps = "" if c.epsilon is None else f"{c.epsilon:.3g}"
                lines.append(
                    f"| {c.threat} | {c.defense} | {c.images} | {c.exact:.0%} | {c.psnr:.1f} | "
                    f"{c.recovered_30db:.2f} | {c.recovered_20db:.2f} | {c.found_by} | {eps} |"
                )
            lines.append("")
        lines += [
            "## Every attack",
            "",
            "| threat | defence | attack | images | exact | PSNR (dB) | SSIM | label acc. "
            "| > 20 dB | > 30 dB | epsilon | s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in self.settings:
            if s.skipped:
                lines.append(f"| {s.threat} | {s.defense} | {s.attack} | skipped: {s.skipped} |")
                continue
            eps = "" if s.epsilon is None else f"{s.epsilon:.3g}"
            exact = f"{np.mean(s.exact_per_image):.0%}"
            lines.append(
                f"| {s.threat} | {s.defense} | {s.attack} | {s.images} | {exact} | {s.psnr:.1f} | "
                f"{s.ssim:.3f} | {s.label_accuracy:.2f} | {s.recovered_20db:.2f} | "
                f"{s.recovered_30db:.2f} | {eps} | {s.seconds:.0f} |"
            )
        notes = [s for s in self.settings if s.note]
        if notes:
            lines += [""] + [f"- {s.attack} on {s.threat}, {s.defense}: {s.note}" for s in notes]
        return "\n".join(lines) + "\n"

    def save(self, output_dir) -> Path:
        """Writes report.json, report.md and worst_leaks.png into `output_dir`."""
        from tfleak import plotting
        from tfleak.io import atomic_write_json, atomic_write_text

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(output_dir / "report.json", self.to_dict())
        atomic_write_text(output_dir / "report.md", self.to_markdown())
        pairs = sorted((p + (s,) for s in self.settings for p in s.pairs), key=lambda p: -p[2])[:8]
        if pairs:
            plotting.plot_image_rows(
                [[p[0] for p in pairs], [p[1] for p in pairs]],
                output_dir / "worst_leaks.png",
                row_titles=["private", "reconstructed"],
                column_titles=[
                    f"{p[2]:.1f} dB\n{p[3].attack}\n{p[3].threat.split('(')[0]}, {p[3].defense}"
                    for p in pairs
                ],
                title=f"Worst leaks of {self.model}",
            )
        return output_dir


def _check_model(model, num_classes):
    from tfleak.models import as_victim
    from tfleak.models.checks import check_attackable, load_model, require_classifier

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load_model(model)
    check_attackable(model)
    require_classifier(model)
    return as_victim(model, num_classes=num_classes)


def _load(data, victim, count: int, seed: int):
    """`(images [n, h, w, c] float32 in [0, 1], labels [n] int64, description)`."""
    from tfleak.data import load_dataset, sample_batch

    height, width, channels = victim.image_shape
    if isinstance(data, (str, Path)):
        if height != width:
            raise ValueError(
                f"an image folder is read as square images, but {victim.name} takes "
                f"{height}x{width}; pass a tf.data.Dataset of images of that shape."
            )
        folder = load_dataset("folder", data_dir=str(data), image_size=height, channels=channels)
        if folder.num_classes > victim.num_classes:
            raise ValueError(
                f"the folder {data} has {folder.num_classes} classes but {victim.name} "
                f"classifies {victim.num_classes}."
            )
        rows = sample_batch(folder.labels, min(count, len(folder)), "random", seed=seed)
        return folder.images[rows], folder.labels[rows], folder.description
    if not isinstance(data, tf.data.Dataset):
        raise ValueError(
            f"data must be a tf.data.Dataset of (image, label) or an image folder path; got "
            f"{type(data).__name__}."
        )
    images, labels = [], []
    for element in data.take(count):
        image, label = (
            (element["image"], element["label"]) if isinstance(element, dict) else element
        )
        image, label = np.asarray(image), np.asarray(label)
        if image.ndim == 4:  # a batched dataset
            images += list(image)
            labels += list(label.reshape(-1))
        else:
            images.append(image)
            labels.append(int(label))
    if not images:
        raise ValueError("the dataset yielded no images.")
    images = np.stack(images[:count])
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    if tuple(images.shape[1:]) != victim.image_shape:
        raise ValueError(
            f"the dataset's images are shaped {list(images.shape[1:])} but {victim.name} takes "
            f"{list(victim.image_shape)}; resize them (e.g. dataset.map(tf.image.resize))."
        )
    labels = np.asarray(labels[:count], np.int64)
    if labels.min() < 0 or labels.max() >= victim.num_classes:
        raise ValueError(
            f"labels must be in 0..{victim.num_classes - 1}; got {labels.min()}..{labels.max()}."
        )
    return images.astype(np.float32), labels, "tf.data.Dataset"


def _threat(threat):
    from tfleak.threats.federated import parse_update

    return parse_update(threat)


def _chain(defense) -> tuple:
    if defense is None:
        return ()
    if isinstance(defense, Defense):
        return (defense,)
    if isinstance(defense, str):
        return parse_defenses(defense.split("+"))
    chain = []
    for d in defense:
        chain += list(parse_defenses([d])) if isinstance(d, str) else [d]
    return tuple(chain)


def _attack_all(
    attack_class, victim, observations, threat, chain, truths, iterations, seed, strategy
):
    """The setting's attacks on every batch. Closed-form recovery runs batch by batch;
    the optimisation attacks run on every batch at once (`attack_many`), labels restored
    by 'counts', else optimised where restoration refuses."""
    update = DefendedUpdate(threat, chain, adaptive=True)
    if attack_class.__name__ == "AnalyticRecovery":
        attack = attack_class(update=update)
        return [_analytic(attack, victim, g, truth) for g, truth in zip(observations, truths)]
    strategies = ["optimize"] if attack_class.__name__ == "DLG" else ["counts", "optimize"]
    for label_strategy in strategies:
        attack = attack_class(
            iterations=iterations,
            restarts=0,
            seed=seed,
            label_strategy=label_strategy,
            update=update,
        )
        # Only L-BFGS keeps its dummy data out of variables, so only it is split
        # across replicas; first-order attacks run on one.
        replicated = strategy if attack.optimizer == "lbfgs" else None
        try:
            return attack.attack_many(
                victim, observations, ground_truths=truths, strategy=replicated, verbose=0
            )
        except ValueError:
            if label_strategy == strategies[-1]:
                raise
    raise AssertionError("unreachable")


def _analytic(attack, victim, observed, truth):
    """Closed-form recovery of one batch; a batch it cannot determine gives no image."""
    from tfleak.attacks import AttackResult

    try:
        return attack(victim, observed, ground_truth=truth)
    except ValueError as error:
        return AttackResult(
            reconstruction=None, labels=None, success=False, gradient_distance=float("inf"),
            relative_distance=float("inf"), iterations=0, restarts_used=0, seconds=0.0,
            attack=attack, message=f"does not apply: {error}",
        )  # fmt: skip


def _not_applicable(attack_name, victim, batch_size) -> str:
    """Why an attack does not apply to this victim ('' when it does)."""
    if attack_name != "analytic":
        return ""
    from tfleak.attacks import AnalyticRecovery

    try:
        AnalyticRecovery().check(victim, batch_size)
    except ValueError as error:
        return f"does not apply: {error}"
    return ""


def audit(
    model: keras.Model,
    data: Union[tf.data.Dataset, str, Path],
    num_classes: Optional[int] = None,
    threats: Sequence = ("gradient",),
    defenses: Sequence = (None,),
    attacks: Optional[Sequence[str]] = None,
    batch_size: int = 1,
    batches: int = 2,
    iterations: int = 300,
    time_budget_s: float = 600.0,
    output_dir=None,
    seed: int = 0,
    verbose: int = 1,
    strategy: Optional[tf.distribute.Strategy] = None,
) -> AuditReport:
    """Attacks a clone of `model` on a few batches of `data` per setting; see the module.

    Args:
      model: a built Keras 3 classifier ending in a Dense layer (logits or
        softmax), compiled or not: functional, Sequential or subclassed; or a
        path to a `.keras` file saved by Keras 3. It is never changed.
      data: a `tf.data.Dataset` of `(image, label)` (or dicts with 'image' and
        'label'; batched or not; float in [0, 1] or uint8), or a folder with one
        sub-folder of images per class.
      num_classes: classes; default the width of the model's output.
      threats: shared updates: 'gradient' (FedSGD), 'fedavg', 'fedavg:K/LR[/B]'
        (`tfleak.threats.federated.parse_update`), or update objects.
      defenses: defence chains: None, a `NAME:STRENGTH` string ('+' chains,
        e.g. 'prune:0.9+quantize:8'), a `Defense`, or a list of them.
      attacks: names in `ATTACKS`, run in the order given (an attack that does
        not apply to the model is reported as skipped, with the reason); None
        (or 'auto'): every attack of `DEFAULT_ATTACKS`, cheapest first (those that
        do not apply are reported as skipped).
      batch_size: private examples per attacked batch.
      batches: batches attacked per setting.
      iterations: iterations per batch of the optimisation attacks (closed-form
        recovery has none).
      time_budget_s: no setting starts after this many seconds.
      output_dir: if given, report.json, report.md and worst_leaks.png go there.
      seed: seed of the drawn examples and the attacks.
      verbose: 0 silent, 1 one line per setting.
      strategy: a `tf.distribute.Strategy` (`tfleak.distribute.get_strategy`):
        an L-BFGS attack's batches are split across its replicas. A setting's
        batches are always attacked at once, as one graph (`attack_many`).

    Returns:
      An `AuditReport`, its `worst_cases` holding each image's strongest leak.

    Raises:
      FileNotFoundError: a model path that does not exist.
      ValueError: a model the audit cannot attack (not a Keras 3 classifier, no
        Dense classifier at the end, a layer it cannot differentiate twice, ...),
        data of the wrong shape or labels, no images, unknown threats,
        defences or attacks.
    """
    start = time.perf_counter()
    victim = _check_model(model, num_classes)
    classes = _attack_classes()
    automatic = attacks is None or attacks == "auto" or list(attacks) == ["auto"]
    attacks = list(DEFAULT_ATTACKS) if automatic else list(attacks)
    unknown = [a for a in attacks if a not in classes]
    if unknown:
        raise ValueError(
            f"unknown attack {unknown[0]!r}; choose from {', '.join(ATTACKS)} (or 'auto')."
        )
    if batch_size < 1 or batches < 1 or iterations < 1:
        raise ValueError("batch_size, batches and iterations must be at least 1.")
    cases = [(_threat(t), _chain(d)) for t, d in itertools.product(threats, defenses)]
    images, labels, description = _load(data, victim, batch_size * batches, seed)
    if len(images) < batch_size:
        raise ValueError(f"{len(images)} images, fewer than batch_size={batch_size}.")
    groups = [slice(i, i + batch_size) for i in range(0, len(images) - batch_size + 1, batch_size)]
    truths = [(images[rows], labels[rows]) for rows in groups]
    # An attack that does not apply is reported as skipped, with the reason.
    reasons = {a: _not_applicable(a, victim, batch_size) for a in attacks}
    # Attack-major: every threat and defence gets the likeliest attack before any
    # gets the next, so the time budget goes to the attacks most likely to succeed.
    grid = {}
    for attack_name in attacks:
        for threat, chain in cases:
            defense = "+".join(d.spec for d in chain) or "none"
            setting = SettingResult(threat=repr(threat), defense=defense, attack=attack_name)
            grid[(repr(threat), defense, attack_name)] = setting
            earlier = [
                s for (t, d, _), s in grid.items()
                if (t, d) == (setting.threat, defense) and s.exact_per_image
            ]  # fmt: skip
            exact = np.any([s.exact_per_image for s in earlier], axis=0) if earlier else [False]
            if reasons[attack_name]:
                setting.skipped = reasons[attack_name]
                continue
            if all(exact):
                setting.skipped = f"every image already recovered exactly by {earlier[0].attack}"
                continue
            if time.perf_counter() - start > time_budget_s:
                setting.skipped = f"time budget of {time_budget_s:.0f} s spent"
                continue
            _run_setting(
                setting, classes[attack_name], victim, threat, chain, truths, batch_size,
                iterations, seed, strategy, verbose,
            )  # fmt: skip
    # Reported threat by threat, defence by defence, attacks in the order run.
    results = [
        grid[(repr(t), "+".join(d.spec for d in c) or "none", a)] for t, c in cases for a in attacks
    ]
    report = AuditReport(
        model=victim.name,
        parameters=victim.count_params(),
        data=f"{description}, {len(images)} images",
        batch_size=batch_size,
        iterations=iterations,
        settings=results,
        seconds=time.perf_counter() - start,
        time_budget_s=float(time_budget_s),
        worst_cases=_worst_cases(results),
    )
    if output_dir is not None:
        report.save(output_dir)
    return report


def _run_setting(
    setting, attack_class, victim, threat, chain, truths, batch_size, iterations, seed, strategy,
    verbose,
) -> None:  # fmt: skip
    """Runs one threat x defence x attack on every batch and fills `setting`."""
    release = DefendedUpdate(threat, chain)
    setting.epsilon = release.epsilon(batch_size=batch_size)
    began = time.perf_counter()
    psnrs, ssims, accuracies, exact, notes = [], [], [], [], []
    observations = [
        release.share(victim, x, y, seed=seed + index) for index, (x, y) in enumerate(truths)
    ]
    attacked = _attack_all(
        attack_class, victim, observations, threat, chain, truths, iterations, seed, strategy
    )
    for (x, y), result in zip(truths, attacked):
        if result.reconstruction is None:
            psnrs += [0.0] * len(y)
            ssims += [0.0] * len(y)
            exact += [False] * len(y)
            accuracies.append(0.0)
            notes.append(result.message)
            continue
        m = result.metrics
        psnrs += m["psnr_per_image"]
        ssims += m["ssim_per_image"]
        accuracies.append(m["label_accuracy"])
        matched = result.reconstruction[m["order"]]
        errors = np.abs(matched - x).reshape(len(y), -1).max(axis=1)
        exact += [bool(e < EXACT_ERROR) for e in errors]
        setting.pairs += [(x[i], matched[i], m["psnr_per_image"][i]) for i in range(len(y))]
    per_image = np.asarray(psnrs)
    setting.images = len(per_image)
    setting.psnr = float(per_image.mean())
    setting.ssim = float(np.mean(ssims))
    setting.label_accuracy = float(np.mean(accuracies))
    setting.recovered_20db = float(np.mean(per_image > 20.0))
    setting.recovered_30db = float(np.mean(per_image > 30.0))
    setting.psnr_per_image = per_image.tolist()
    setting.exact_per_image = exact
    setting.note = "; ".join(dict.fromkeys(notes))
    setting.seconds = time.perf_counter() - began
    if verbose:
        print(
            f"{setting.attack} on {setting.threat}, defence {setting.defense}: "
            f"{setting.psnr:.1f} dB, {np.mean(exact):.0%} exact, {setting.recovered_20db:.0%} "
            f"> 20 dB, labels {setting.label_accuracy:.2f}, {setting.seconds:.0f} s"
        )
