"""REPAIR (Jordan, Sedghi, Saukh, Entezari and Neyshabur, "REPAIR: REnormalizing Permuted
Activations for Interpolation Repair", ICLR 2023): interpolate, then give every merged unit
the statistics the parents' interpolation should have.

Interpolating two aligned networks shrinks their units' variance layer after layer (the
"variance collapse" behind interpolation barriers). After combining, REPAIR measures each
unit's mean and std in A, in the aligned B and in the merged encoder on the calibration clips
at every repaired point (the conv channels after their normalisation, or after the conv where
there is none; the FFN hidden units before the activation) and rescales the affine map that
produces the unit, ``y -> (y - mean) * target_std / std + target_mean`` with the targets
interpolated like the weights. Points are repaired in forward order, each measured after the
ones before it were repaired, so each lands on its target (a missing bias leaves the mean).
Cost: two passes over the clips for the parents, one per repaired point, one to check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from merging.combine import Linear
from merging.forward import encode
from merging.loader import each_clip
from merging.points import RepairPoint

EPS = 1e-8


@torch.no_grad()
def unit_moments(encoder, points: Sequence[RepairPoint], clips) -> dict[str, torch.Tensor]:
    """Per point, (2, units): each unit's mean and std over every frame of every clip."""
    sums: dict[str, torch.Tensor] = {}

    def hook(point: RepairPoint):
        def record(_module, _inputs, out):
            x = out.transpose(1, 2) if point.channels_first else out
            x = x.reshape(-1, x.shape[-1]).double()
            count = torch.full_like(x[0], float(len(x)))
            part = torch.stack([x.sum(0), x.square().sum(0), count])
            sums[point.name] = part if point.name not in sums else sums[point.name] + part

        return record

    model = encoder.model
    handles = [model.get_submodule(p.module).register_forward_hook(hook(p)) for p in points]
    try:
        with each_clip(clips).guard() as loaded:  # decoded ahead, in worker processes
            for (wave,) in loaded:
                encode(encoder, wave[None, :], torch.tensor([wave.shape[0]]))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, (total, squares, n) in sums.items():
        mean = total / n
        out[name] = torch.stack([mean, (squares / n - mean.square()).clamp(min=0).sqrt()])
    return out


@dataclass(frozen=True)
class Repair(Linear):
    """Linear interpolation (any ``alpha`` ``Linear`` takes), then REPAIR."""

    name = "repair"
    pairs_only = True  # refines A and the aligned B
    needs_clips = True

    @torch.no_grad()
    def refine(self, merged, a, b, clips) -> dict:
        points = merged.family.repair_points(merged.config)
        layers = merged.config.num_hidden_layers
        stats_a, stats_b = unit_moments(a, points, clips), unit_moments(b, points, clips)
        targets = {}  # per point, the interpolated (mean, std) of the parents
        for p in points:
            w = self.weight(p.weight_key, layers, merged.family.parts)
            targets[p.name] = w * stats_a[p.name] + (1 - w) * stats_b[p.name]
        state = merged.model.state_dict()
        report = []
        for p in points:
            (mean, std), (mean_t, std_t) = unit_moments(merged, [p], clips)[p.name], targets[p.name]
            ratio = std_t / std.clamp(min=EPS)
            weight, bias = state[f"{p.module}.weight"], state.get(f"{p.module}.bias")
            shape = (-1,) + (1,) * (weight.dim() - 1)
            weight.mul_(ratio.to(weight.dtype).view(shape))
            if bias is not None:
                bias.copy_(((bias.double() - mean) * ratio + mean_t).to(bias.dtype))
            before = float((std / std_t.clamp(min=EPS)).mean())
            report.append({"point": p.name, "std_ratio_before": before})
        after = unit_moments(merged, points, clips)
        for row, p in zip(report, points, strict=True):
            std_t = targets[p.name][1]
            row["std_ratio_after"] = float((after[p.name][1] / std_t.clamp(min=EPS)).mean())
        return {"points": report, "passes": 2 + len(points) + 1}
