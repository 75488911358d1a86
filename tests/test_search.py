"""The weight search: schedules as merge.alpha, an Optuna study of run.py trials on the
validation split that resumes after a kill, and the best trial scored on the test split."""

from __future__ import annotations

import csv
import json

import pytest

from search import schedule
from search.study import open_study, search
from tests.test_eval import make_two_class_folder
from tests.test_runner import composed


def test_knots_are_interpolated_over_depth_and_written_as_merge_alpha():
    assert schedule.layer_weights([0.0, 1.0], 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert schedule.layer_weights([1.0, 0.0, 1.0], 5) == [1.0, 0.5, 0.0, 0.5, 1.0]
    assert schedule.layer_weights([0.3], 3) == [0.3, 0.3, 0.3]
    params = {"cnn": 0.25, "norms": 0.5, "layer_knot_0": 1.0, "layer_knot_1": 0.0}
    value = schedule.alpha(params, 4)
    assert value == {"layers": [1.0, 0.6667, 0.3333, 0.0], "cnn": 0.25, "norms": 0.5}
    cfg = composed(schedule.override(value))  # Hydra's grammar reads it back
    assert list(cfg.merge.alpha.layers) == value["layers"] and cfg.merge.alpha.cnn == 0.25
    space = {"cnn": [0, 1], "norms": None, "layers": [0.5, 1], "knots": 2}
    chosen = schedule.suggest(lambda name, lo, hi: (lo + hi) / 2, space)
    assert chosen == {"cnn": 0.5, "layer_knot_0": 0.75, "layer_knot_1": 0.75}


@pytest.fixture
def study_cfg(pair, tmp_path):
    task = make_two_class_folder(tmp_path / "task", per_class=12)
    return {
        "pair": "local",
        "eval": "folder",
        "trials": 2,
        "sampler": "tpe",
        "seed": 0,
        "objective": "validation.speech",  # a one-task speech suite
        "run": [
            f"pair.a={pair / 'A'}", f"pair.b={pair / 'B'}", "calibration=default",
            f"calibration.dirs=[{pair / 'calib'}]", "calibration.size=3", f"eval.root={task}",
            "eval.probe.epochs=2", "eval.probe.seeds=[0]", f"paths.cache={tmp_path / 'cache'}",
        ],
        "align": ["permute=fnn_attn"],
        "schedule": {"cnn": [0.0, 1.0], "norms": None, "layers": [0.0, 1.0], "knots": 2},
        "compare": [],
        "out": str(tmp_path / "study"),
        "logger": {"mode": "disabled"},
    }  # fmt: skip


def test_a_study_resumes_without_repeating_trials_and_scores_the_best_once(study_cfg, tmp_path):
    """Trials on the validation split reuse the alignment plan and read no test clip; a trial
    a kill left running is asked again; the best is scored on the test split beside ID 4."""
    out = tmp_path / "study"
    first = search(study_cfg, progress=False)
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert [r["plan_reused"] for r in rows] == ["False", "True"]  # matching once
    assert all(r["test_clips_read"] == "0" for r in rows)
    assert first["best_trial"] in (0, 1) and first["test"]  # scored on the test split once
    study = open_study(study_cfg, out)
    study.ask()  # a trial in flight when the study is killed
    again = search({**study_cfg, "trials": 3, "compare": ["id4"]}, progress=False)
    assert again["trials"] == 3
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0000", "0001", "0003"]
    best = json.loads((out / "best.json").read_text())
    with open(out / "trials.csv") as f:
        objectives = [float(r["objective"]) for r in csv.DictReader(f)]
    assert len(objectives) == 3 and best["validation"]["speech"] == max(objectives)
    assert best["merge_alpha"]["layers"]
    with pytest.raises(ValueError, match="started with other align"):
        open_study({**study_cfg, "align": ["permute=all"]}, out)  # other trials: refused
    table = (out / "final" / "table.md").read_text()
    assert "search-best" in table and "| 4 |" in table
    for name in ("objective.png", "schedule.png"):
        assert (out / name).stat().st_size > 1000


def test_the_command_line_entry_composes_and_reads_the_encoders_depth(tmp_path):
    """``python -m search`` is a Hydra app that asks run.py for its config (a second Hydra
    compose in one process is refused); with no trials it says so."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "search", "trials=0", f"out={tmp_path / 'study'}", "progress=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"},
    )  # fmt: skip
    assert done.returncode != 0
    assert "no trial of" in done.stderr and "GlobalHydra" not in done.stderr
    assert (tmp_path / "study" / "study.db").is_file()
