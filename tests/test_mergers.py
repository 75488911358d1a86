"""Merge methods beyond linear interpolation."""

from __future__ import annotations

import json

import pytest
import torch

from merging.audio import calibration_clips
from merging.calibrate import calibrate
from merging.forward import encode
from merging.match import Scope
from merging.merge import merge
from merging.mergers.repair import Repair, unit_moments
from merging.mergers.zipit import ZipIt, greedy_pairs
from merging.points import repair_points
from merging.spec import apply_permutations
from tests.helpers import hidden_permuted_copy, local_job, random_encoder, run_py, tiny_config

FNN_ATTN = Scope(cnn=True, ffn=True, attn="heads")


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_repair_puts_every_unit_on_its_target_std(norm):
    config = tiny_config(feat_extract_norm=norm, conv_bias=norm == "layer")
    a, b = random_encoder(config, 0), random_encoder(config, 1)
    clips, _ = calibration_clips([], 6, a.sample_rate, 1.0, 0)
    stats = calibrate(a, b, clips, progress=False)
    plain = merge(a, b, stats, FNN_ATTN, 0.5)
    repaired = merge(a, b, stats, FNN_ATTN, Repair(0.5), clips=clips)
    assert torch.equal(plain.perms["ffn.0"], repaired.perms["ffn.0"])  # same alignment

    points = repair_points(config)
    b_aligned = random_encoder(config, 1)  # the targets: the parents' moments, B's aligned
    b_aligned.model.load_state_dict(
        apply_permutations(b.model.state_dict(), plain.spec, plain.perms)
    )
    sa, sb = unit_moments(a, points, clips), unit_moments(b_aligned, points, clips)
    ratios = {}
    for who, result in (("plain", plain), ("repaired", repaired)):
        got = unit_moments(result.encoder, points, clips)
        ratios[who] = {
            p.name: got[p.name][1] / (0.5 * sa[p.name][1] + 0.5 * sb[p.name][1]) for p in points
        }
    for name, r in ratios["repaired"].items():
        assert (r - 1).abs().max() < 0.05, name
    assert any((r - 1).abs().max() > 0.05 for r in ratios["plain"].values())  # it had work
    report = repaired.refined["points"]
    assert [row["point"] for row in report] == [p.name for p in points]
    assert all(abs(row["std_ratio_after"] - 1) < 0.05 for row in report)
    assert repaired.refined["passes"] == len(points) + 3


def test_repair_needs_calibration_clips():
    a = random_encoder(tiny_config(), 0)
    with pytest.raises(ValueError, match="merge=repair needs calibration clips"):
        merge(a, a, {}, Scope(), Repair(0.5))


def sequential_greedy(corr: torch.Tensor, same_model: bool) -> set[tuple[int, int]]:
    """ZipIt!'s greedy as written: sort every pair, take each whose units are both free."""
    n = corr.shape[0] // 2
    order = sorted(
        ((float(corr[i, j]), i, j) for i in range(2 * n) for j in range(i + 1, 2 * n)),
        reverse=True,
    )
    free, pairs = set(range(2 * n)), set()
    for _, i, j in order:
        if i in free and j in free and (same_model or (i < n) != (j < n)):
            pairs.add((i, j))
            free -= {i, j}
    return pairs


@pytest.mark.parametrize("same_model", [True, False])
def test_zipit_pairs_are_the_sequential_greedy_matching(same_model):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(200, 24, generator=gen) @ torch.randn(24, 24, generator=gen)
    corr = torch.corrcoef(x.T)
    pairs = greedy_pairs(corr, same_model)
    assert {tuple(p) for p in pairs.tolist()} == sequential_greedy(corr, same_model)
    assert sorted(pairs.flatten().tolist()) == list(range(24))  # every unit exactly once
    if not same_model:
        assert ((pairs[:, 0] < 12) != (pairs[:, 1] < 12)).all()


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
def test_zipit_of_a_model_with_a_shuffled_copy_of_itself_returns_it(family):
    """ZipIt! finds its own pairs: B's conv and FFN units are shuffled and nothing is
    permuted (Scope()), yet B = A comes back as A."""
    a, b, spec, _ = hidden_permuted_copy(family, kinds=("conv", "ffn"))
    zipped = [g.name for g in spec.groups if g.kind in ("conv", "ffn")]
    clips, _ = calibration_clips([], 4, a.sample_rate, 1.0, 0)
    result = merge(a, b, calibrate(a, b, clips, progress=False), Scope(), ZipIt(0.3), clips=clips)
    merged, ref = result.encoder.model.state_dict(), a.model.state_dict()
    assert all(torch.allclose(merged[k], ref[k], atol=1e-6) for k in ref)
    report = result.refined["groups"]
    assert [row["group"] for row in report] == zipped
    assert all(row["within_model"] == 0 and row["mean_corr"] > 0.999 for row in report)


def test_zipit_merges_redundant_units_of_one_model_and_keeps_its_function():
    """Two identical FFN units of A (and of B = A) zip into one unit per model; the merged
    encoder is laid out differently from A yet computes the same function."""
    a = random_encoder(tiny_config(), 0)
    state = a.model.state_dict()
    ffn = "encoder.layers.0.feed_forward.intermediate_dense"
    state[f"{ffn}.weight"][1], state[f"{ffn}.bias"][1] = (
        state[f"{ffn}.weight"][0],
        state[f"{ffn}.bias"][0],
    )
    a.model.load_state_dict(state)
    b = random_encoder(tiny_config(), 0)
    b.model.load_state_dict(state)
    clips, _ = calibration_clips([], 4, a.sample_rate, 1.0, 0)
    stats = calibrate(a, b, clips, progress=False)
    result = merge(a, b, stats, Scope(), ZipIt(0.7, parts=["ffn"], layers=1), clips=clips)
    assert [row["group"] for row in result.refined["groups"]] == ["ffn.0"]
    assert result.refined["groups"][0]["within_model"] == pytest.approx(2 / 48)
    merged = result.encoder.model.state_dict()
    assert not torch.equal(merged[f"{ffn}.weight"], state[f"{ffn}.weight"])
    wave = clips[0].wave[None, :]
    lengths = torch.tensor([wave.shape[1]])
    got = encode(result.encoder, wave, lengths).last_hidden_state
    want = encode(a, wave, lengths).last_hidden_state
    assert torch.allclose(got, want, atol=1e-4)


def test_zipit_options_choose_the_zipped_groups_and_refuse_unknown_parts():
    a = random_encoder(tiny_config(), 0)
    assert [g.name for g in ZipIt(parts=["cnn"]).zipped_groups(a)] == ["conv.0", "conv.1", "conv.2"]
    assert [g.name for g in ZipIt(layers=1).zipped_groups(a)][-2:] == ["conv.2", "ffn.0"]
    with pytest.raises(ValueError, match="merge.parts"):
        ZipIt(parts=["attn"])


def test_run_py_zips_the_conv_stack_and_permutes_the_transformer(tmp_path):
    """merge=zipit_cnn (the hybrid) through run.py: B is a shuffled copy of A, the matcher
    aligns attention and FFNs, ZipIt! the conv stack, and A comes back."""
    from merging.load import load_encoder
    from merging.merge import export
    from tests.test_audio import write_mixed_folder

    a, b, _, _ = hidden_permuted_copy()
    export(a, tmp_path / "A")
    export(b, tmp_path / "B")
    write_mixed_folder(tmp_path / "calib")
    out = tmp_path / "job"
    args = ("merge=zipit_cnn", "merge.alpha=0.5", "permute=fnn_attn", "eval=none")
    done = run_py(*local_job(tmp_path, out, *args))
    record = json.loads((out / "results.json").read_text())
    assert record["status"] == "ok", record.get("traceback") or done.stderr[-2000:]
    assert record["merge"]["method"] == "zipit_cnn" and record["merge"]["parts"] == ["cnn"]
    groups = [row["group"] for row in record["merge"]["refined"]["groups"]]
    assert groups == ["conv.0", "conv.1", "conv.2"]
    merged, ref = load_encoder(out / "merged").model.state_dict(), a.model.state_dict()
    assert all(torch.allclose(merged[k], ref[k], atol=1e-6) for k in ref)
