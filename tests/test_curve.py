"""Curves along merge.alpha and calibration.size, from results.json files with per-clip outcomes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from eval.evaluate import suite_record
from eval.stats import score_rows
from report import curve
from tests.test_stats import record, tiny_table


def fake_job(
    sweep: Path, name: str, scope: str, alpha: float, size: int, quality: float, perm=None
) -> None:
    """A finished job whose merged encoder gets ``quality`` of every test clip right."""
    _, (a, b), tasks = tiny_table()
    rng = np.random.default_rng(int(1000 * quality) + size)
    merged = {t: record(rng.random(90) < quality, None, r["groups"]) for t, r in a.items()}
    job = sweep / name
    job.mkdir(parents=True)
    perms = job / "permutations.safetensors"
    save_file({"ffn.0": perm if perm is not None else torch.arange(8)}, str(perms))
    scores = score_rows({"merged": merged, "a": a, "b": b}, tasks, resamples=10)["merged"].points
    suite = suite_record([(t, []) for t in tasks])
    rec = {
        "status": "ok",
        "experiment_id": None,
        "config": {
            "permute": {"name": scope, "cnn": True},
            "merge": {"method": "linear", "alpha": alpha},
            "calibration": {"size": size},
            "eval": {"bootstrap": {"resamples": 300}},
        },
        "permutations": str(perms),
        "evaluation": {
            "tasks": {t.name: {"value": scores[t.name]} for t in tasks},
            "scores": {s: scores[s] for s in ("speech", "music", "avg")},
            "predictions": {"merged": merged, "a": a, "b": b},
            "suite": suite,
            "floor": "majority",
        },
    }
    (job / "results.json").write_text(json.dumps(rec))


def test_alpha_curve_has_every_point_with_its_interval(tmp_path):
    for scope in ("none", "fnn_attn"):
        for i, alpha in enumerate((0.0, 0.5, 1.0)):
            q = 0.5 + 0.2 * abs(alpha - 0.5) + (0.1 if scope == "fnn_attn" else 0.0)
            fake_job(tmp_path, f"{scope}-{i}", scope, alpha, 64, q)
    paths = curve.build(tmp_path)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [(r["scope"], float(r["merge.alpha"])) for r in rows] == [
        (s, a) for s in ("fnn_attn", "none") for a in (0.0, 0.5, 1.0)
    ]
    for r in rows:
        assert float(r["speech_lo"]) <= float(r["speech"]) <= float(r["speech_hi"])
        assert float(r["avg_lo"]) < float(r["avg_hi"])
    assert "kept" not in rows[0]
    assert paths["png"].stat().st_size > 10000


def test_calibration_curve_reports_partners_kept_at_the_largest_size(tmp_path):
    final = torch.arange(8)
    moved = final.clone()
    moved[:2] = torch.tensor([1, 0])  # two of eight units have another partner
    for size, perm in ((4, moved), (16, final), (64, final)):
        fake_job(tmp_path, f"size{size}", "fnn_attn", 0.9, size, 0.7, perm)
    paths = curve.build(tmp_path, "calibration.size")
    kept = {
        int(float(r["calibration.size"])): float(r["kept"])
        for r in csv.DictReader(paths["csv"].open())
    }
    assert kept == {4: 0.75, 16: 1.0, 64: 1.0}


def test_costs_name_each_methods_matching_time_and_extra_passes(tmp_path):
    from report import costs
    from report.record import JobRecord

    fake_job(tmp_path, "plain", "fnn_attn", 0.9, 64, 0.8)
    fake_job(tmp_path, "repaired", "fnn_attn", 0.9, 64, 0.85)
    path = tmp_path / "repaired" / "results.json"
    rec = JobRecord.read(path)
    rec.merge = {"method": "repair", "alpha": 0.9, "refined": {"passes": 14, "points": []}}
    rec.seconds, rec.total_seconds = {"matching": 0.25, "refining": 12.5}, 99.0
    rec.write(path)
    lines = costs.render(tmp_path).splitlines()
    assert "| repaired | repair, fnn_attn, alpha 0.9 | 0.25 | 14 | 12.5 | 99 |" in lines
    assert any(
        line.startswith("| plain | linear, fnn_attn, alpha 0.9 | 0.00 | 0 |") for line in lines
    )
