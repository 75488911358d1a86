"""Weight-space combination of aligned encoders.

A merge method is a ``Merger`` named by ``conf/merge/*.yaml`` (``_target_``): it combines the
state dicts of a pool's members (each aligned to the anchor; two of them: A and the aligned B)
and may then refine the merged encoder with one pass over the calibration clips (what
REPAIR-style methods need). Weights are given per member, each a number or a mapping that
weighs the encoder's components differently (``component_weight``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from merging.points import HUBERT_PARTS, Parts

State = Mapping[str, torch.Tensor]
PARTS = ("default", "cnn", "layers", "norms")


class Merger:
    """Combine A's weights with B's (already permuted onto A's units), or, for a method that
    takes a pool, the weights of every member (each aligned to the anchor)."""

    name = "merger"
    needs_clips = False  # True: ``refine`` runs after combining, on the calibration clips
    pairs_only = True  # combines exactly two members, A (the anchor) and B
    needs_base = False  # True: combines the members' task vectors from a shared base

    def combine(self, a: State, b: State) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def combine_pool(
        self,
        states: Mapping[str, State],
        anchor: str,
        base: State | None = None,
        parts: Parts = HUBERT_PARTS,
    ) -> dict[str, torch.Tensor]:
        """The members' state dicts (``anchor``'s first or not) merged into one; a method for
        two members combines the anchor's with the other's. ``parts``: where the members'
        family keeps the parts a weight can name."""
        self.check_pool(list(states), base is not None)
        other = next(n for n in states if n != anchor)
        return self.combine(states[anchor], states[other])

    def check_pool(self, members: Sequence[str], has_base: bool) -> None:
        """Raise if this method cannot merge these members: run before any pass."""
        if self.pairs_only and len(members) != 2:
            raise ValueError(
                f"merge={self.name} merges two encoders; the pool has {len(members)} "
                f"({', '.join(members)}): choose merge=linear with merge.weights, or a "
                "task-vector method"
            )
        if self.needs_base and not has_base:
            raise ValueError(
                f"merge={self.name} combines task vectors from a shared initialisation: "
                "name it with models.base=DIR"
            )

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
    weights: Mapping[str, Any] | None = None
    name = "linear"
    pairs_only = False

    def __post_init__(self) -> None:
        check_weight(self.alpha, "merge.alpha", upper=1.0)
        if self.pairs_only and self.weights is not None:
            raise ValueError(
                f"merge={self.name} weighs A and B with merge.alpha, not merge.weights"
            )
        for member, value in (self.weights or {}).items():
            check_weight(value, f"merge.weights.{member}")

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.pop("alpha" if out.get("weights") is not None else "weights", None)  # the one used
        return out

    def check(self, config: Any) -> None:
        named = {"merge.alpha": self.alpha}
        named.update({f"merge.weights.{m}": v for m, v in (self.weights or {}).items()})
        for what, value in named.items():
            schedule = value.get("layers") if isinstance(value, Mapping) else None
            if isinstance(schedule, Sequence) and len(schedule) != config.num_hidden_layers:
                raise ValueError(
                    f"{what}.layers has {len(schedule)} weights for "
                    f"{config.num_hidden_layers} layers: one per transformer layer"
                )

    def check_pool(self, members: Sequence[str], has_base: bool) -> None:
        if self.pairs_only:  # a subclass that refines a pair (REPAIR, ZipIt!)
            super().check_pool(members, has_base)
        if self.weights is None:
            if len(members) != 2:
                raise ValueError(
                    f"merge.alpha weighs two encoders; the pool has {len(members)} "
                    f"({', '.join(members)}): give merge.weights={{name: weight, ...}}"
                )
        else:
            check_named(self.weights, members)

    def weight(self, key: str, layers: int, parts: Parts = HUBERT_PARTS) -> float:
        """A's weight for one parameter."""
        return component_weight(self.alpha, key, layers, parts)

    def combine(self, a: State, b: State, parts: Parts = HUBERT_PARTS) -> dict[str, torch.Tensor]:
        if not isinstance(self.alpha, Mapping):
            return interpolate(a, b, float(self.alpha))
        layers = layer_count(a, parts)
        return interpolate(a, b, {k: self.weight(k, layers, parts) for k in a})

    def combine_pool(
        self,
        states: Mapping[str, State],
        anchor: str,
        base: State | None = None,
        parts: Parts = HUBERT_PARTS,
    ) -> dict[str, torch.Tensor]:
        """Two members: the anchor's share of their weights (alpha, or its weight over both
        weights) interpolates them, ``torch.lerp`` as ``combine``; more: the weighted mean of
        every member, component by component."""
        self.check_pool(list(states), base is not None)
        if self.weights is None:
            other = next(n for n in states if n != anchor)
            return self.combine(states[anchor], states[other], parts)
        anchor_state = states[anchor]
        layers = layer_count(anchor_state, parts)
        weights = {
            m: {k: component_weight(self.weights[m], k, layers, parts) for k in anchor_state}
            for m in states
        }
        if len(states) == 2:
            other = next(n for n in states if n != anchor)
            share = {k: _share(weights[anchor][k], weights[other][k]) for k in anchor_state}
            return interpolate(anchor_state, states[other], share)
        return weighted_mean(states, weights)


def check_weight(value: Any, what: str, upper: float | None = None) -> None:
    """A weight is a number (in [0, ``upper``]; >= 0 without one) or a mapping of the parts
    ``component_weight`` reads, each such a number (``layers``: a list, or {from:, to:})."""
    if isinstance(value, Mapping):
        unknown = set(value) - set(PARTS)
        if unknown:
            raise ValueError(f"{what}: unknown parts {sorted(unknown)} ({', '.join(PARTS)})")
        values = [v for k, v in value.items() if k != "layers"]
        layers = value.get("layers")
        if isinstance(layers, Mapping):
            if set(layers) != {"from", "to"}:
                raise ValueError(f"{what}.layers: a list, or {{from: x, to: y}}")
            values += [layers["from"], layers["to"]]
        elif layers is not None:
            values += list(layers)
    else:
        values = [value]
    for v in values:
        ok = not isinstance(v, bool) and isinstance(v, int | float) and v >= 0
        if not ok or (upper is not None and v > upper):
            span = f"in [0, {upper:g}] (the weight of A)" if upper is not None else ">= 0"
            raise ValueError(f"{what} must be a number {span}, got {v!r}")


def check_named(weights: Mapping[str, Any], members: Sequence[str]) -> None:
    """``merge.weights`` names exactly the pool's members."""
    if set(weights) != set(members):
        raise ValueError(
            f"merge.weights names {sorted(weights)}, the pool's members are "
            f"{sorted(members)}: one weight per member"
        )


def component_weight(
    value: float | Mapping[str, Any], key: str, layers: int, parts: Parts = HUBERT_PARTS
) -> float:
    """A weight's value for one parameter: a number everywhere, or a mapping whose most
    specific entry wins: ``norms`` (every layer norm), then ``cnn`` (the conv stack and feature
    projection) or ``layers`` (one weight per transformer layer, or {from: x, to: y}, linear
    over depth), then ``default`` (0.9 if absent). ``parts``: where the family keeps them."""
    if not isinstance(value, Mapping):
        return float(value)
    if "norms" in value and parts.is_norm(key):
        return float(value["norms"])
    if "cnn" in value and parts.is_cnn(key):
        return float(value["cnn"])
    i = parts.layer_of(key)
    if i is not None and value.get("layers") is not None:
        schedule = value["layers"]
        if isinstance(schedule, Mapping):
            t = i / max(layers - 1, 1)
            return float(schedule["from"] + t * (schedule["to"] - schedule["from"]))
        if len(schedule) != layers:
            raise ValueError(f"a layer schedule has {len(schedule)} weights for {layers} layers")
        return float(schedule[i])
    return float(value.get("default", 0.9))


def layer_count(state: State, parts: Parts = HUBERT_PARTS) -> int:
    return 1 + max((i for k in state if (i := parts.layer_of(k)) is not None), default=0)


def _share(mine: float, other: float) -> float:
    if mine + other <= 0:
        raise ValueError("merge.weights: two members weighted 0 on one parameter")
    return mine / (mine + other)


def weighted_mean(
    states: Mapping[str, State], weights: Mapping[str, Mapping[str, float]]
) -> dict[str, torch.Tensor]:
    """Per parameter, sum_i w_i theta_i / sum_i w_i over the members; non-floating tensors are
    the first member's."""
    first = next(iter(states.values()))
    out = {}
    for key, t in first.items():
        if not t.is_floating_point():
            out[key] = t.clone()
            continue
        total = sum(weights[m][key] for m in states)
        if total <= 0:
            raise ValueError(f"merge.weights: every member weighted 0 on {key}")
        acc = torch.zeros_like(t)
        for m, state in states.items():
            if state[key].shape != t.shape:
                raise ValueError(f"{key}: member {m!r} has shape {tuple(state[key].shape)}")
            acc.add_(state[key], alpha=weights[m][key] / total)
        out[key] = acc
    return out


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
