"""Merge methods beyond linear interpolation."""

from __future__ import annotations

import pytest
import torch

from merging.audio import calibration_clips
from merging.calibrate import calibrate
from merging.match import Scope
from merging.merge import merge
from merging.mergers.repair import Repair, repair_points, unit_moments
from merging.spec import apply_permutations
from tests.helpers import random_encoder, tiny_config

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
