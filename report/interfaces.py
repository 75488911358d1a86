"""Interfaces over layers side by side: each parent, and the parents' layer fusion, read
through the weighted sum, HConv and CHConv (``eval.interface.name``; ``make interfaces``).

python -m report.interfaces multirun/interfaces/demo-demo

One job per interface (a pair's model A scored alone: its references are A, B and their
fusion under that interface). Rows are named by upstream and interface (``A-hconv``,
``fusion-chconv``); every score is normalised by the parents under the weighted sum (model A =
1000 on Speech, model B = 1000 on Music); each row is tested against the same upstream under
the weighted sum, and every fusion against the better parent of each task (exact McNemar,
Benjamini-Hochberg over each family of tests). Columns add the interface's parameters and
the probes' training seconds (every task, seed and learning rate).

Writes table.md, table.csv, table.png and significance.csv into the sweep dir.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

from eval import interface
from eval.stats import LEVEL, benjamini_hochberg, mcnemar, outcome
from report.record import Evaluation, JobRecord
from report.table import (
    Row,
    add_uncertainty,
    cells,
    column_title,
    load_records,
    markdown,
    plot,
    task_columns,
    value_cells,
    value_header,
)
from report.uncertainty import ALPHA, Test, suite_tasks, write_significance

BASELINE = "weighted_sum"
UPSTREAMS = {"a": "A", "b": "B", "fusion": "fusion"}


def interface_of(record: JobRecord) -> str:
    return str(((record.config.get("eval") or {}).get("interface") or {}).get("name") or BASELINE)


def shape(path: str) -> tuple[int, int]:
    """(layers, width) an encoder's probes read: its hidden states, the input's included."""
    config = json.loads((Path(path) / "config.json").read_text())
    return int(config["num_hidden_layers"]) + 1, int(config["hidden_size"])


def interface_parameters(name: str, shapes: Sequence[tuple[int, int]]) -> int:
    layers, dims = [s[0] for s in shapes], [s[1] for s in shapes]
    return sum(p.numel() for p in interface.build(name, layers, dims).parameters())


def gather(sweep: str | Path) -> tuple[list[Row], dict[str, dict], JobRecord]:
    """The rows (``A-hconv``, ...), what each costs, and the weighted-sum job's record (the
    normalisers)."""
    loaded = [
        (row, rec) for row, rec in load_records(sweep) if rec.status == "ok" and rec.evaluation
    ]
    by_interface = {interface_of(rec): rec for _, rec in loaded}
    if BASELINE not in by_interface:
        raise ValueError(
            f"no finished {BASELINE} job under {sweep}: its parents normalise every score "
            "(make interfaces runs eval.interface.name=weighted_sum,hconv,chconv)"
        )
    suites = {json.dumps((rec.evaluation or Evaluation()).suite) for rec in by_interface.values()}
    if len(suites) > 1:
        raise ValueError(f"the jobs under {sweep} were evaluated on different suites")
    rows, costs = [], {}
    for name in sorted(by_interface, key=lambda n: (n != BASELINE, n)):
        record = by_interface[name]
        ev = record.evaluation or Evaluation()
        members = (record.config.get("models") or {}).get("members") or {}
        shapes = {w: shape(str(members[w])) for w in ev.members}
        for who, label in UPSTREAMS.items():
            if not ev.predictions.get(who):
                continue
            key = f"{label}-{name}"
            parts = list(shapes.values()) if who == "fusion" else [shapes[who]]
            rows.append(
                Row(key, None, f"{label} through {name.replace('_', ' ')}", "ok",
                    tasks=dict(ev.references.get(who) or {}), tests=ev.predictions[who])
            )  # fmt: skip
            seconds = (ev.probe_seconds.get(who) or {}).values()
            costs[key] = {
                "parameters": interface_parameters(name, parts),
                "train_seconds": sum(s or 0.0 for s in seconds),
                "upstream": who,
            }
    return rows, costs, by_interface[BASELINE]


def against_better_parent(rows: Sequence[Row], baseline: JobRecord) -> list[Test]:
    """Each fusion row against the better weighted-sum parent of every accuracy task."""
    ev = baseline.evaluation or Evaluation()
    tests = []
    for row in rows:
        if not row.key.startswith("fusion-"):
            continue
        for task in suite_tasks(baseline):
            if task.metric != "accuracy" or task.name not in row.tests:
                continue
            parents = {w: ev.predictions[w][task.name] for w in ev.parents}
            best = max(parents, key=lambda w: (ev.references.get(w) or {}).get(task.name, 0.0))
            mine, theirs = outcome(row.tests[task.name]), outcome(parents[best])
            diff = row.tasks.get(task.name, 0.0) - (ev.references.get(best) or {})[task.name]
            p = mcnemar(mine, theirs)
            tests.append(Test(row.key, task.name, f"{UPSTREAMS[best]}-{BASELINE}", "mcnemar",
                              diff, p))  # fmt: skip
    for test, adjusted in zip(tests, benjamini_hochberg([t.p for t in tests]), strict=True):
        test.p_bh = float(adjusted)
    return tests


def rescore(rows: Sequence[Row], costs: dict[str, dict], baseline: JobRecord) -> list[Test]:
    """Scores against the weighted-sum parents; each row tested against its upstream's
    weighted-sum row; BH over the table."""
    own = {r.key: f"{UPSTREAMS[costs[r.key]['upstream']]}-{BASELINE}" for r in rows}
    return add_uncertainty(rows, baseline, own, rescore=True)


def render(rows: Sequence[Row], costs: dict[str, dict], below: Sequence[Test]) -> str:
    tasks = task_columns(rows)
    header = ["row", "interface", *map(column_title, tasks), "Speech", "Music", "Avg",
              "interface parameters", "probe training s"]  # fmt: skip
    body = [
        [
            r.key,
            r.description,
            *cells(r, tasks),
            f"{costs[r.key]['parameters']:,}",
            f"{costs[r.key]['train_seconds']:.0f}",
        ]  # fmt: skip
        for r in rows
    ]
    text = ["# Interfaces over layers", "", *markdown(header, body), ""]
    text.append(
        f"Scores normalised by the parents under the weighted sum (A = 1000 on Speech, B = 1000 "
        f"on Music); brackets: {LEVEL:.0%} paired-bootstrap intervals; `*`: differs from the same "
        f"upstream under the weighted sum (McNemar per task, paired bootstrap for scores; "
        f"Benjamini-Hochberg over the table, FDR {ALPHA:g}; significance.csv)."
    )
    text += ["", "## Each fusion against the better parent of each task", ""]
    for key in sorted({t.row for t in below}):
        mine = [t for t in below if t.row == key]
        worse = [f"{t.column} ({t.difference:+.1f} vs {t.reference})" for t in mine
                 if t.significant and (t.difference or 0) < 0]  # fmt: skip
        verdict = "significantly below it on " + ", ".join(worse) if worse else "never below it"
        text.append(f"- {key}: {verdict} (McNemar, BH over {len(below)} tests)")
    return "\n".join(text) + "\n"


def write_csv(rows: Sequence[Row], costs: dict[str, dict], path: Path) -> None:
    tasks = task_columns(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "interface", *value_header(tasks), "interface_parameters",
                    "probe_train_seconds"])  # fmt: skip
        for r in rows:
            cost = costs[r.key]
            w.writerow([r.key, r.description, *value_cells(r, tasks), cost["parameters"],
                        cost["train_seconds"]])  # fmt: skip


def build(sweep: str | Path) -> dict[str, Path]:
    sweep = Path(sweep)
    rows, costs, baseline = gather(sweep)
    tests = rescore(rows, costs, baseline)
    below = against_better_parent(rows, baseline)
    paths = {ext: sweep / f"table.{ext}" for ext in ("md", "csv", "png")}
    paths["md"].write_text(render(rows, costs, below))
    write_csv(rows, costs, paths["csv"])
    plot(rows, None, paths["png"])
    paths["significance"] = write_significance([*tests, *below], sweep / "significance.csv")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the interfaces sweep dir (make interfaces)")
    args = parser.parse_args(argv)
    try:
        paths = build(args.sweep)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"{err}\n")
    print(paths["md"].read_text(), end="")
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
