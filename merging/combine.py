"""Weight-space combination of two aligned encoders."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def interpolate(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``alpha * a + (1 - alpha) * b`` for every floating tensor; others are taken from ``a``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(
            f"merge.alpha is the weight of model A and must lie in [0, 1], got {alpha}"
        )
    if set(a) != set(b):
        raise KeyError(f"state dicts differ in keys: {sorted(set(a) ^ set(b))[:5]}")
    out = {}
    for key, ta in a.items():
        tb = b[key]
        if ta.shape != tb.shape:
            raise ValueError(f"{key}: shapes {tuple(ta.shape)} and {tuple(tb.shape)} differ")
        out[key] = torch.lerp(tb, ta, alpha) if ta.is_floating_point() else ta.clone()
    return out
