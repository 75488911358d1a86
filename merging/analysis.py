"""Alignment diagnostics: the paper's Table II (share of moved units) and correlation heatmaps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from merging.calibrate import PointStats
from merging.match import group_score
from merging.spec import PermSpec


def alignment_table(
    spec: PermSpec, stats: Mapping[str, PointStats], perms: Mapping[str, torch.Tensor]
) -> list[dict]:
    """Per aligned group: share of indices that moved, mean matched correlation before/after
    (None without calibration statistics: a data-free matcher)."""
    rows = []
    for g in spec.groups:
        if g.name not in perms:
            continue
        perm = perms[g.name]
        idx = torch.arange(g.size)
        score = group_score(g, stats) if all(p in stats for p in g.points) else None
        rows.append(
            {
                "group": g.name,
                "kind": g.kind,
                "units": g.size,
                "moved": float((perm != idx).double().mean()),
                "corr_before": None if score is None else float(score[idx, idx].mean()),
                "corr_after": None if score is None else float(score[idx, perm].mean()),
                "exact": g.exact,
            }
        )
    return rows


def plot_alignment(
    spec: PermSpec,
    stats: Mapping[str, PointStats],
    perms: Mapping[str, torch.Tensor],
    group: str,
    path: str | Path,
    max_units: int = 128,
) -> Path:
    """Side-by-side heatmaps of one group's correlation matrix before and after alignment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = spec[group]
    score = group_score(g, stats).float()
    perm = perms.get(group, torch.arange(g.size))
    n = min(g.size, max_units)
    before, after = score[:n, :n], score[:, perm][:n, :n]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), constrained_layout=True)
    for ax, mat, title in ((axes[0], before, "before"), (axes[1], after, "after alignment")):
        im = ax.imshow(mat.numpy(), vmin=-1, vmax=1, cmap="RdBu_r", interpolation="nearest")
        ax.set_title(f"{title}: mean diag {float(mat.diagonal().mean()):.3f}")
        ax.set_xlabel("unit of B")
        ax.set_ylabel("unit of A")
    fig.colorbar(im, ax=axes, shrink=0.8, label="Pearson correlation")
    fig.suptitle(f"{group}: correlation of A's and B's units (first {n} of {g.size})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
