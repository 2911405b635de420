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

import itertools
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from tfleak.audit.inputs import check_model, defense_chain, load_images, parse_threat
from tfleak.audit.report import EXACT_ERROR, AuditReport, SettingResult, find_worst_cases
from tfleak.threats.defenses import DefendedUpdate

__all__ = ["ATTACKS", "DEFAULT_ATTACKS", "audit"]


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
    """Attacks a clone of `model` on a few batches of `data` per setting; see `tfleak.audit.run`.

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
        e.g. 'prune:0.9+quantize:8'), a `Defense` or `DPSGD`, or a list of them.
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
    victim = check_model(model, num_classes)
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
    cases = [(parse_threat(t), defense_chain(d)) for t, d in itertools.product(threats, defenses)]
    images, labels, description = load_images(data, victim, batch_size * batches, seed)
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
        worst_cases=find_worst_cases(results),
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
