"""What ``calibration.max_frame_rate`` costs: permutations found with a cap against exact ones.

On the demo pair and the demo calibration set, statistics are computed reading every frame and
then with each cap; for every cap it prints the calibration seconds, the share of units per group
kind that get the same partner as with exact statistics, and the worst ratio (over groups) of the
summed exact correlation of the capped matching to that of the exact one (1 = as good).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from demo.suite import build_suite, default_root
from merging.audio import calibration_clips
from merging.calibrate import calibrate
from merging.forward import min_samples
from merging.load import load_encoder
from merging.match import Scope, match
from merging.merge import spec_for
from merging.runtime import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--caps", type=float, nargs="+", default=[400, 100, 25])
    parser.add_argument("--clips", type=int, default=64)
    args = parser.parse_args()
    keep_freed_memory()

    a = load_encoder("checkpoints/demo-speech")
    b = load_encoder("checkpoints/demo-music")
    root = build_suite(default_root())
    clips, _ = calibration_clips(
        [root / "calibration"], args.clips, a.sample_rate, 4.0, 0, min_samples(a.config)
    )
    scope = Scope(cnn=True, ffn=True, attn="heads")
    spec = spec_for(a.model, scope)

    def run(cap: float | None) -> tuple[float, dict, dict]:
        t = time.perf_counter()
        stats = calibrate(a, b, clips, 8, progress=False, max_frame_rate=cap)
        return time.perf_counter() - t, stats, match(spec, stats, scope)

    seconds, exact, reference = run(None)
    print(f"{len(clips)} clips, scope fnn_attn; every frame: calibration {seconds:.1f} s")
    print(
        f"{'cap (Hz)':>9} {'calib s':>8}  same partner (conv / ffn / attn)  objective (conv / ffn)"
    )
    for cap in args.caps:
        seconds, _, perms = run(cap)
        same, objective = defaultdict(list), defaultdict(list)
        for g in spec.groups:
            if g.name not in perms:
                continue
            same[g.kind].append((perms[g.name] == reference[g.name]).float().mean().item())
            if g.blocks == 1:
                corr = exact[g.points[0]].corr
                rows = torch.arange(corr.shape[0])
                found = corr[rows, perms[g.name]].sum() / corr[rows, reference[g.name]].sum()
                objective[g.kind].append(found.item())
        shares = " / ".join(f"{sum(same[k]) / len(same[k]):6.1%}" for k in ("conv", "ffn", "attn"))
        worst = " / ".join(f"{min(objective[k]):.4f}" for k in ("conv", "ffn"))
        print(f"{cap:9g} {seconds:8.1f}  {shares:>33}  {worst}")


if __name__ == "__main__":
    main()
