"""Alignment diagnostics: the paper's Table II (share of moved units) and correlation heatmaps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin  # noqa: F401 - PNG's writer, loaded once

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


# Diverging colour map for correlations: blue (-1), white (0), red (+1), as RGB stops.
_STOPS = torch.tensor(
    [[33, 102, 172], [103, 169, 207], [247, 247, 247], [239, 138, 98], [178, 24, 43]],
    dtype=torch.float32,
)


def _colour(mat: torch.Tensor) -> torch.Tensor:
    """(rows, cols) in [-1, 1] -> (rows, cols, 3) uint8 on the diverging map."""
    pos = (mat.clamp(-1, 1) + 1) / 2 * (len(_STOPS) - 1)
    low = pos.floor().long().clamp(max=len(_STOPS) - 2)
    frac = (pos - low)[..., None]
    return (_STOPS[low] * (1 - frac) + _STOPS[low + 1] * frac).round().to(torch.uint8)


def heatmap_units(score: torch.Tensor, perm: torch.Tensor, max_units: int) -> torch.Tensor:
    """At most ``max_units`` of A's units for a picture of a large group: A's units ranked by
    their matched correlation and taken at even steps over the ranks, so the crop shows the
    group's strong and weak matches alike."""
    n = score.shape[0]
    if n <= max_units:
        return torch.arange(n)
    ranked = torch.argsort(score[torch.arange(n), perm], descending=True, stable=True)
    return ranked[torch.linspace(0, n - 1, max_units).round().long()]


def plot_alignment(
    spec: PermSpec,
    stats: Mapping[str, PointStats],
    perms: Mapping[str, torch.Tensor],
    group: str,
    path: str | Path,
    max_units: int = 128,
    data: bool = False,
) -> Path:
    """Side-by-side heatmaps of one group's correlation before and after alignment: rows are
    A's units, columns B's units at the same index (before) or B's matched unit (after), so
    the matched pairs lie on the diagonal. A group larger than ``max_units`` is shown by that
    many units spread over its matched-correlation ranks (:func:`heatmap_units`); ``data``
    also writes the whole matrix and the permutation beside the picture (``.safetensors``).

    Drawn with PIL, pixel for pixel: a picture costs milliseconds, not a plotting library's
    start-up and layout."""
    g = spec[group]
    score = group_score(g, stats).float()
    perm = perms.get(group, torch.arange(g.size))
    rows = heatmap_units(score, perm, max_units)
    n, everything = len(rows), torch.arange(g.size)
    panels = [
        (
            f"before: mean diag {float(score[everything, everything].mean()):.3f}",
            score[rows][:, rows],
        ),
        (
            f"after: mean diag {float(score[everything, perm].mean()):.3f}",
            score[rows][:, perm[rows]],
        ),
    ]
    cell = max(1, 320 // n)
    side, pad, top = n * cell, 16, 52
    font = ImageFont.load_default(13)
    image = Image.new("RGB", (2 * side + 3 * pad + 70, side + top + 34), "white")
    draw = ImageDraw.Draw(image)
    shown = (
        f"{n} of {g.size} units, spread over matched-correlation ranks"
        if n < g.size
        else (f"all {g.size} units")
    )
    draw.text(
        (pad, 6), f"{group}: correlation of A's units (rows) and B's ({shown})", "black", font
    )
    for i, (title, mat) in enumerate(panels):
        x = pad + i * (side + pad)
        tile = Image.fromarray(_colour(mat).numpy()).resize((side, side), Image.NEAREST)
        image.paste(tile, (x, top))
        draw.text((x, top - 18), title, "black", font)
    draw.text((pad, top + side + 8), "unit of B", "black", font)
    bar_x, steps = 2 * side + 3 * pad, torch.linspace(1, -1, side)[:, None].expand(side, 14)
    image.paste(Image.fromarray(_colour(steps).numpy()), (bar_x, top))
    for value, y in ((1, top), (0, top + side // 2 - 6), (-1, top + side - 12)):
        draw.text((bar_x + 18, y), f"{value:+d}" if value else "0", "black", font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, compress_level=1)  # fast; the flat colour blocks compress well anyway
    if data:
        from safetensors.torch import save_file

        save_file(
            {"correlation": score.contiguous(), "perm": perm.contiguous()},
            str(path.with_suffix(".safetensors")),
        )
    return path
