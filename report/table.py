"""The ablation table of a sweep, laid out like the paper's Table I, from its results.json files.

python -m report.table multirun/table/demo-demo

Prints the table and writes table.md, table.csv, table.png and significance.csv into the sweep
dir. Rows are the jobs (by experiment ID where they have one) and two reference rows (s3prl's
FBANK, and one probe over both parents' layers: the two-model upper bound); columns are the tasks
in the paper's order and the Speech / Music / Avg scores, each with its 95% paired-bootstrap
interval and marked where it differs significantly from the reference row (``--reference``,
default ID 4, the plain 0.9/0.1 interpolation). For the paper's pair (hubert_mert) the paper's
numbers stand beside.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eval.scores import PAPER_MUSIC, PAPER_SPEECH
from eval.stats import LEVEL, SCORES, Bootstrap
from eval.tasks import PAPER_TASKS
from report.record import Evaluation, JobRecord
from report.uncertainty import ALPHA, suite_tasks, uncertainty, write_significance

REFERENCE = "id4"  # the row every other is tested against (report.reference)
REFERENCE_ROWS = {  # references every job records, shown once as rows of their own
    "fbank": "FBANK (s3prl), reference",
    "fusion": "A + B layer fusion",
}
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
    source: str = "measured"  # measured (a job) | reference (recorded beside every job)
    tests: dict[str, dict] = field(default_factory=dict)  # per-clip test records by task
    intervals: dict[str, list[float]] = field(default_factory=dict)  # column -> [lo, hi]
    significant: set[str] = field(default_factory=set)  # columns that differ from the reference


def describe(record: JobRecord) -> str:
    """Method, scope and alpha in a few words; a parent scored alone says so."""
    config = record.config
    parent = record.parent or config.get("parent")
    if parent:
        models = config.get("models") or {}
        source = str((models.get("members") or config.get("pair") or {}).get(parent) or "")
        who = f"model {parent.upper()}" if models.get("name", "pair") == "pair" else parent
        return f"{who} alone ({Path(source).name or source})"
    scope = config.get("permute") or {}
    merge = record.merge or config.get("merge") or {}
    name = scope.get("name", "?")
    aligned = "no alignment" if name == "none" else str(name)
    if name != "none" and not scope.get("cnn", True):
        aligned += " without CNN"
    if name != "none" and (record.match or "exact") != "exact":
        aligned += f" by {record.match}"
    method = merge.get("method") or str(merge.get("_target_", "linear")).rsplit(".", 1)[-1].lower()
    settings = [
        f"{k} {_setting(v)}" for k, v in merge.items() if k not in ("method", "_target_", "refined")
    ]
    return ", ".join([method, aligned, *settings])


def _setting(value: object, nested: bool = False) -> str:
    """A per-member (or per-part) mapping as ``speech 1.0 / music 0.5``."""
    if not isinstance(value, dict):
        return str(value)
    text = " / ".join(f"{k} {_setting(v, True)}" for k, v in value.items())
    return f"({text})" if nested else text


def load_rows(sweep: str | Path) -> list[Row]:
    """Every job under ``sweep`` that wrote a results.json, in the paper's row order."""
    return [row for row, _ in load_records(sweep)]


def load_records(sweep: str | Path) -> list[tuple[Row, JobRecord]]:
    """Every job's row and its record (empty if unreadable), in row order."""
    rows = []
    for path in sorted(Path(sweep).rglob("results.json")):
        try:
            record = JobRecord.read(path)
        except (OSError, ValueError, TypeError) as err:
            row = Row(path.parent.name, None, "?", "failed", f"unreadable results: {err}")
            rows.append((row, JobRecord(status="failed")))
            continue
        key = record.key or path.parent.name
        match = re.fullmatch(r"id(\d+)", str(key))
        evaluation = record.evaluation or Evaluation()
        row = Row(
            key=str(key),
            number=int(match.group(1)) if match else None,
            description=describe(record),
            status=str(record.status),
            error=record.error,
            tasks=evaluation.values(),
            scores={s: evaluation.scores.get(s) for s in SCORES},
            pair=(record.config.get("pair") or {}).get("name"),
            notes=[
                f"{s}: {evaluation.scores[f'{s}_error']}"
                for s in SCORES
                if f"{s}_error" in evaluation.scores
            ],
            tests=evaluation.predictions.get("merged") or {},
        )
        rows.append((row, record))
    return sorted(rows, key=lambda r: (r[0].number is None, r[0].number or 0, r[0].key))


def shared(records: Sequence[JobRecord]) -> JobRecord | None:
    """The evaluation every ok job shares (parents, references, floors, suite), from the
    first job that recorded per-clip outcomes; None if none did (older results)."""
    for record in records:
        evaluation = record.evaluation
        if (
            record.status == "ok"
            and evaluation
            and set(evaluation.parents) <= set(evaluation.predictions)
        ):
            return record
    return None


def reference_rows(record: JobRecord) -> list[Row]:
    """The rows every job recorded as references: each member of a pool alone (a pair's
    parents are jobs of their own, IDs 1 and 2), the shared base, FBANK and the layer fusion."""
    evaluation = record.evaluation or Evaluation()
    config = record.config
    pair = (config.get("pair") or {}).get("name")
    models = config.get("models") or {}
    described = dict(REFERENCE_ROWS)
    if models.get("name") not in (None, "pair"):
        sources = {**(models.get("members") or {}), "base": models.get("base")}
        alone = {
            who: f"{who} alone ({Path(str(sources.get(who) or who)).name})"
            for who in (*evaluation.members, "base")
        }
        fusion = f"{' + '.join(evaluation.members)} layer fusion"
        described = {**alone, "fbank": described["fbank"], "fusion": fusion}
    described["fusion"] += f" by {interface_name(record)} ({len(evaluation.members)}x compute)"
    return [
        Row(
            who,
            None,
            description,
            "ok",
            tasks=dict(evaluation.references.get(who) or {}),
            pair=pair,
            source="reference",
            tests=evaluation.predictions[who],
        )
        for who, description in described.items()
        if evaluation.predictions.get(who)
    ]


def interface_name(record: JobRecord) -> str:
    """How the job's probes read the layers (``eval.interface``): ``weighted sum``, ``hconv``."""
    chosen = ((record.config.get("eval") or {}).get("interface") or {}).get("name")
    return str(chosen or "weighted_sum").replace("_", " ")


def add_uncertainty(
    rows: Sequence[Row],
    record: JobRecord,
    reference: str | Mapping[str, str] | None,
    rescore: bool = False,
) -> list:
    """Fill every row's intervals and significant columns, normalised by ``record``'s parents
    and tested against ``reference`` (one row, or each row's own); the list of tests. The
    reference rows get their scores here (no job scored them); with ``rescore``, every row
    (rows from jobs that normalised by other members: ``report.routes``)."""
    evaluation = record.evaluation or Evaluation()
    boot = Bootstrap.of((record.config.get("eval") or {}).get("bootstrap"))
    floor = evaluation.floors if evaluation.floor == "paper" else "majority"
    scored = {r.key: r.tests for r in rows if r.status == "ok" and r.tests}
    parents = tuple(evaluation.predictions[who] for who in evaluation.parents)
    points, spans, tests = uncertainty(
        scored,
        parents,
        suite_tasks(record),
        floor,
        reference,
        boot.resamples,
        boot.seed,
        boot.level,
    )
    for r in rows:
        r.intervals = spans.get(r.key, {})
        r.significant = {t.column for t in tests if t.row == r.key and t.significant}
        if (rescore or r.source == "reference") and r.key in points:
            r.scores = {s: points[r.key].get(s) for s in SCORES}
    return tests


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


def _cell(row: Row, column: str, value: float | None) -> str:
    """``value [lo, hi]`` and a ``*`` where it differs significantly from the reference."""
    if value is None:
        return ""
    text = _num(value)
    if column in row.intervals:
        lo, hi = row.intervals[column]
        text += f" [{lo:.1f}, {hi:.1f}]"
    return text + ("*" if column in row.significant else "")


def cells(row: Row, tasks: Sequence[str]) -> list[str]:
    if row.status != "ok":
        return [row.status] + [""] * (len(tasks) + len(SCORES) - 1)
    return [_cell(row, t, row.tasks.get(t)) for t in tasks] + [
        _cell(row, s, row.scores.get(s)) for s in SCORES
    ]


def row_label(row: Row) -> str:
    return str(row.number or row.key)


def markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]


def render(
    rows: Sequence[Row], paper: dict[int, dict[str, float]] | None, reference: str | None = None
) -> str:
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
        line = [row_label(r), r.description, *cells(r, tasks)]
        if paper:
            p = paper.get(r.number or -1, {})
            line += [_num(p.get(s)) for s in SCORES]
        if failed:
            line.append((r.error or "")[:200])
        body.append(line)
    text = ["# Ablation table", "", *markdown(header, body)]
    if any(r.intervals for r in rows):
        ref = next((row_label(r) for r in rows if r.key == reference), None)
        text += [
            "",
            f"Brackets: {LEVEL:.0%} paired-bootstrap intervals (test clips and probe seeds "
            "resampled, the same draws for every row; the score formula applied per resample).",
        ]
        if ref is not None:
            text.append(
                f"`*`: differs from row {ref} (exact McNemar per accuracy task, paired bootstrap "
                f"for WER and scores; Benjamini-Hochberg over the table, FDR {ALPHA:g}); "
                "every p-value is in significance.csv."
            )
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
        text += ["", "## The paper's Table I (arXiv 2506.11403)", "", *markdown(head, paper_body)]
    return "\n".join(text) + "\n"


def value_header(tasks: Sequence[str]) -> list[str]:
    """CSV columns of every task and score, each followed by its interval's ends."""
    return [h for c in (*tasks, *SCORES) for h in (c, f"{c}_lo", f"{c}_hi")]


def value_cells(row: Row, tasks: Sequence[str]) -> list:
    """``row``'s values under ``value_header(tasks)``."""
    cells: list = []
    for c in tasks:
        cells += [row.tasks.get(c), *row.intervals.get(c, (None, None))]
    for c in SCORES:
        cells += [row.scores.get(c), *row.intervals.get(c, (None, None))]
    return cells


def write_csv(rows: Sequence[Row], paper: dict[int, dict[str, float]] | None, path: Path) -> None:
    """One line per job (source=measured) and, for the paper's pair, per paper row."""
    tasks = task_columns(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "id", "configuration", "status", *value_header(tasks), "error"])
        for r in rows:
            values = value_cells(r, tasks)
            w.writerow([r.source, row_label(r), r.description, r.status, *values, r.error or ""])
        for n, v in sorted((paper or {}).items()):
            values = [x for c in (*tasks, *SCORES) for x in (v.get(c), None, None)]
            w.writerow(["paper", n, "", "ok", *values, ""])


def plot(rows: Sequence[Row], paper: dict[int, dict[str, float]] | None, path: Path) -> None:
    """Grouped bars of Speech / Music / Avg per row; the paper's as hatched bars beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.status == "ok"]

    def errors(score: str) -> list[list[float]] | None:
        spans = [r.intervals.get(score) for r in ok]
        if not any(spans):
            return None
        values = [r.scores.get(score) or 0.0 for r in ok]
        return [
            [v - s[0] if s else 0.0 for v, s in zip(values, spans, strict=True)],
            [s[1] - v if s else 0.0 for v, s in zip(values, spans, strict=True)],
        ]

    series = [
        (s.capitalize(), [r.scores.get(s) for r in ok], {"yerr": errors(s), "capsize": 2})
        for s in SCORES
    ]
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
    labels = [row_label(r) for r in ok]
    long = any(len(x) > 4 for x in labels)  # job dir names of sweeps without experiment IDs
    ax.set_xticks(
        range(len(ok)), labels, rotation=30 if long else 0, ha="right" if long else "center"
    )
    ax.set_xlabel("ID")
    ax.set_ylabel("score (parent = 1000)")
    failed = [row_label(r) for r in rows if r.status != "ok"]
    title = "Speech / Music / Avg per configuration"
    if any(r.intervals for r in ok):
        title += f" ({LEVEL:.0%} intervals)"
    ax.set_title(title + (f" (failed: {', '.join(failed)})" if failed else ""))
    ax.axhline(1000, color="gray", lw=0.5)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build(sweep: str | Path, reference: str | None = None) -> dict[str, Path]:
    """Write table.md, table.csv, table.png (and, with per-clip results, significance.csv)
    into ``sweep``; return their paths. ``reference``: the row tested against (default
    the jobs' ``report.reference``, else ID 4)."""
    sweep = Path(sweep)
    loaded = load_records(sweep)
    if not loaded:
        raise FileNotFoundError(f"no results.json under {sweep}: run the sweep first")
    rows = [row for row, _ in loaded]
    record = shared([rec for _, rec in loaded])
    paths = {ext: sweep / f"table.{ext}" for ext in ("md", "csv", "png")}
    if record is not None:
        reference = reference or (record.config.get("report") or {}).get("reference", REFERENCE)
        rows += reference_rows(record)
        tests = add_uncertainty(rows, record, reference)
        paths["significance"] = write_significance(tests, sweep / "significance.csv")
    paper = paper_table() if any(r.pair == PAPER_PAIR for r in rows) else None
    paths["md"].write_text(render(rows, paper, reference))
    write_csv(rows, paper, paths["csv"])
    plot(rows, paper, paths["png"])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep dir (hydra.sweep.dir)")
    parser.add_argument(
        "--reference", help=f"the row others are tested against (default: {REFERENCE})"
    )
    args = parser.parse_args(argv)
    try:
        paths = build(args.sweep, args.reference)
    except FileNotFoundError as err:
        parser.exit(2, f"{err}\n")
    print(paths["md"].read_text(), end="")
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
