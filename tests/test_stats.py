"""Intervals, significance and floors: paired bootstrap, exact McNemar, BH, majority floors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, false_discovery_control

from eval.stats import (
    benjamini_hochberg,
    bootstrap_p,
    interval,
    majority,
    mcnemar,
    outcome,
    point,
    samples,
    score_rows,
)
from eval.tasks import Task
from report.uncertainty import uncertainty

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["cat", "dog", "owl"]


def record(correct: np.ndarray, labels=None, groups=None, seeds: int = 1) -> dict:
    """A ``test`` record whose seed-0 predictions are right exactly where ``correct`` is."""
    n = len(correct)
    labels = labels or [LABELS[i % 3] for i in range(n)]
    wrong = [LABELS[(LABELS.index(y) + 1) % 3] for y in labels]
    preds = [y if c else w for y, c, w in zip(labels, correct, wrong, strict=True)]
    return {
        "ids": [f"clip{i:03d}.wav" for i in range(n)],
        "groups": groups or ["test"] * n,
        "labels": labels,
        "predictions": [preds] * seeds,
    }


def test_mcnemar_detects_a_known_difference_and_is_one_for_identical_predictions():
    ref = np.ones(100, dtype=bool)
    x = ref.copy()
    x[:12] = False  # x loses 12 clips the reference gets right, wins none
    p = mcnemar(outcome(record(x)), outcome(record(ref)))
    assert p == pytest.approx(binomtest(0, 12, 0.5).pvalue) and p < 0.001
    assert mcnemar(outcome(record(ref)), outcome(record(ref))) == 1.0
    y, z = ref.copy(), ref.copy()
    y[:3], z[3:6] = False, False  # each gets 3 clips right that the other gets wrong
    assert mcnemar(outcome(record(y)), outcome(record(z))) == 1.0


def test_rows_are_paired_by_clip_id_not_by_position():
    rng = np.random.default_rng(0)
    correct = rng.random(60) < 0.7
    rec = record(correct)
    order = rng.permutation(60)
    shuffled = {k: [rec[k][i] for i in order] for k in ("ids", "groups", "labels")}
    shuffled["predictions"] = [[rec["predictions"][0][i] for i in order]]
    rows = {"x": outcome(rec), "y": outcome(shuffled)}
    drawn = samples(rows, "t", 500)
    assert np.array_equal(drawn["x"], drawn["y"])  # the same resamples for every row
    assert mcnemar(rows["x"], rows["y"]) == 1.0
    assert bootstrap_p(drawn["x"], drawn["y"]) == 1.0


def test_bootstrap_is_deterministic_and_brackets_the_point_estimate():
    rng = np.random.default_rng(1)
    rows = {n: outcome(record(rng.random(80) < q)) for n, q in (("a", 0.8), ("b", 0.4))}
    first, again = samples(rows, "ks", 1000), samples(rows, "ks", 1000)
    assert all(np.array_equal(first[k], again[k]) for k in rows)
    assert not np.array_equal(samples(rows, "ic", 1000)["a"], first["a"])  # per-task draws
    lo, hi = interval(first["a"])
    assert lo < point(rows["a"]) < hi and hi - lo < 25
    assert bootstrap_p(first["a"], first["b"]) < 0.01


def test_kfold_resamples_within_folds_so_the_metric_stays_a_mean_of_folds():
    groups = ["fold1"] * 10 + ["fold2"] * 30
    correct = np.r_[np.ones(10), np.zeros(30)].astype(bool)
    o = outcome(record(correct, groups=groups))
    assert point(o) == pytest.approx(50.0)  # (100 + 0) / 2, not 10 / 40
    assert np.all(samples({"x": o}, "er", 200)["x"] == 50.0)


def test_seeds_are_averaged_and_resampled():
    labels = [LABELS[i % 3] for i in range(50)]
    rec = record(np.ones(50, dtype=bool), labels, seeds=2)
    rec["predictions"][1] = ["dog"] * 50  # seed 1 right only on the dog clips
    o = outcome(rec)
    assert point(o) == pytest.approx((100 + 100 * labels.count("dog") / 50) / 2)
    drawn = samples({"x": o}, "t", 400)["x"]
    assert drawn.std() > 5  # seed draws: all-seed-0, mixed, all-seed-1 resamples


def test_wer_outcomes_are_corpus_wer():
    rec = {"ids": ["u1", "u2"], "groups": ["test"] * 2, "words": [10, 30], "errors": [[5, 3]]}
    assert point(outcome(rec)) == pytest.approx(100 * 8 / 40)


def test_a_worse_wer_scores_lower_under_majority_floors():
    """A WER task has no majority class: its floor is an empty transcript's 100%, so a row
    with more word errors than model A scores below 1000 (a floor of 0 scored s / A)."""
    from eval.stats import score_rows

    tasks = [Task("asr", "ASR", "speech", "ctc", "wer")]

    def rec(errors: list[int]) -> dict:
        return {"asr": {"ids": ["u1", "u2"], "groups": ["test"] * 2, "words": [10, 10],
                        "errors": [errors]}}  # fmt: skip

    rows = {"a": rec([2, 2]), "b": rec([8, 8]), "worse": rec([5, 5]), "better": rec([1, 1])}
    scored = score_rows(rows, tasks, resamples=20)
    speech = {n: scored[n].points["speech"] for n in rows}
    assert speech["a"] == pytest.approx(1000)
    assert speech["worse"] == pytest.approx(1000 * (50 - 100) / (20 - 100))  # WER 50% vs A 20%
    assert speech["better"] > 1000 > speech["worse"] > speech["b"]


def test_majority_floor_is_a_function_of_the_labels_only():
    labels = ["dog", "cat", "dog", "owl", "cat", "dog"]
    rec = record(np.ones(6, dtype=bool), labels)
    assert point(majority(rec)) == pytest.approx(50.0)
    tie = record(np.ones(4, dtype=bool), ["owl", "cat", "owl", "cat"])
    assert majority(tie).correct.tolist() == [[0, 1, 0, 1]]  # ties: the first label by name
    folds = record(
        np.ones(4, dtype=bool), ["cat", "cat", "dog", "owl"], ["fold1"] * 2 + ["fold2"] * 2
    )
    assert point(majority(folds)) == pytest.approx((100 + 50) / 2)


def test_benjamini_hochberg_matches_scipy_and_keeps_untestable_entries():
    p = [0.01, 0.04, float("nan"), 0.03, 0.5]
    got = benjamini_hochberg(p)
    want = false_discovery_control([0.01, 0.04, 0.03, 0.5], method="bh")
    assert np.isnan(got[2]) and np.allclose(np.delete(got, 2), want)


def tiny_table(seed: int = 0) -> tuple[dict, tuple, list[Task]]:
    """Two speech and one music task; rows: ID-4-like reference, a worse and an equal row."""
    rng = np.random.default_rng(seed)
    tasks = [
        Task("ks", "KS", "speech", "utterance", "accuracy"),
        Task("er", "ER", "speech", "kfold", "accuracy"),
        Task("pitchid", "PitchID", "music", "utterance", "accuracy"),
    ]
    groups = {"er": [f"fold{i % 3 + 1}" for i in range(90)]}

    def row(q: dict[str, float]) -> dict:
        return {t.name: record(rng.random(90) < q[t.name], None, groups.get(t.name)) for t in tasks}

    a = row({"ks": 0.9, "er": 0.8, "pitchid": 0.3})
    b = row({"ks": 0.5, "er": 0.5, "pitchid": 0.9})
    ref = row({"ks": 0.8, "er": 0.7, "pitchid": 0.5})
    rows = {"id4": ref, "worse": row({"ks": 0.4, "er": 0.4, "pitchid": 0.3}), "same": ref}
    return rows, (a, b), tasks


def test_scores_per_resample_keep_the_parents_at_1000():
    rows, (a, b), tasks = tiny_table()
    scored = score_rows({"a": a, "b": b, **rows}, tasks)
    assert np.allclose(scored["a"].samples["speech"], 1000)
    assert np.allclose(scored["b"].samples["music"], 1000)
    assert scored["a"].points["speech"] == pytest.approx(1000)
    lo, hi = interval(scored["id4"].samples["avg"])
    assert lo < scored["id4"].points["avg"] < hi


def test_table_tests_find_the_worse_row_and_not_the_identical_one():
    rows, parents, tasks = tiny_table()
    points, spans, tests = uncertainty(rows, parents, tasks, "majority", "id4", 1000)
    by = {(t.row, t.column): t for t in tests}
    assert {c for r, c in by if r == "same"} == {"ks", "er", "pitchid", "speech", "music", "avg"}
    assert all(by[("same", c)].p == 1.0 and not by[("same", c)].significant for c in ("ks", "avg"))
    assert by[("worse", "ks")].test == "mcnemar" and by[("worse", "ks")].significant
    assert by[("worse", "speech")].test == "bootstrap" and by[("worse", "speech")].significant
    assert spans["worse"]["speech"][1] < spans["id4"]["speech"][0]  # intervals apart


SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.test_stats import tiny_table
from report.uncertainty import uncertainty
rows, parents, tasks = tiny_table(3)
points, spans, tests = uncertainty(rows, parents, tasks, "majority", "id4", 2000)
print(json.dumps([points, spans, [(t.row, t.column, t.p, t.p_bh) for t in tests]]))
"""


def test_floors_and_intervals_do_not_depend_on_the_thread_count():
    outputs = []
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(ROOT)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
