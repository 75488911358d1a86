"""Routes to one speech+music encoder, side by side on one suite, with their costs.

python -m report.routes multirun/routes/demo-demo

Reads every job of a routes sweep (``make routes``): merges of the two teachers (a pair, e.g.
IDs 4 and 5), merges of students distilled from one initialisation (a pool with a base), and
encoders scored alone (``parent=NAME``). Every job's per-clip outcomes, and those of the
encoders its evaluation probed alone, become rows; one encoder probed by several jobs is one row.
Every row is rescored against the teachers (Speech by the speech teacher, Music by the music
teacher, from the pair's record), tested against the paper's method (``--reference``, ID 5),
and given its costs: parameters, forward GFLOP per second of audio (counted), seconds per hour
of audio (timed here), and the training the route needs beyond the teachers (distillation steps
and seconds from each student's training.json; calibration and matching seconds for a merge).

Writes table.md, table.csv, table.png (as ``make table``), significance.csv and cost.png (Avg
against inference GFLOP, with intervals) into the sweep dir.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.stats import LEVEL
from report.record import Evaluation, JobRecord
from report.table import (
    Row,
    add_uncertainty,
    cells,
    column_title,
    describe,
    interface_name,
    load_records,
    markdown,
    plot,
    task_columns,
    value_cells,
    value_header,
)
from report.uncertainty import ALPHA, write_significance

REFERENCE = "id5"  # the paper's method
TRAINING = "training.json"  # what `python -m distill` leaves beside a student
TIMED_SECONDS = 10.0  # each timed pass: BATCH clips this long
BATCH = 4
REPEATS = 3


@dataclass
class Cost:
    """What a row costs: the encoders its inference runs, and its training beyond the
    teachers (distillation steps and seconds; a merge's calibration and matching seconds)."""

    encoders: tuple[str, ...]
    steps: int = 0
    seconds: float = 0.0
    parameters: int | None = None
    gflop_per_second: float | None = None  # forward FLOPs per second of audio, / 1e9
    seconds_per_hour: list[float] | None = None  # every timed pass, per hour of audio


def training_of(path: str) -> tuple[int, float]:
    """(steps, seconds) of a distilled student (its training.json names its teachers); (0, 0)
    for any other encoder, a teacher's own pretraining included."""
    file = Path(path) / TRAINING
    if not file.is_file():
        return 0, 0.0
    data = json.loads(file.read_text())
    if "teachers" not in data:
        return 0, 0.0
    return int(data.get("steps") or 0), float(data.get("train_seconds") or 0.0)


def short(path: str) -> str:
    """A checkpoint's folder and its parent's name: ``distill-demo/speech``."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name not in ("", "checkpoints") else p.name


def _is_pair(record: JobRecord) -> bool:
    return (record.config.get("models") or {}).get("name", "pair") == "pair"


def _members(record: JobRecord) -> dict[str, str]:
    models = record.config.get("models") or {}
    return {str(k): str(v) for k, v in (models.get("members") or {}).items()}


def _anchor(record: JobRecord) -> str:
    models = record.config.get("models") or {}
    return _members(record)[str(models.get("anchor"))]


def _merging_seconds(record: JobRecord) -> float:
    return sum(record.seconds.get(k, 0.0) for k in ("calibration", "matching"))


def teachers_record(records: Sequence[JobRecord]) -> JobRecord:
    """The first ok pair job with per-clip outcomes: its parents are the teachers."""
    for record in records:
        ev = record.evaluation
        if (
            record.status == "ok"
            and ev
            and _is_pair(record)
            and set(ev.parents) <= set(ev.predictions)
        ):
            return record
    raise ValueError(
        "no finished job of the teachers' pair (pair=..., models=pair) with per-clip outcomes: "
        "the routes table normalises every row by the teachers (make routes runs IDs 4 and 5)"
    )


def check_one_suite(loaded: Sequence[tuple[Row, JobRecord]]) -> None:
    """Rows are compared clip by clip: every job must have probed the same suite."""
    first_row, first = loaded[0]
    for row, record in loaded[1:]:
        if (record.evaluation or Evaluation()).suite != (first.evaluation or Evaluation()).suite:
            raise ValueError(
                f"job {row.key} was evaluated on another suite than job {first_row.key}: a "
                "routes table compares jobs of one suite (one eval=..., the same data); rerun "
                "it or move it out of the sweep"
            )


class Rows:
    """The table's rows by role, each with its cost; an encoder probed alone by several jobs
    (by checkpoint path) is one row."""

    def __init__(self) -> None:
        self.alone: dict[str, tuple[Row, Cost]] = {}
        self.merges: dict[str, list[tuple[Row, Cost]]] = {"teachers": [], "students": []}

    def add_alone(self, path: str, description: str, tasks: dict, tests: dict) -> None:
        key = str(Path(path).resolve())
        if key in self.alone or not tests:
            return
        steps, seconds = training_of(path)
        if steps:
            description += f", distilled {steps} steps"
        row = Row(short(path), None, description, "ok", tasks=dict(tasks), tests=tests)
        self.alone[key] = (row, Cost((path,), steps, seconds))

    def add_job(self, row: Row, record: JobRecord) -> None:
        """A job's merged encoder: a merge of the teachers or of students, or one alone."""
        ev = record.evaluation or Evaluation()
        pool = _members(record)
        if record.status == "ok" and record.parent:
            self.add_alone(pool[record.parent], describe(record), ev.values(),
                           ev.predictions.get("merged") or {})  # fmt: skip
            return
        role = "teachers" if _is_pair(record) else "students"
        cost = Cost(())
        if record.status == "ok":
            steps, seconds = (0, 0.0) if role == "teachers" else _summed(pool.values())
            cost = Cost((_anchor(record),), steps, seconds + _merging_seconds(record))
        row.description = f"{role}: {row.description}"
        self.merges[role].append((row, cost))

    def add_probed(self, record: JobRecord) -> None:
        """The members and the base a pool's evaluation probed alone."""
        ev = record.evaluation or Evaluation()
        for who, path in _members(record).items():
            self.add_alone(path, f"{who} alone", ev.references.get(who) or {},
                           ev.predictions.get(who) or {})  # fmt: skip
        base = (record.config.get("models") or {}).get("base")
        if base:
            self.add_alone(str(base), "the students' initialisation (base) alone",
                           ev.references.get("base") or {},
                           ev.predictions.get("base") or {})  # fmt: skip


def reference_row(ev: Evaluation, who: str, description: str) -> Row:
    return Row(who, None, description, "ok", tasks=dict(ev.references.get(who) or {}),
               tests=ev.predictions.get(who) or {})  # fmt: skip


def gather(sweep: str | Path) -> tuple[list[Row], dict[str, Cost], JobRecord]:
    """The rows of a routes sweep in order (teachers, their merges, their fusion, students and
    the base, the students' merges, FBANK), their costs (not yet measured) and the teachers'
    record."""
    loaded = load_records(sweep)
    if not loaded:
        raise FileNotFoundError(f"no results.json under {sweep}: run the sweep first")
    done = [(row, rec) for row, rec in loaded if rec.status == "ok" and rec.evaluation]
    teachers = teachers_record([rec for _, rec in done])
    check_one_suite(done)
    ev = teachers.evaluation or Evaluation()
    paths = _members(teachers)
    found = Rows()
    for who, domain in zip(ev.parents, ("speech", "music"), strict=True):
        found.add_alone(paths[who], f"{domain} teacher alone", ev.references.get(who) or {},
                        ev.predictions[who])  # fmt: skip
    teacher_rows = list(found.alone.values())
    for row, record in loaded:
        found.add_job(row, record)
    for _, record in done:
        if not _is_pair(record):
            found.add_probed(record)
    students = [v for v in found.alone.values() if v not in teacher_rows]
    fusion = reference_row(
        ev, "fusion", f"teachers' layer fusion by {interface_name(teachers)} (2x compute)"
    )
    ordered = [
        *teacher_rows,
        *found.merges["teachers"],
        (fusion, Cost(tuple(paths[who] for who in ev.parents))),
        *students,
        *found.merges["students"],
        (reference_row(ev, "fbank", "FBANK (s3prl), reference"), Cost(())),
    ]
    rows = [r for r, _ in ordered if r.status != "ok" or r.tests]
    return rows, {r.key: c for r, c in ordered}, teachers


def _summed(paths) -> tuple[int, float]:
    trained = [training_of(p) for p in paths]
    return sum(s for s, _ in trained), sum(t for _, t in trained)


def rescore(rows: Sequence[Row], teachers: JobRecord, reference: str) -> list:
    """Every row's Speech / Music / Avg against the teachers, with intervals and the tests
    against ``reference``."""
    return add_uncertainty(rows, teachers, reference, rescore=True)


def measure(costs: dict[str, Cost], threads: int = 1, repeats: int = REPEATS) -> None:
    """Fill each cost's parameters, GFLOP per audio second and timed seconds per hour of
    audio: each distinct encoder is loaded once, each architecture counted and timed once
    (``BATCH`` clips of ``TIMED_SECONDS`` each, every layer's output kept, as probing does)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from merging.forward import encode
    from merging.load import load_encoder

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        found: dict[str, tuple[int, float, list[float]]] = {}
        by_architecture: dict[str, tuple[float, list[float]]] = {}
        for path in sorted({p for c in costs.values() for p in c.encoders}):
            encoder = load_encoder(path)
            encoder.model.float().eval()
            config = encoder.model.config.to_dict()
            for k in ("_name_or_path", "architectures", "transformers_version", "dtype",
                      "torch_dtype"):  # fmt: skip
                config.pop(k, None)
            arch = json.dumps(config, sort_keys=True, default=str)
            if arch not in by_architecture:
                samples = int(encoder.sample_rate * TIMED_SECONDS)
                one = torch.randn(1, samples, generator=torch.Generator().manual_seed(0))
                with FlopCounterMode(display=False) as counter:
                    encode(encoder, one, torch.tensor([samples]), True)
                batch = torch.randn(BATCH, samples, generator=torch.Generator().manual_seed(1))
                lengths = torch.full((BATCH,), samples)
                encode(encoder, batch, lengths, True)  # warm-up
                timed = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    encode(encoder, batch, lengths, True)
                    timed.append((time.perf_counter() - t) / (BATCH * TIMED_SECONDS) * 3600)
                by_architecture[arch] = (counter.get_total_flops() / TIMED_SECONDS / 1e9, timed)
            gflop, timed = by_architecture[arch]
            found[path] = (sum(p.numel() for p in encoder.model.parameters()), gflop, timed)
    finally:
        torch.set_num_threads(before)
    for cost in costs.values():
        parts = [found[p] for p in cost.encoders]
        cost.parameters = sum(p for p, _, _ in parts)
        cost.gflop_per_second = sum(g for _, g, _ in parts)
        cost.seconds_per_hour = [sum(ts) for ts in zip(*(t for _, _, t in parts), strict=True)]


COST_COLUMNS = ("parameters (M)", "GFLOP / audio s", "s / audio h", "training steps",
                "training s")  # fmt: skip


def cost_cells(cost: Cost) -> list[str]:
    timed = cost.seconds_per_hour or []
    speed = f"{statistics.median(timed):.1f} [{min(timed):.1f}, {max(timed):.1f}]" if timed else ""
    return [
        f"{(cost.parameters or 0) / 1e6:.2f}",
        f"{cost.gflop_per_second or 0:.2f}",
        speed if cost.encoders else "0",
        str(cost.steps),
        f"{cost.seconds:.0f}",
    ]


def render(rows: Sequence[Row], costs: dict[str, Cost], reference: str, threads: int) -> str:
    tasks = task_columns(rows)
    header = ["row", "route", *map(column_title, tasks), "Speech", "Music", "Avg", *COST_COLUMNS]
    body = [
        [r.key, r.description, *cells(r, tasks), *cost_cells(costs.get(r.key, Cost(())))]
        for r in rows
    ]
    text = ["# Routes to one speech+music encoder", "", *markdown(header, body), ""]
    text += [
        f"Scores: Speech normalised by the speech teacher, Music by the music teacher (= 1000); "
        f"brackets: {LEVEL:.0%} paired-bootstrap intervals; `*`: differs from row {reference} "
        f"(exact McNemar per accuracy task, paired bootstrap for WER and scores; "
        f"Benjamini-Hochberg over the table, FDR {ALPHA:g}; every p-value in significance.csv).",
        f"Costs: parameters and forward GFLOP per second of audio of the encoders a row runs "
        f"(the fusion runs both teachers); s / audio h: the median [min, max] of {REPEATS} timed "
        f"passes of {BATCH} x {TIMED_SECONDS:g} s clips on {threads} CPU thread(s) of the machine "
        "that wrote this table; training: distillation steps and seconds of the students a row "
        "needs (from their training.json), plus calibration and matching seconds of a merge; "
        "the teachers' own training is not counted.",
    ]
    return "\n".join(text) + "\n"


def write_csv(rows: Sequence[Row], costs: dict[str, Cost], path: Path) -> None:
    tasks = task_columns(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "route", "status", *value_header(tasks), "parameters",
                    "gflop_per_audio_second", "seconds_per_audio_hour", "training_steps",
                    "training_seconds"])  # fmt: skip
        for r in rows:
            cost = costs.get(r.key, Cost(()))
            timed = cost.seconds_per_hour
            w.writerow([r.key, r.description, r.status, *value_cells(r, tasks), cost.parameters,
                        cost.gflop_per_second, statistics.median(timed) if timed else 0,
                        cost.steps, cost.seconds])  # fmt: skip


def plot_cost(rows: Sequence[Row], costs: dict[str, Cost], reference: str, path: Path) -> None:
    """Avg (with its interval) against forward GFLOP per second of audio, one point per row;
    rows of one architecture are spread a little sideways so their intervals stay apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [
        r for r in rows
        if r.status == "ok" and r.scores.get("avg") is not None and costs[r.key].encoders
    ]  # fmt: skip
    by_cost: dict[float, list[Row]] = {}
    for r in shown:
        by_cost.setdefault(round(costs[r.key].gflop_per_second or 0.0, 6), []).append(r)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    colors = plt.get_cmap("tab20").colors
    for i, r in enumerate(shown):
        x0 = costs[r.key].gflop_per_second or 0.0
        group = by_cost[round(x0, 6)]
        x = x0 * (1 + 0.012 * (group.index(r) - (len(group) - 1) / 2))
        avg = r.scores["avg"]
        lo, hi = r.intervals.get("avg", (avg, avg))
        ax.errorbar(x, avg, yerr=[[avg - lo], [hi - avg]], fmt="D" if r.key == reference else "o",
                    capsize=3, color=colors[i % len(colors)], label=r.key)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("forward GFLOP per second of audio (log)")
    ax.set_ylabel(f"Avg (teachers = 1000), {LEVEL:.0%} interval")
    ax.set_title("Routes: score against inference cost")
    ax.axhline(1000, color="gray", lw=0.5)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build(
    sweep: str | Path, reference: str = REFERENCE, threads: int = 1, repeats: int = REPEATS
) -> dict[str, Path]:
    sweep = Path(sweep)
    rows, costs, teachers = gather(sweep)
    tests = rescore(rows, teachers, reference)
    measure(costs, threads, repeats)
    paths = {ext: sweep / f"table.{ext}" for ext in ("md", "csv", "png")}
    paths["md"].write_text(render(rows, costs, reference, threads))
    write_csv(rows, costs, paths["csv"])
    plot(rows, None, paths["png"])
    paths["significance"] = write_significance(tests, sweep / "significance.csv")
    paths["cost"] = sweep / "cost.png"
    plot_cost(rows, costs, reference, paths["cost"])
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the routes sweep dir (make routes)")
    parser.add_argument("--reference", default=REFERENCE, help="the row others are tested against")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the timed passes")
    args = parser.parse_args(argv)
    try:
        paths = build(args.sweep, args.reference, args.threads)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"{err}\n")
    print(paths["md"].read_text(), end="")
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
