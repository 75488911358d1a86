"""The routes table: jobs of several pools in one sweep, every row rescored against the
teachers, one row per encoder, costs from the checkpoints and the students' training records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from merging.merge import export
from report import routes
from report.record import JobRecord
from tests.helpers import random_encoder, tiny_config

TASKS = [
    {"name": "ks", "paper": "KS", "domain": "speech", "kind": "utterance", "metric": "accuracy"},
    {"name": "genre", "paper": "Genre", "domain": "music", "kind": "utterance",
     "metric": "accuracy"},
]  # fmt: skip
CLIPS = 60


def outcomes_at(accuracy: dict[str, float], seed: int) -> dict[str, dict]:
    """Per-clip test records (two probe seeds) right on about ``accuracy`` of the clips."""
    rng = np.random.default_rng(seed)
    out = {}
    for task, acc in accuracy.items():
        labels = [f"c{i % 4}" for i in range(CLIPS)]
        runs = [
            [lab if rng.random() < acc else f"c{(i + 1) % 4}" for i, lab in enumerate(labels)]
            for _ in range(2)
        ]
        ids = [f"{task}/{i}.wav" for i in range(CLIPS)]
        out[task] = {"ids": ids, "groups": ["test"] * CLIPS, "labels": labels, "predictions": runs}
    return out


def value(test: dict) -> float:
    runs = np.array(test["predictions"]) == np.array(test["labels"])
    return float(100 * runs.mean())


def job(root, name, models, predictions, experiment_id=None, parent=None, suite=TASKS, **extra):
    """A finished job's results.json under ``root/name``."""
    ev = {
        "suite": suite,
        "predictions": predictions,
        "references": {w: {t: value(p[t]) for t in p} for w, p in predictions.items()},
        "tasks": {t: {"value": value(p)} for t, p in predictions["merged"].items()},
        "floor": "majority",
        "members": list(models["members"]),
        "normalisers": {"speech": models["anchor"], "music": next(
            m for m in models["members"] if m != models["anchor"])},
    }  # fmt: skip
    config = {
        "models": models,
        "eval": {"bootstrap": {"resamples": 200, "seed": 0}, **extra.pop("eval", {})},
    }
    record = JobRecord(
        config=config, status="ok", experiment_id=experiment_id, parent=parent,
        evaluation=ev, **extra,
    )  # fmt: skip
    (root / name).mkdir(parents=True)
    record.write(root / name / "results.json")


@pytest.fixture
def sweep(tmp_path):
    """Teachers A (speech) and B (music); students S and M (with training records) of base
    B0 and an ensemble student E; IDs 4 and 5 merge the teachers, ta merges S and M, and a
    parent job scores E alone."""
    ckpt = tmp_path / "checkpoints"
    for seed, name in enumerate(("A", "B", "B0", "S", "M", "E")):
        export(random_encoder(tiny_config(), seed), ckpt / name)
    for name, steps, seconds in (("S", 100, 50.0), ("M", 300, 70.0), ("E", 200, 90.0)):
        (ckpt / name / "training.json").write_text(
            json.dumps({"teachers": {}, "steps": steps, "train_seconds": seconds})
        )
    (ckpt / "A" / "training.json").write_text(  # a teacher's own pretraining: not counted
        json.dumps({"corpus": {}, "steps": 5000, "train_seconds": 900.0})
    )
    a, b = outcomes_at({"ks": 0.9, "genre": 0.5}, 0), outcomes_at({"ks": 0.4, "genre": 0.9}, 1)
    s, m = outcomes_at({"ks": 0.7, "genre": 0.5}, 2), outcomes_at({"ks": 0.4, "genre": 0.7}, 3)
    e = outcomes_at({"ks": 0.6, "genre": 0.6}, 4)
    shared = {"a": a, "b": b, "fbank": outcomes_at({"ks": 0.3, "genre": 0.3}, 5)}
    pair = {"name": "pair", "members": {"a": str(ckpt / "A"), "b": str(ckpt / "B")},
            "anchor": "a"}  # fmt: skip
    root = tmp_path / "sweep"
    for n, acc in ((4, 0.8), (5, 0.85)):
        merged = outcomes_at({"ks": acc, "genre": acc}, 10 + n)
        job(root, f"id{n}", pair, {**shared, "merged": merged, "fusion": a}, f"id{n}",
            seconds={"calibration": 3.0, "matching": float(n)})  # fmt: skip
    students = {"name": "distill_demo", "anchor": "speech", "base": str(ckpt / "B0"),
                "members": {"speech": str(ckpt / "S"), "music": str(ckpt / "M")}}  # fmt: skip
    base = outcomes_at({"ks": 0.5, "genre": 0.5}, 6)
    mine = {"speech": s, "music": m, "base": base, "fbank": shared["fbank"], "fusion": s}
    merged = outcomes_at({"ks": 0.6, "genre": 0.6}, 7)
    job(root, "ta", students, {**mine, "merged": merged}, "ta-1-1")
    trio = {**students, "members": {**students["members"], "ensemble": str(ckpt / "E")}}
    job(root, "ensemble", trio, {**mine, "ensemble": e, "merged": e}, parent="ensemble")
    return root, ckpt


def test_every_row_is_scored_against_the_teachers_once(sweep):
    root, ckpt = sweep
    rows, costs, _ = routes.gather(root)
    keys = [r.key for r in rows]
    assert keys == [
        "A", "B", "id4", "id5", "fusion", "E",
        "S", "M", "B0", "ta-1-1", "fbank",
    ]  # fmt: skip
    by_key = {r.key: r for r in rows}
    assert "ensemble alone" in by_key["E"].description  # the parent job's row
    assert "distilled 200 steps" in by_key["E"].description
    routes.rescore(rows, routes.teachers_record([JobRecord.read(root / "id5/results.json")]), "id5")
    assert by_key["A"].scores["speech"] == pytest.approx(1000)
    assert by_key["B"].scores["music"] == pytest.approx(1000)
    # the fusion's per-clip outcomes are teacher A's, so its Speech is 1000 as well; the speech
    # student's own pool would have normalised it to 1000, the teachers put it below
    assert by_key["fusion"].scores["speech"] == pytest.approx(1000)
    assert by_key["S"].scores["speech"] < 900
    assert all(r.intervals.get("avg") for r in rows if r.key != "id5")
    assert costs["ta-1-1"].steps == 400 and costs["ta-1-1"].seconds == pytest.approx(120.0)
    assert costs["E"].steps == 200 and costs["id5"].steps == 0 and costs["A"].steps == 0
    assert "distilled" not in by_key["A"].description
    assert costs["id5"].seconds == pytest.approx(8.0)  # calibration + matching
    assert costs["fusion"].encoders == (str(ckpt / "A"), str(ckpt / "B"))


def test_costs_are_counted_from_the_encoders_a_row_runs(sweep):
    root, _ = sweep
    rows, costs, _ = routes.gather(root)
    routes.measure(costs, repeats=1)
    one = costs["A"]
    assert one.parameters == sum(
        p.numel() for p in random_encoder(tiny_config(), 0).model.parameters()
    )
    assert costs["fusion"].parameters == 2 * one.parameters
    assert costs["fusion"].gflop_per_second == pytest.approx(2 * one.gflop_per_second)
    assert one.gflop_per_second > 0 and len(one.seconds_per_hour) == 1
    assert costs["fbank"].parameters == 0


def test_the_table_files_are_written(sweep):
    root, _ = sweep
    paths = routes.build(root, repeats=1)
    text = paths["md"].read_text()
    assert "| id5 |" in text and "teachers' layer fusion" in text and "GFLOP / audio s" in text
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0


def test_a_job_of_another_suite_is_refused(sweep):
    root, ckpt = sweep
    other = [*TASKS, {"name": "x", "paper": "X", "domain": "music", "kind": "utterance",
                      "metric": "accuracy"}]  # fmt: skip
    models = {"name": "distill_demo", "anchor": "speech",
              "members": {"speech": str(ckpt / "S"), "music": str(ckpt / "M")}}  # fmt: skip
    t = outcomes_at({"ks": 0.5, "genre": 0.5}, 9)
    job(root, "stray", models, {"merged": t, "speech": t, "music": t}, "stray", suite=other)
    with pytest.raises(ValueError, match="job stray was evaluated on another suite"):
        routes.gather(root)


def test_without_the_teachers_pair_it_says_what_to_run(sweep):
    root, _ = sweep
    for n in (4, 5):
        (root / f"id{n}" / "results.json").unlink()
    with pytest.raises(ValueError, match="make routes runs IDs 4 and 5"):
        routes.gather(root)
