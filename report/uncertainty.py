"""Intervals and significance for the rows of one sweep, from their per-clip test outcomes.

Every row is resampled with the same draws (``eval.stats``), so intervals of two rows and the
p-value of their difference come from one paired bootstrap. Per task, accuracy differences are
tested with an exact McNemar test against the reference row, WER and the Speech / Music / Avg
scores with the paired bootstrap; Benjamini-Hochberg runs over every test of the table.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.stats import (
    LEVEL,
    RESAMPLES,
    SCORES,
    SEED,
    benjamini_hochberg,
    bootstrap_p,
    intervals,
    mcnemar,
    outcome,
    score_rows,
)
from eval.tasks import Task
from report.record import JobRecord

ALPHA = 0.05  # false discovery rate at which a difference is marked significant
PARENTS = ("parent:a", "parent:b")


@dataclass
class Test:
    row: str
    column: str
    reference: str
    test: str  # mcnemar | bootstrap
    difference: float | None
    p: float
    p_bh: float = float("nan")

    @property
    def significant(self) -> bool:
        return self.p_bh < ALPHA


def suite_tasks(record: JobRecord) -> list[Task]:
    """The tasks a results.json was scored on, as ``Task``s (no adapter: data not needed)."""
    return [Task(**t) for t in (record.evaluation.suite if record.evaluation else [])]


def uncertainty(
    rows: Mapping[str, Mapping[str, Mapping]],
    parents: tuple[Mapping[str, Mapping], Mapping[str, Mapping]],
    tasks: Sequence[Task],
    floor: str | Mapping[str, float],
    reference: str | Mapping[str, str] | None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, list]], list[Test]]:
    """(points, intervals, tests) per row name: ``rows`` maps a row to its test records by
    task; ``parents`` are model A's and B's records, the scores' normalisers. ``reference``:
    the row every other is tested against, or each row's own (a mapping); BH over them all."""
    everything = {**rows, PARENTS[0]: parents[0], PARENTS[1]: parents[1]}
    scored = score_rows(everything, tasks, floor, resamples, seed, *PARENTS)
    points = {n: scored[n].points for n in rows}
    spans = {n: intervals(scored[n].samples, level) for n in rows}
    against = reference if isinstance(reference, Mapping) else dict.fromkeys(rows, reference)
    tests: list[Test] = []
    for name, versus in against.items():
        if name not in rows or versus not in rows or name == versus:
            continue
        ref = scored[versus]
        here = scored[name]
        for t in tasks:
            if t.name not in rows[name] or t.name not in rows[versus]:
                continue
            diff = here.points[t.name] - ref.points[t.name]
            if t.metric == "accuracy":
                p = mcnemar(outcome(rows[name][t.name]), outcome(rows[versus][t.name]))
                tests.append(Test(name, t.name, versus, "mcnemar", diff, p))
            else:
                p = bootstrap_p(here.samples[t.name], ref.samples[t.name])
                tests.append(Test(name, t.name, versus, "bootstrap", diff, p))
        for s in SCORES:
            if s in here.samples and s in ref.samples:
                p = bootstrap_p(here.samples[s], ref.samples[s])
                diff = here.points[s] - ref.points[s]
                tests.append(Test(name, s, versus, "bootstrap", diff, p))
    for test, adjusted in zip(tests, benjamini_hochberg([t.p for t in tests]), strict=True):
        test.p_bh = float(adjusted)
    return points, spans, tests


def write_significance(tests: Sequence[Test], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "column", "reference", "test", "difference", "p", "p_bh", "significant"])
        for t in tests:
            w.writerow(
                [t.row, t.column, t.reference, t.test, _g(t.difference), _g(t.p), _g(t.p_bh)]
                + [t.significant]
            )
    return path


def _g(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
