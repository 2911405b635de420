"""What an audit measured: one `SettingResult` per threat, defence and attack,
one `WorstCase` per threat and defence, and the `AuditReport` that holds them
(`to_dict`, `to_markdown`, `save`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["EXACT_ERROR", "SettingResult", "WorstCase", "AuditReport", "find_worst_cases"]

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


def find_worst_cases(settings) -> list:
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
