"""A training run's history as files: ``loss.csv`` (one row per step) and ``loss.png`` (two
panels, each the raw values and their 50-step moving mean). Shared by the demo encoders'
pretraining and by distillation."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

SMOOTHING = 50  # steps in the moving mean


def write_history(
    history: Sequence[Mapping[str, float]],
    out: Path,
    panels: Sequence[tuple[str, str]],
) -> None:
    """``history``'s rows to ``out/loss.csv``; ``panels``: (column, title) of the two plots."""
    with open(out / "loss.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]) if history else ["step"])
        w.writeheader()
        w.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h["step"] for h in history])
    fig, ax = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2))
    for (key, title), axis in zip(panels, np.atleast_1d(ax), strict=True):
        y = np.array([h[key] for h in history])
        axis.plot(steps, y, alpha=0.3, lw=0.8)
        k = min(SMOOTHING, len(y))
        if k:
            axis.plot(steps[k - 1 :], np.convolve(y, np.ones(k) / k, mode="valid"), lw=1.5)
        axis.set_xlabel("step")
        axis.set_title(title, fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)
