"""Scores along one config axis of a sweep, one line per permutation scope, with interval bands.

python -m report.curve multirun/curve/demo-demo                          # over merge.alpha
python -m report.curve multirun/calib-curve/demo-demo --x calibration.size

Writes curve.csv (x, scope, speech, music, avg and their 95% paired-bootstrap intervals) and
curve.png into the sweep dir. Over merge.alpha this is the interpolation-barrier picture of the
re-basin literature; over calibration.size, curve.csv also has ``kept``: the share of aligned
units whose partner is the one they get at the largest size.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from eval.stats import SCORES
from report.record import JobRecord
from report.table import add_uncertainty, describe, load_records, shared

CALIBRATION_SIZE = "calibration.size"


def lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = (node or {}).get(part)
    return node


def scope_of(record: JobRecord) -> str:
    """The scope part of the table's description: ``none``, ``fnn_attn``, ``fnn_attn without
    CNN``."""
    return describe(record).split(", ")[1].replace("no alignment", "none")


def kept_partners(paths: dict[Any, str | None]) -> dict[Any, float | None]:
    """Per x: the share of units (over every aligned group) whose partner is the one at the
    largest x."""
    present = {x: p for x, p in paths.items() if p and Path(p).is_file()}
    if not present:
        return {x: None for x in paths}
    final = load_file(present[max(present)])
    out: dict[Any, float | None] = {}
    for x in paths:
        if x not in present:
            out[x] = None
            continue
        perms = load_file(present[x])
        same = sum(int((perms[g] == final[g]).sum()) for g in final if g in perms)
        total = sum(final[g].numel() for g in final if g in perms)
        out[x] = same / total if total else None
    return out


def build(sweep: str | Path, x: str = "merge.alpha") -> dict[str, Path]:
    sweep = Path(sweep)
    loaded = [(row, rec) for row, rec in load_records(sweep) if row.status == "ok"]
    record = shared([rec for _, rec in loaded])
    if record is None:
        raise FileNotFoundError(f"no finished job with per-clip results under {sweep}")
    points = []
    for row, rec in loaded:
        value = lookup(rec.config, x)
        if value is None:
            raise ValueError(f"{row.key}: its config has no {x}")
        row.key = f"{scope_of(rec)} @ {value}"  # a curve's rows are its points
        points.append((scope_of(rec), float(value), row, rec.permutations))
    add_uncertainty([p[2] for p in points], record, reference=None)
    points.sort(key=lambda p: (p[0], p[1]))
    kept: dict[tuple[str, float], float | None] = {}
    if x == CALIBRATION_SIZE:
        for scope in sorted({p[0] for p in points}):
            here = {v: perm for s, v, _, perm in points if s == scope}
            kept.update({(scope, v): k for v, k in kept_partners(here).items()})
    paths = {"csv": sweep / "curve.csv", "png": sweep / "curve.png"}
    write_csv(points, kept, x, paths["csv"])
    plot(points, kept, x, paths["png"])
    return paths


def write_csv(points, kept, x: str, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        head = [h for s in SCORES for h in (s, f"{s}_lo", f"{s}_hi")]
        w.writerow([x, "scope", *head, *(["kept"] if kept else [])])
        for scope, value, row, _ in points:
            cells = []
            for s in SCORES:
                lo, hi = row.intervals.get(s, (None, None))
                cells += [row.scores.get(s), lo, hi]
            w.writerow([value, scope, *cells, *([kept.get((scope, value))] if kept else [])])


def plot(points, kept, x: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*SCORES, *(["kept"] if kept else [])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    scopes = sorted({p[0] for p in points})
    for ax, panel in zip(axes[0], panels, strict=True):
        for scope in scopes:
            here = [p for p in points if p[0] == scope]
            xs = [p[1] for p in here]
            if panel == "kept":
                ys = [kept.get((scope, v)) for v in xs]
                ax.plot(xs, [100 * y if y is not None else float("nan") for y in ys], "o-")
                continue
            ys = [p[2].scores.get(panel) for p in here]
            spans = [p[2].intervals.get(panel) for p in here]
            (line,) = ax.plot(xs, [y if y is not None else float("nan") for y in ys], "o-")
            if all(spans):
                ax.fill_between(
                    xs,
                    [s[0] for s in spans],
                    [s[1] for s in spans],
                    alpha=0.2,
                    color=line.get_color(),
                )
            line.set_label(scope)
        ax.set_xlabel(x)
        if x == CALIBRATION_SIZE:
            ax.set_xscale("log", base=2)
        ax.set_title(
            "units keeping their partner (%)" if panel == "kept" else f"{panel.capitalize()}"
        )
        if panel != "kept":
            ax.axhline(1000, color="gray", lw=0.5)
    axes[0][0].set_ylabel("score (parent = 1000), 95% band")
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--x", default="merge.alpha", help="the config key on the x axis")
    args = parser.parse_args(argv)
    try:
        paths = build(args.sweep, args.x)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"{err}\n")
    print(paths["csv"].read_text(), end="")
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
