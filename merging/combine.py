"""Weight-space combination of two aligned encoders.

A merge method is a ``Merger`` named by ``conf/merge/*.yaml`` (``_target_``): it combines A's
and the aligned B's state dicts and may then refine the merged encoder with one pass over the
calibration clips (what REPAIR-style methods need).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


class Merger:
    """Combine A's weights with B's (already permuted onto A's units)."""

    name = "merger"
    needs_clips = False  # True: ``refine`` runs after combining, on the calibration clips

    def combine(
        self, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def refine(self, merged: Any, a: Any, b: Any, clips: Sequence[Any]) -> dict:
        """With ``needs_clips``, after combining: adjust the ``merged`` encoder in place from
        the calibration clips, with A and the aligned B at hand; returns what results.json
        should say about it."""
        return {}

    def describe(self) -> dict[str, Any]:
        """The method's name and settings, as results.json and the table show them."""
        return {"method": self.name, **vars(self)}

    def check(self, config: Any) -> None:
        """Raise if the settings do not fit encoders of this ``config``: run before
        calibration, so that a mistake costs no pass over the audio."""


@dataclass(frozen=True)
class Linear(Merger):
    """``alpha * A + (1 - alpha) * B``: the paper's interpolation (alpha is A's weight).

    ``alpha`` is a number, or a mapping that weighs parts of the encoder differently (the most
    specific entry wins: ``norms``, then ``cnn`` or ``layers``, then ``default``):
    ``cnn`` (the conv stack and feature projection), ``layers`` (a list with one weight per
    transformer layer, or ``{from: x, to: y}``, linear over depth), ``norms`` (every layer
    norm), ``default`` (everything else; 0.9 if absent)."""

    alpha: float | Mapping[str, Any] = 0.9
    name = "linear"

    def __post_init__(self) -> None:
        if isinstance(self.alpha, Mapping):
            unknown = set(self.alpha) - {"default", "cnn", "layers", "norms"}
            if unknown:
                raise ValueError(
                    f"merge.alpha: unknown parts {sorted(unknown)} (default, cnn, layers, norms)"
                )
            values = [v for k, v in self.alpha.items() if k != "layers"]
            layers = self.alpha.get("layers")
            if isinstance(layers, Mapping):
                if set(layers) != {"from", "to"}:
                    raise ValueError("merge.alpha.layers: a list, or {from: x, to: y}")
                values += [layers["from"], layers["to"]]
            elif layers is not None:
                values += list(layers)
        else:
            values = [self.alpha]
        for a in values:
            if isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a <= 1:
                raise ValueError(
                    f"merge.alpha must be a number in [0, 1] (the weight of A), got {a!r}"
                )

    def check(self, config: Any) -> None:
        schedule = self.alpha.get("layers") if isinstance(self.alpha, Mapping) else None
        if isinstance(schedule, Sequence) and len(schedule) != config.num_hidden_layers:
            raise ValueError(
                f"merge.alpha.layers has {len(schedule)} weights for "
                f"{config.num_hidden_layers} layers: one per transformer layer"
            )

    def weight(self, key: str, layers: int) -> float:
        """A's weight for one parameter."""
        if not isinstance(self.alpha, Mapping):
            return float(self.alpha)
        parts = self.alpha
        if "norms" in parts and "layer_norm" in key:
            return float(parts["norms"])
        if "cnn" in parts and key.startswith(("feature_extractor.", "feature_projection.")):
            return float(parts["cnn"])
        match = re.match(r"encoder\.layers\.(\d+)\.", key)
        if match and parts.get("layers") is not None:
            i, schedule = int(match.group(1)), parts["layers"]
            if isinstance(schedule, Mapping):
                t = i / max(layers - 1, 1)
                return float(schedule["from"] + t * (schedule["to"] - schedule["from"]))
            if len(schedule) != layers:
                raise ValueError(
                    f"merge.alpha.layers has {len(schedule)} weights for {layers} layers"
                )
            return float(schedule[i])
        return float(parts.get("default", 0.9))

    def combine(
        self, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if not isinstance(self.alpha, Mapping):
            return interpolate(a, b, float(self.alpha))
        layers = 1 + max(
            (int(m.group(1)) for k in a if (m := re.match(r"encoder\.layers\.(\d+)\.", k))),
            default=0,
        )
        return interpolate(a, b, {k: self.weight(k, layers) for k in a})


def interpolate(
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    alpha: float | Mapping[str, float],
) -> dict[str, torch.Tensor]:
    """``alpha * a + (1 - alpha) * b`` for every floating tensor (``alpha``: one weight, or
    one per key); others are taken from ``a``."""
    weights = alpha if isinstance(alpha, Mapping) else dict.fromkeys(a, alpha)
    bad = {k: w for k, w in weights.items() if not 0.0 <= w <= 1.0}
    if bad:
        raise ValueError(f"merge.alpha is the weight of model A and must lie in [0, 1], got {bad}")
    if set(a) != set(b):
        raise KeyError(f"state dicts differ in keys: {sorted(set(a) ^ set(b))[:5]}")
    out = {}
    for key, ta in a.items():
        tb = b[key]
        if ta.shape != tb.shape:
            raise ValueError(f"{key}: shapes {tuple(ta.shape)} and {tuple(tb.shape)} differ")
        out[key] = torch.lerp(tb, ta, weights[key]) if ta.is_floating_point() else ta.clone()
    return out
