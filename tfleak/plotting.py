"""Figures: image grids of originals and reconstructions, and progress GIFs.

Images are float arrays in [0, 1] shaped `[height, width, channels]` with 1 or 3
channels (values outside [0, 1] are clipped for display; NaN pixels are left
blank). Figures are written with matplotlib's non-interactive Agg backend, so
no display is needed, and atomically: a run killed while saving leaves the old
figure or the new one, never half a file.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfleak.io import atomic_write_bytes  # noqa: E402

__all__ = ["plot_image_rows", "save_progress_gif"]


def _displayable(image) -> np.ndarray:
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return image


def plot_image_rows(
    rows: Sequence[Sequence[np.ndarray]],
    path,
    row_titles: Optional[Sequence[str]] = None,
    column_titles: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    cell_inches: float = 1.2,
) -> Path:
    """Saves a grid of images, one list of images per row, as a PNG.

    Args:
      rows: rows of images, each `[height, width, channels]` in [0, 1]; rows may
        have different lengths.
      path: where to write the PNG; parent folders are created.
      row_titles: one label per row, written left of it (e.g. 'original',
        'noise 0.7, epsilon 3.4').
      column_titles: one label per column, written above the first row (e.g.
        the iteration of each snapshot).
      title: the figure's title.
      cell_inches: size of one image in inches.

    Returns:
      The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_rows = len(rows)
    num_columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(
        num_rows,
        num_columns,
        figsize=(cell_inches * num_columns + (1.2 if row_titles else 0), cell_inches * num_rows),
        squeeze=False,
    )
    for r, row in enumerate(rows):
        for c in range(num_columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c >= len(row):
                axis.axis("off")
                continue
            axis.imshow(_displayable(row[c]), cmap="gray", vmin=0.0, vmax=1.0)
            if r == 0 and column_titles is not None and c < len(column_titles):
                axis.set_title(column_titles[c], fontsize=8)
        if row_titles is not None:
            axes[r][0].set_ylabel(row_titles[r], fontsize=8, rotation=0, ha="right", va="center")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())


def save_progress_gif(
    frames: Sequence[np.ndarray], path, captions: Optional[Sequence[str]] = None, fps: float = 4
) -> Path:
    """Saves images `[height, width, channels]` in [0, 1] as an animated GIF.

    Each frame is drawn with matplotlib (so small images are upscaled and can
    carry a caption, e.g. the iteration) and written with Pillow.

    Args:
      frames: images `[height, width, channels]` in [0, 1], at least one.
      path: where to write the GIF (atomically); parent folders are created.
      captions: one title per frame.
      fps: frames per second.

    Returns:
      The path written.

    Raises:
      ValueError: `frames` is empty.
    """
    from matplotlib.animation import FuncAnimation, PillowWriter

    if len(frames) == 0:
        raise ValueError("save_progress_gif needs at least one frame; got none.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(2.5, 2.8))
    axis.set_xticks([])
    axis.set_yticks([])
    shown = axis.imshow(_displayable(frames[0]), cmap="gray", vmin=0.0, vmax=1.0)

    def draw(i):
        shown.set_data(_displayable(frames[i]))
        if captions is not None:
            axis.set_title(captions[i], fontsize=9)
        return (shown,)

    animation = FuncAnimation(figure, draw, frames=len(frames), blit=False)
    # Pillow picks the format from the name, so the frames go to a scratch .gif
    # first; the target is then written atomically, as every figure.
    try:
        with tempfile.TemporaryDirectory(prefix="tfleak-gif-") as scratch:
            scratch_path = os.path.join(scratch, "progress.gif")
            animation.save(scratch_path, writer=PillowWriter(fps=fps))
            with open(scratch_path, "rb") as file:
                data = file.read()
    finally:
        plt.close(figure)
    atomic_write_bytes(path, data)
    return path
