"""Uncertainty for ablation tables: paired bootstrap intervals, McNemar tests, Benjamini-Hochberg.

Every probe result keeps its per-clip test outcomes (``test`` records: clip ids, their fold,
labels and each seed's predictions; for CTC each seed's word edits). From those, any two rows of
a sweep can be compared clip by clip:

- A resample draws, per task, each fold's test clips with replacement (stratified, so a k-fold
  metric stays a mean of fold accuracies) and the probe seeds with replacement (probe-training
  randomness, a two-stage bootstrap). The draws depend only on (seed, task, fold sizes), so every
  row of a sweep, and every job computing its own interval, sees the same resamples.
- The score formula (Speech / Music / Avg, ``eval.scores``) is applied per resample, with the
  parents' and the floor's metrics on the same resample.
- Counts are integers, so every resampled sum is exact in float64: no thread-count dependence.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, false_discovery_control

from eval.scores import WER_FLOOR, suite_scores, usable_floors
from eval.tasks import Task

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
SCORES = ("speech", "music", "avg")
FLOOR = "floor"  # the majority-class predictor's row name inside ``score_rows``


@dataclass(frozen=True)
class Bootstrap:
    """The ``eval.bootstrap`` settings; a job and ``report.table`` read them through ``of``."""

    resamples: int = RESAMPLES
    seed: int = SEED
    level: float = LEVEL

    @classmethod
    def of(cls, settings: Mapping | None) -> Bootstrap:
        s = settings or {}
        return cls(
            int(s.get("resamples", RESAMPLES)),
            int(s.get("seed", SEED)),
            float(s.get("level", LEVEL)),
        )


@dataclass(frozen=True)
class Outcome:
    """One upstream's per-clip results on one task's test clips (all folds)."""

    ids: tuple[str, ...]
    groups: np.ndarray  # (clips,) fold index; 0 for a single test split
    correct: np.ndarray  # (seeds, clips): 1/0 per clip, or word edits for WER tasks
    words: np.ndarray | None = None  # (clips,) reference words, WER tasks only

    @property
    def wer(self) -> bool:
        return self.words is not None

    def take(self, ids: Sequence[str]) -> Outcome:
        pos = {c: i for i, c in enumerate(self.ids)}
        idx = np.array([pos[c] for c in ids], dtype=np.int64)
        words = None if self.words is None else self.words[idx]
        return Outcome(tuple(ids), self.groups[idx], self.correct[:, idx], words)


def outcome(test: Mapping) -> Outcome:
    """An ``Outcome`` from a probe result's ``test`` record."""
    folds = sorted(set(test["groups"]))
    groups = np.array([folds.index(g) for g in test["groups"]], dtype=np.int64)
    if "errors" in test:
        return Outcome(
            tuple(test["ids"]),
            groups,
            np.asarray(test["errors"], dtype=np.float64).reshape(-1, len(test["ids"])),
            np.asarray(test["words"], dtype=np.float64),
        )
    labels = np.asarray(test["labels"], dtype=object)
    preds = np.asarray(test["predictions"], dtype=object).reshape(-1, len(labels))
    return Outcome(tuple(test["ids"]), groups, (preds == labels).astype(np.float64))


def majority(test: Mapping) -> Outcome:
    """The majority-class predictor of each test fold, from its labels alone: the floor of an
    utterance task whose FBANK features carry nothing (SUPERB's by construction). Ties go to
    the first label in sorted order, so the floor is a function of the labels only."""
    labels = np.asarray(test["labels"], dtype=object)
    groups = np.asarray(test["groups"], dtype=object)
    predictions = np.empty(len(labels), dtype=object)
    for g in sorted(set(test["groups"])):
        here = groups == g
        values, counts = np.unique(labels[here].astype(str), return_counts=True)
        predictions[here] = values[np.argmax(counts)]
    return outcome({**test, "predictions": [predictions.tolist()]})


def common(outcomes: Mapping[str, Outcome]) -> dict[str, Outcome]:
    """Every outcome restricted to the clips all of them have, in one sorted order."""
    shared = sorted(set.intersection(*(set(o.ids) for o in outcomes.values())))
    if not shared:
        raise ValueError("the rows share no test clip")
    return {k: o.take(shared) for k, o in outcomes.items()}


def _weights(groups: np.ndarray, resamples: int, seed: int, task: str) -> np.ndarray:
    """(resamples, clips) counts: each fold's clips drawn with replacement, fold by fold."""
    out = np.zeros((resamples, len(groups)), dtype=np.float64)
    for g in np.unique(groups):
        where = np.flatnonzero(groups == g)
        rng = np.random.default_rng([seed, zlib.crc32(task.encode()), int(g), len(where)])
        out[:, where] = rng.multinomial(len(where), np.full(len(where), 1 / len(where)), resamples)
    return out


def _seed_draws(seeds: int, resamples: int, seed: int, task: str) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(task.encode()), 1 << 20, seeds])
    return rng.integers(0, seeds, (resamples, seeds))


def _per_seed(o: Outcome, w: np.ndarray) -> np.ndarray:
    """(seeds, resamples): the metric of every seed under every weighting of the clips."""
    if o.wer:
        return 100 * (o.correct @ w.T) / np.maximum(w @ o.words, 1)
    folds = [np.flatnonzero(o.groups == g) for g in np.unique(o.groups)]
    accs = [(o.correct[:, f] @ w[:, f].T) / len(f) for f in folds]
    return 100 * np.mean(accs, axis=0)


def point(o: Outcome) -> float:
    """The metric on the full test set, seeds averaged (what the probe reports)."""
    return float(_per_seed(o, np.ones((1, len(o.ids)))).mean())


def samples(
    outcomes: Mapping[str, Outcome], task: str, resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, np.ndarray]:
    """(resamples,) metric per row, all rows on the same resamples of clips and seeds."""
    rows = common(outcomes)
    first = next(iter(rows.values()))
    w = _weights(first.groups, resamples, seed, task)
    out = {}
    for name, o in rows.items():
        per_seed = _per_seed(o, w)  # (seeds, resamples)
        draws = _seed_draws(len(per_seed), resamples, seed, task)  # (resamples, seeds)
        out[name] = per_seed[draws, np.arange(resamples)[:, None]].mean(1)
    return out


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile interval over the finite resamples (None if there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_p(x: np.ndarray, ref: np.ndarray) -> float:
    """Two-sided paired-bootstrap p-value of ``x - ref`` (resample by resample) against 0."""
    d = np.asarray(x, dtype=np.float64) - np.asarray(ref, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d):
        return float("nan")
    if not d.any():
        return 1.0
    below, above = (np.sum(d <= 0) + 1) / (len(d) + 1), (np.sum(d >= 0) + 1) / (len(d) + 1)
    return float(min(1.0, 2 * min(below, above)))


def majority_correct(o: Outcome) -> np.ndarray:
    """(clips,) bool: right in more than half of the seeds (one seed: just right)."""
    return o.correct.mean(0) > 0.5


def mcnemar(x: Outcome, ref: Outcome) -> float:
    """Exact McNemar: of the clips exactly one of the two gets right, is the split 50/50?"""
    x, ref = common({"x": x, "ref": ref}).values()
    cx, cr = majority_correct(x), majority_correct(ref)
    b, c = int(np.sum(cx & ~cr)), int(np.sum(~cx & cr))
    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def benjamini_hochberg(p: Sequence[float]) -> np.ndarray:
    """BH-adjusted p-values; NaN (untestable) entries stay NaN and do not count."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


@dataclass
class Scored:
    """One row's metrics and scores: on the full test sets, and on every resample."""

    points: dict[str, float | None]
    samples: dict[str, np.ndarray]


def score_rows(
    rows: Mapping[str, Mapping[str, Mapping]],
    tasks: Sequence[Task],
    floor: str | Mapping[str, float] = "majority",
    resamples: int = RESAMPLES,
    seed: int = SEED,
    a: str = "a",
    b: str = "b",
) -> dict[str, Scored]:
    """Every row's task metrics and Speech / Music / Avg, with paired resamples.

    ``rows`` maps a row name to its ``test`` records by task; rows ``a`` and ``b`` are the
    parents the scores are normalised by. ``floor`` is ``"majority"`` (each speech utterance
    task's majority-class accuracy, resampled with the clips; a WER task's ``WER_FLOOR``) or
    fixed numbers per task.
    """
    names = [n for n in rows if n != FLOOR]
    metric_points: dict[str, dict[str, float]] = {n: {} for n in [*names, FLOOR]}
    metric_samples: dict[str, dict[str, np.ndarray]] = {n: {} for n in [*names, FLOOR]}
    for t in tasks:
        outcomes = {n: outcome(rows[n][t.name]) for n in names if t.name in rows[n]}
        if a not in outcomes:
            continue
        if floor == "majority" and t.domain == "speech" and t.kind != "ctc":
            outcomes[FLOOR] = majority(rows[a][t.name])
        elif floor == "majority" and t.domain == "speech":
            metric_points[FLOOR][t.name] = WER_FLOOR
            metric_samples[FLOOR][t.name] = np.full(resamples, WER_FLOOR)
        for n, o in outcomes.items():
            metric_points[n][t.name] = point(o)
        for n, v in samples(outcomes, t.name, resamples, seed).items():
            metric_samples[n][t.name] = v
    fixed = floor if isinstance(floor, Mapping) else None
    point_floor = dict(fixed) if fixed is not None else metric_points[FLOOR]
    usable, _ = usable_floors(tasks, metric_points[a], point_floor)
    sample_floor = (
        {t: fixed[t] for t in usable}
        if fixed is not None
        else {t: metric_samples[FLOOR][t] for t in usable}
    )
    scored = {}
    for n in names:
        p, s = metric_points[n], metric_samples[n]
        point_scores = _scores(p, tasks, metric_points, a, b, usable)
        sample_scores = _scores(s, tasks, metric_samples, a, b, sample_floor)
        scored[n] = Scored(
            {**p, **{k: v for k, v in point_scores.items() if k in SCORES}},
            {**s, **{k: v for k, v in sample_scores.items() if k in SCORES and v is not None}},
        )
    return scored


def _scores(metrics, tasks, by_row, a, b, floor) -> dict:
    present = [t for t in tasks if t.name in metrics]
    if len(present) < len([t for t in tasks if t.name in by_row[a]]):
        return {}  # a row that lacks a task the parents have gets no score
    return suite_scores(metrics, present, by_row[a], by_row[b], floor)


def intervals(samples: Mapping[str, np.ndarray], level: float = LEVEL) -> dict[str, list]:
    """``{column: [lo, hi]}`` for every resampled column (a list, as JSON stores it)."""
    out = {}
    for k, v in samples.items():
        ci = interval(v, level)
        if ci is not None:
            out[k] = list(ci)
    return out
