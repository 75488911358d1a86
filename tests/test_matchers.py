"""Matchers beyond the paper's: each recovers a permuted copy of a random tiny encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from merging.match import MatchProblem, Scope
from merging.matchers.weight import WeightMatching
from tests.helpers import hidden_permuted_copy, local_job, random_encoder, run_py, tiny_config

ROOT = Path(__file__).resolve().parents[1]
FNN_ATTN = Scope(cnn=True, ffn=True, attn="heads")


def inverse(perm: torch.Tensor) -> torch.Tensor:
    return torch.argsort(perm)


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
def test_weight_matching_undoes_a_hidden_permutation(family):
    a, b, spec, hidden = hidden_permuted_copy(family)
    problem = MatchProblem(spec, FNN_ATTN, {}, a.model.state_dict(), b.model.state_dict())
    found = WeightMatching()(problem)
    assert set(found) == set(hidden) - {"res"}
    for name, perm in found.items():  # B's unit perm[i] is A's unit i: the hidden map undone
        assert torch.equal(perm, inverse(hidden[name])), name


def test_weight_matching_runs_with_no_calibration_audio(tmp_path):
    from merging.load import load_encoder
    from merging.merge import export

    a, b, _, _ = hidden_permuted_copy()
    export(a, tmp_path / "A")
    export(b, tmp_path / "B")
    out = tmp_path / "job"
    overrides = (
        "match=weight",
        "permute=fnn_attn",
        "merge.alpha={default:0.5,cnn:1.0}",  # a merge of a copy gives A whatever alpha is
        "calibration.size=0",
        "eval=none",
    )
    done = run_py(*local_job(tmp_path, out, *overrides))
    record = json.loads((out / "results.json").read_text())
    assert record["status"] == "ok", record.get("traceback") or done.stderr[-2000:]
    assert record["calibration"]["clips"] == 0 and record["match"] == "weight"
    assert record["merge"] == {"method": "linear", "alpha": {"default": 0.5, "cnn": 1.0}}
    assert not list((tmp_path / "cache").glob("calibration/*"))  # no pass over audio at all
    merged, ref = load_encoder(out / "merged").model.state_dict(), a.model.state_dict()
    assert all(torch.allclose(merged[k], ref[k], atol=1e-6) for k in ref)


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_sinkhorn_at_its_default_temperature_undoes_a_hidden_permutation(family):
    from merging.audio import calibration_clips
    from merging.calibrate import calibrate
    from merging.matchers.sinkhorn import Sinkhorn

    a, b, spec, hidden = hidden_permuted_copy(family)
    clips, _ = calibration_clips([], 4, a.sample_rate, 1.0, 0)
    stats = calibrate(a, b, clips, progress=False)
    problem = MatchProblem(spec, FNN_ATTN, stats, a.model.state_dict(), b.model.state_dict())
    sinkhorn = Sinkhorn(keep_plan=True)
    found = sinkhorn(problem)
    assert set(found) == set(hidden) - {"res"}
    for name, perm in found.items():
        assert torch.equal(perm, inverse(hidden[name])), name
    plan = sinkhorn.plans["ffn.0"]  # a transport plan: uniform marginals
    n = plan.shape[0]
    uniform = torch.full((n,), 1 / n, dtype=plan.dtype)
    torch.testing.assert_close(plan.sum(0), uniform)  # the last update: columns exact
    torch.testing.assert_close(plan.sum(1), uniform, rtol=1e-3, atol=0)


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
def test_the_papers_context_point_also_undoes_a_hidden_permutation(family):
    from merging.audio import calibration_clips
    from merging.calibrate import calibrate
    from merging.match import Exact

    a, b, _, hidden = hidden_permuted_copy(family)
    clips, _ = calibration_clips([], 4, a.sample_rate, 1.0, 0)
    stats = calibrate(a, b, clips, progress=False)
    scope = Scope(cnn=True, ffn=True, attn="heads", vo_point="context")
    spec = a.family.build_spec(a.config, keys=a.model.state_dict().keys(), vo_point="context")
    assert spec["attn_vo.0"].points == ("ctx.0",)
    found = Exact()(MatchProblem(spec, scope, stats, a.model.state_dict(), b.model.state_dict()))
    for name, perm in found.items():
        assert torch.equal(perm, inverse(hidden[name])), name
    wavlm = random_encoder(tiny_config("wavlm"), 0)
    with pytest.raises(ValueError, match="only vo_point=v"):
        wavlm.family.build_spec(wavlm.config, vo_point="context")
