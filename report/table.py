"""The ablation table of a sweep, laid out like the paper's Table I, from its results.json files.

python -m report.table multirun/table/demo-demo

Prints the table and writes table.md, table.csv and table.png into the sweep dir. Rows are the
jobs (by experiment ID where they have one), columns the tasks in the paper's order and the
Speech / Music / Avg scores; for the paper's pair (hubert_mert) the paper's numbers stand beside.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.scores import PAPER_MUSIC, PAPER_SPEECH
from eval.tasks import PAPER_TASKS

SCORES = ("speech", "music", "avg")
PAPER_CSV = Path(__file__).resolve().parents[1] / "eval" / "data" / "paper_table1.csv"
PAPER_PAIR = "hubert_mert"


@dataclass
class Row:
    """One job of the sweep."""

    key: str  # the experiment ID (id5) or, without one, the job's dir name
    number: int | None  # the paper's row number, when the key is idN
    description: str
    status: str
    error: str | None = None
    tasks: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    pair: str | None = None
    notes: list[str] = field(default_factory=list)  # why a score is missing


def describe(record: dict[str, Any]) -> str:
    """Method, scope and alpha in a few words; a parent scored alone says so."""
    config = record.get("config") or {}
    parent = record.get("parent") or config.get("parent")
    if parent in ("a", "b"):
        source = str((config.get("pair") or {}).get(parent) or "")
        return f"model {parent.upper()} alone ({Path(source).name or source})"
    scope = config.get("permute") or {}
    merge = config.get("merge") or {}
    name = scope.get("name", "?")
    aligned = "no alignment" if name == "none" else str(name)
    if name != "none" and not scope.get("cnn", True):
        aligned += " without CNN"
    return f"{merge.get('method', 'linear')}, {aligned}, alpha {merge.get('alpha')}"


def load_rows(sweep: str | Path) -> list[Row]:
    """Every job under ``sweep`` that wrote a results.json, in the paper's row order."""
    rows = []
    for path in sorted(Path(sweep).rglob("results.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            rows.append(Row(path.parent.name, None, "?", "failed", f"unreadable results: {err}"))
            continue
        config = record.get("config") or {}
        key = record.get("experiment_id") or config.get("experiment_id") or path.parent.name
        match = re.fullmatch(r"id(\d+)", str(key))
        evaluation = record.get("evaluation") or {}
        rows.append(
            Row(
                key=str(key),
                number=int(match.group(1)) if match else None,
                description=describe(record),
                status=str(record.get("status")),
                error=record.get("error"),
                tasks={
                    name: m["value"]
                    for name, m in (evaluation.get("tasks") or {}).items()
                    if isinstance(m, dict) and m.get("value") is not None
                },
                scores={s: (evaluation.get("scores") or {}).get(s) for s in SCORES},
                pair=(config.get("pair") or {}).get("name"),
                notes=[
                    f"{s}: {(evaluation.get('scores') or {})[f'{s}_error']}"
                    for s in SCORES
                    if f"{s}_error" in (evaluation.get("scores") or {})
                ],
            )
        )
    return sorted(rows, key=lambda r: (r.number is None, r.number or 0, r.key))


def task_columns(rows: Sequence[Row]) -> list[str]:
    """Tasks present in any row: the paper's speech then music tasks in its order, then others."""
    present = {t for r in rows for t in r.tasks}
    paper = [t for t in (*PAPER_SPEECH, *PAPER_MUSIC) if t in present]
    return paper + sorted(present - set(paper))


def column_title(task: str) -> str:
    if task not in PAPER_TASKS:
        return task
    t = PAPER_TASKS[task]
    return f"{t.paper} (WER)" if t.metric == "wer" else t.paper


def paper_table() -> dict[int, dict[str, float]]:
    """The paper's Table I by row number: per-task values and the three scores."""
    with PAPER_CSV.open() as f:
        return {
            int(r["id"]): {k: float(v) for k, v in r.items() if k not in ("id", "config")}
            for r in csv.DictReader(f)
        }


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _cells(row: Row, tasks: Sequence[str]) -> list[str]:
    if row.status != "ok":
        return [row.status] + [""] * (len(tasks) + len(SCORES) - 1)
    return [_num(row.tasks.get(t)) for t in tasks] + [_num(row.scores.get(s)) for s in SCORES]


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]


def render(rows: Sequence[Row], paper: dict[int, dict[str, float]] | None) -> str:
    """The Markdown text: measured rows (failed ones with their error), then the paper's."""
    tasks = task_columns(rows)
    header = ["ID", "configuration", *map(column_title, tasks), "Speech", "Music", "Avg"]
    if paper:
        header += ["Speech (paper)", "Music (paper)", "Avg (paper)"]
    failed = any(r.status != "ok" for r in rows)
    if failed:
        header.append("error")
    body = []
    for r in rows:
        cells = [str(r.number or r.key), r.description, *_cells(r, tasks)]
        if paper:
            p = paper.get(r.number or -1, {})
            cells += [_num(p.get(s)) for s in SCORES]
        if failed:
            cells.append((r.error or "")[:200])
        body.append(cells)
    text = ["# Ablation table", "", *_markdown(header, body)]
    notes = [f"- {r.number or r.key}: {n}" for r in rows for n in r.notes]
    if notes:
        text += ["", "Scores left empty:", "", *notes]
    if paper:
        cols = [t for t in (*PAPER_SPEECH, *PAPER_MUSIC)]
        paper_body = [
            [str(n), *(_num(v.get(c)) for c in cols), *(_num(v.get(s)) for s in SCORES)]
            for n, v in sorted(paper.items())
        ]
        head = ["ID", *map(column_title, cols), "Speech", "Music", "Avg"]
        text += ["", "## The paper's Table I (arXiv 2506.11403)", "", *_markdown(head, paper_body)]
    return "\n".join(text) + "\n"


def write_csv(rows: Sequence[Row], paper: dict[int, dict[str, float]] | None, path: Path) -> None:
    """One line per job (source=measured) and, for the paper's pair, per paper row."""
    tasks = task_columns(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "id", "configuration", "status", *tasks, *SCORES, "error"])
        for r in rows:
            values = [r.tasks.get(t) for t in tasks] + [r.scores.get(s) for s in SCORES]
            w.writerow(
                ["measured", r.number or r.key, r.description, r.status, *values, r.error or ""]
            )
        for n, v in sorted((paper or {}).items()):
            values = [v.get(t) for t in tasks] + [v.get(s) for s in SCORES]
            w.writerow(["paper", n, "", "ok", *values, ""])


def plot(rows: Sequence[Row], paper: dict[int, dict[str, float]] | None, path: Path) -> None:
    """Grouped bars of Speech / Music / Avg per row; the paper's as hatched bars beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok"]
    series = [(s.capitalize(), [r.scores.get(s) for r in ok], {}) for s in SCORES]
    if paper:
        series += [
            (
                f"{s.capitalize()} (paper)",
                [paper.get(r.number or -1, {}).get(s) for r in ok],
                {"hatch": "//", "alpha": 0.5},
            )
            for s in SCORES
        ]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 3), 4))
    width = 0.8 / len(series)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, values, style) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(ok))]
        heights = [v if v is not None else 0.0 for v in values]
        ax.bar(xs, heights, width, label=label, color=colors[i % len(SCORES)], **style)
    labels = [str(r.number or r.key) for r in ok]
    long = any(len(x) > 4 for x in labels)  # job dir names of sweeps without experiment IDs
    ax.set_xticks(
        range(len(ok)), labels, rotation=30 if long else 0, ha="right" if long else "center"
    )
    ax.set_xlabel("ID")
    ax.set_ylabel("score (parent = 1000)")
    failed = [str(r.number or r.key) for r in rows if r.status != "ok"]
    title = "Speech / Music / Avg per configuration"
    ax.set_title(title + (f" (failed: {', '.join(failed)})" if failed else ""))
    ax.axhline(1000, color="gray", lw=0.5)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build(sweep: str | Path) -> dict[str, Path]:
    """Write table.md, table.csv and table.png into ``sweep``; return their paths."""
    sweep = Path(sweep)
    rows = load_rows(sweep)
    if not rows:
        raise FileNotFoundError(f"no results.json under {sweep}: run the sweep first")
    paper = paper_table() if any(r.pair == PAPER_PAIR for r in rows) else None
    paths = {ext: sweep / f"table.{ext}" for ext in ("md", "csv", "png")}
    paths["md"].write_text(render(rows, paper))
    write_csv(rows, paper, paths["csv"])
    plot(rows, paper, paths["png"])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep dir (hydra.sweep.dir)")
    args = parser.parse_args(argv)
    try:
        paths = build(args.sweep)
    except FileNotFoundError as err:
        parser.exit(2, f"{err}\n")
    print(paths["md"].read_text(), end="")
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
