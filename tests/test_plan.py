"""Alignment plans: a job that changes only the merge weights reuses the permutations an
earlier job's matching found; another scope, matcher or calibration set matches again."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from tests.helpers import local_job, run_py


def test_a_plan_is_reused_when_only_the_weights_change(pair, tmp_path):
    def job(name: str, *overrides: str) -> tuple[dict, dict]:
        out = tmp_path / name
        done = run_py(
            *local_job(pair, out, "eval=none", f"paths.cache={tmp_path / 'cache'}", *overrides)
        )
        assert done.returncode == 0, done.stderr[-3000:]
        record = json.loads((out / "results.json").read_text())
        return record, load_file(str(out / "permutations.safetensors"))

    first, perms = job("first", "merge.alpha=0.9")
    again, reused = job("again", "merge.alpha=0.5")
    assert (first["plan"]["reused"], again["plan"]["reused"]) == (False, True)
    assert first["plan"]["key"] == again["plan"]["key"]
    assert perms.keys() == reused.keys() and all(torch.equal(perms[k], reused[k]) for k in perms)
    for changed in ("permute=cnn", "calibration.size=2"):  # the scope; the statistics
        record, _ = job(changed.replace("=", "-"), changed)
        assert not record["plan"]["reused"], changed
        assert record["plan"]["key"] != first["plan"]["key"], changed
