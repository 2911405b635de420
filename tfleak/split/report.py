"""Tables and figures of the split-learning study (`benchmarks/split_study.py`).

`results` is the study's results.json: `rows` (one per target, cut, attack
and defence; see `tfleak.split.study.attack_cut`), `targets` (accuracy and
epsilon of every target), `gallery` (test images) and `defense_cuts`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tfleak.io import atomic_write_bytes
from tfleak.plotting import plot_image_rows

__all__ = [
    "deepest_cut",
    "defence_label",
    "markdown",
    "plot_curve",
    "plot_tradeoff",
    "save_reconstructions",
    "write_figures",
    "works",
    "above_chance",
]


def works(row) -> bool:
    """Clearly works: re-identifies at least half of its images (top-1)."""
    return row["reidentification_top1"] >= 0.5


def above_chance(row) -> bool:
    """Re-identifies at least 10x chance (top-1); with 24 white-box images one hit is 14x."""
    return row["reidentification_top1"] >= 10 * row["chance_top1"]


def _curve(rows) -> list[dict]:
    """The plain target's undefended rows: the leakage curve (cut x attacker)."""
    return [r for r in rows if r["target"] == "plain" and r["defense"] == "none"]


def deepest_cut(rows, attack: str, key) -> int | None:
    """The deepest cut at which the plain target's undefended `attack` satisfies `key`."""
    cuts = [r["cut"] for r in _curve(rows) if r["attack"] == attack and key(r)]
    return max(cuts) if cuts else None


def defence_label(row) -> str:
    """'none', 'gaussian 3 (std 1.2)', 'laplace 1e+04', 'DP-Adam 0.7', 'NoPeek 5'."""
    kind = row.get("target_kind", "plain")
    if kind == "dp":
        return f"DP-Adam {row['noise_multiplier']:g}"
    if kind == "nopeek":
        return f"NoPeek {row['alpha']:g}"
    if row["defense"] == "none":
        return "none"
    return f"{row['defense']} {row['strength']:g}"


def _number(value, spec=".3f") -> str:
    return "-" if value is None else format(value, spec)


def _curve_table(results) -> list[str]:
    lines = [
        "| cut | code | attack | images | MSE | mean-image MSE | PSNR | SSIM | re-id top-1 "
        "| re-id top-5 | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in _curve(results["rows"]):
        lines.append(
            f"| {r['cut']} | {'x'.join(map(str, r['code_shape']))} | {r['attack']} "
            f"| {r['images']} | {r['mse']:.4f} | {r['mean_image_mse']:.4f} | {r['psnr']:.1f} "
            f"| {r['ssim']:.3f} | {r['reidentification_top1']:.3f} "
            f"| {r['reidentification_top5']:.3f} | {r['seconds']:.0f} |"
        )
    return lines


def _defence_table(results, cut) -> list[str]:
    """Decoder and white box side by side, one line per (target, defence) at `cut`."""
    pairs: dict[str, dict] = {}
    for r in results["rows"]:
        if r["cut"] == cut and r["attack"] in ("decoder", "whitebox"):
            pairs.setdefault(defence_label(r), {})[r["attack"]] = r
    lines = [
        "| defence | epsilon (weights: rdp / classic) | local epsilon per code | val acc "
        "| decoder MSE | mean-image MSE | decoder re-id top-1 | top-5 | white-box MSE "
        "| white-box re-id top-1 | top-5 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, pair in pairs.items():
        first = pair.get("decoder") or pair["whitebox"]
        epsilon = (
            f"{first['epsilon']:.1f} / {first['epsilon_classic']:.1f}"
            if "epsilon" in first
            else "-"
        )
        local = _number(first["epsilon_local"], "g")
        cells = []
        for attack in ("decoder", "whitebox"):
            r = pair.get(attack)
            if r is None:
                cells += ["-"] * (4 if attack == "decoder" else 3)
                continue
            cells += [f"{r['mse']:.4f}"] + (
                [f"{r['mean_image_mse']:.4f}"] if attack == "decoder" else []
            )
            cells += [f"{r['reidentification_top1']:.3f}", f"{r['reidentification_top5']:.3f}"]
        lines.append(
            f"| {label} | {epsilon} | {local} | {first['val_accuracy']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def markdown(results: dict) -> str:
    """results.json as Markdown: the curve, each defence cut's table, the summary lines."""
    rows, gallery = results["rows"], results["gallery"]
    plain = results["targets"]["plain"]
    lines = [
        f"Plain target: {plain['epochs']} epochs, validation accuracy {plain['val_accuracy']:.3f}. "
        f"Test: {gallery} unseen Tagalog images; chance re-identification top-1 "
        f"{1 / gallery:.4f}, top-5 {5 / gallery:.4f}.",
        "",
        "### Leakage at each cut (plain target, no defence)",
        "",
        *_curve_table(results),
        "",
    ]
    for attack in ("decoder", "whitebox"):
        lines.append(
            f"- {attack}: deepest cut beating the mean image (MSE): "
            f"{deepest_cut(rows, attack, lambda r: r['beats_mean_image']) or 'none'}; "
            f"re-identifying >= 10x chance: {deepest_cut(rows, attack, above_chance) or 'none'}; "
            f"re-identifying at least half (top-1 >= 0.5): "
            f"{deepest_cut(rows, attack, works) or 'none'}."
        )
    published = next((r for r in rows if r["attack"] == "decoder_published"), None)
    if published:
        lines.append(
            f"- published decoder at cut 4: {published['epochs_run']} epochs run, best "
            f"{published['best_epoch']}; training MSE {published['train_loss']:.4f} (running mean "
            f"of the best epoch; published 0.041), {published['train_mse']:.4f} evaluated "
            f"after training, held-out surrogates {published['held_out_mse']:.4f}; test MSE "
            f"{published['mse']:.4f} against the mean image's {published['mean_image_mse']:.4f}; "
            f"re-identification top-1 {published['reidentification_top1']:.3f}, top-5 "
            f"{published['reidentification_top5']:.3f}."
        )
    for cut in results.get("defense_cuts", []):
        scales = results["code_scales"].get(str(cut))
        lines += ["", f"### Defences at cut {cut}", ""]
        if scales:
            lines += [
                f"Gaussian strength in units of the codes' standard deviation on surrogates "
                f"({scales['std']:.3g}); Laplace clip: median L1 norm of a surrogate code "
                f"({scales['l1_median']:.4g}), scale 2 x clip / epsilon. DP-Adam: batch norm, "
                f"{results['config']['dp_epochs']} epochs, clip 1, learning rate 0.005, "
                f"variant {results['config']['dp_variant']}.",
                "",
            ]
        lines += _defence_table(results, cut)
    return "\n".join(lines) + "\n"


def _save(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curve(results: dict, path) -> None:
    """Re-identification top-1 and MSE / mean-image MSE against the cut, one line per attack."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    curve = _curve(results["rows"])
    for attack, marker in (("decoder", "o"), ("whitebox", "s"), ("decoder_published", "*")):
        rows = sorted((r for r in curve if r["attack"] == attack), key=lambda r: r["cut"])
        if not rows:
            continue
        cuts = [r["cut"] for r in rows]
        style = dict(marker=marker, label=attack.replace("_", " "), markersize=9)
        axes[0].plot(cuts, [max(r["reidentification_top1"], 1e-3) for r in rows], **style)
        axes[1].plot(cuts, [r["mse"] / r["mean_image_mse"] for r in rows], **style)
    axes[0].axhline(1 / results["gallery"], color="grey", linestyle=":", label="chance")
    axes[0].set(
        xlabel="cut (conv blocks on the device)",
        ylabel="re-identification top-1 (0 drawn at 0.001)",
        yscale="log",
        xticks=[1, 2, 3, 4],
    )
    axes[1].axhline(1.0, color="grey", linestyle=":", label="mean image")
    axes[1].set(
        xlabel="cut (conv blocks on the device)",
        ylabel="MSE / mean-image MSE",
        yscale="log",
        xticks=[1, 2, 3, 4],
    )
    for axis in axes:
        axis.legend(fontsize=8)
    figure.suptitle("How much each cut leaks (plain target, unseen Tagalog images)", fontsize=10)
    figure.tight_layout()
    _save(figure, Path(path))


_KINDS = {"none": "o", "gaussian": "s", "laplace": "v", "nopeek": "^", "dp": "D"}


def plot_tradeoff(results: dict, path) -> None:
    """Validation accuracy against re-identification top-1, one panel per defence cut."""
    cuts = results.get("defense_cuts", [])
    if not cuts:
        return
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(cuts), figsize=(6.5 * len(cuts), 5), squeeze=False)
    for axis, cut in zip(axes[0], cuts):
        for r in (
            r for r in results["rows"] if r["cut"] == cut and r["attack"] != "decoder_published"
        ):
            kind = r.get("target_kind", "plain")
            kind = kind if kind != "plain" else r["defense"]
            colour = "C0" if r["attack"] == "decoder" else "C3"
            axis.scatter(
                r["val_accuracy"],
                max(r["reidentification_top1"], 1e-3),
                marker=_KINDS[kind],
                c=colour,
                s=50,
                alpha=0.75,
            )
            axis.annotate(
                defence_label(r).replace("gaussian", "G").replace("laplace", "L"),
                (r["val_accuracy"], max(r["reidentification_top1"], 1e-3)),
                fontsize=6,
                alpha=0.8,
            )
        axis.axhline(1 / results["gallery"], color="grey", linestyle=":")
        axis.set(
            xlabel="validation accuracy (server receives the sent code)",
            ylabel="re-identification top-1 (0 drawn at 0.001)",
            yscale="log",
            title=f"cut {cut} ({'x'.join(map(str, results['code_shapes'][str(cut)]))})",
        )
    handles = [
        plt.Line2D([], [], marker=m, linestyle="", color="k", label=k) for k, m in _KINDS.items()
    ]
    handles += [
        plt.Line2D([], [], marker="o", linestyle="", color=c, label=a)
        for a, c in (("decoder", "C0"), ("white box", "C3"))
    ]
    handles.append(plt.Line2D([], [], color="grey", linestyle=":", label="chance"))
    figure.legend(handles=handles, fontsize=8, loc="center right")
    figure.suptitle(
        "What each defence costs in accuracy and buys in re-identification", fontsize=10
    )
    figure.tight_layout(rect=(0, 0, 0.88, 1))
    _save(figure, Path(path))


def save_reconstructions(path, reconstructions) -> None:
    """Keeps a row's first reconstructions (float16 `.npz`) for the figures of a resumed run."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=np.asarray(reconstructions).astype(np.float16))
    atomic_write_bytes(path, buffer.getvalue())


def _plot_reconstructions(results: dict, test_images, folder: Path, path, rows) -> None:
    """The first test images, then each row's saved reconstructions (`folder/<name>.npz`)."""
    shown = test_images[: results["config"]["figure_images"]]
    images, titles = [list(shown)], ["original"]
    for r in rows:
        saved = folder / f"{r['name']}.npz"
        if saved.is_file():
            images.append(list(np.load(saved)["images"].astype(np.float32)))
            titles.append(f"cut {r['cut']} {r['attack'].replace('_', ' ')}\n{defence_label(r)}")
    plot_image_rows(
        images,
        path,
        row_titles=titles,
        cell_inches=0.9,
        title="Unseen Tagalog test images reconstructed from the codes",
    )


def write_figures(results: dict, test_images, output_dir) -> None:
    """curve.png, tradeoff.png, reconstructions.png (the curve's rows) and
    reconstructions_cut<k>.png (every row at each defence cut) in `output_dir`."""
    output_dir = Path(output_dir)
    plot_curve(results, output_dir / "curve.png")
    plot_tradeoff(results, output_dir / "tradeoff.png")
    folder = output_dir / "reconstructions"
    _plot_reconstructions(
        results, test_images, folder, output_dir / "reconstructions.png", _curve(results["rows"])
    )
    for cut in results.get("defense_cuts", []):
        rows = [r for r in results["rows"] if r["cut"] == cut]
        _plot_reconstructions(
            results, test_images, folder, output_dir / f"reconstructions_cut{cut}.png", rows
        )
