"""Weight-space combination of two aligned encoders.

A merge method is a ``Merger`` named by ``conf/merge/*.yaml`` (``_target_``): it combines A's
and the aligned B's state dicts and may then refine the merged encoder with one pass over the
calibration clips (what REPAIR-style methods need).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


class Merger:
    """Combine A's weights with B's (already permuted onto A's units)."""

    name = "merger"

    def combine(
        self, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def refine(self, encoder: Any, clips: Sequence[Any]) -> dict:
        """After combining: adjust ``encoder`` in place from the calibration clips; what
        results.json should say about it. Plain combinations need no pass."""
        return {}

    def describe(self) -> dict[str, Any]:
        """The method's name and settings, as results.json and the table show them."""
        return {"method": self.name, **vars(self)}


@dataclass(frozen=True)
class Linear(Merger):
    """``alpha * A + (1 - alpha) * B``: the paper's interpolation (alpha is A's weight)."""

    alpha: float = 0.9
    name = "linear"

    def __post_init__(self) -> None:
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a <= 1:
            raise ValueError(f"merge.alpha must be a number in [0, 1] (the weight of A), got {a!r}")

    def combine(
        self, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return interpolate(a, b, self.alpha)


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
