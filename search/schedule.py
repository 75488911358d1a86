"""What a trial chooses: model A's weight for the conv stack, the layer norms and the
transformer layers (``knots`` weights at evenly spaced depths, linear in between), as the
per-part ``merge.alpha`` mapping run.py takes (``merging.combine.component_weight``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

PRECISION = 4  # decimals of a weight on run.py's command line


def knot_names(knots: int) -> list[str]:
    return [f"layer_knot_{k}" for k in range(knots)]


def suggest(
    suggest_float: Callable[[str, float, float], float], schedule: Mapping[str, Any]
) -> dict[str, float]:
    """One trial's parameters, by name (``suggest_float``: Optuna's trial method)."""
    params = {}
    for part in ("cnn", "norms"):
        if schedule.get(part) is not None:
            low, high = schedule[part]
            params[part] = suggest_float(part, float(low), float(high))
    low, high = schedule["layers"]
    for name in knot_names(int(schedule["knots"])):
        params[name] = suggest_float(name, float(low), float(high))
    return params


def layer_weights(knots: Sequence[float], layers: int) -> list[float]:
    """``knots`` weights at depths 0, 1/(K-1), ..., 1, linearly interpolated at each of
    ``layers`` layers (layer i at depth i/(layers-1))."""
    if len(knots) == 1:
        return [float(knots[0])] * layers
    out = []
    for i in range(layers):
        t = i / max(layers - 1, 1) * (len(knots) - 1)
        k = min(int(t), len(knots) - 2)
        out.append(float(knots[k] + (t - k) * (knots[k + 1] - knots[k])))
    return out


def alpha(params: Mapping[str, float], layers: int) -> dict[str, Any]:
    """The ``merge.alpha`` mapping of a trial's parameters, for encoders of ``layers`` layers."""
    knots = [params[n] for n in sorted(p for p in params if p.startswith("layer_knot_"))]
    out: dict[str, Any] = {
        "layers": [round(w, PRECISION) for w in layer_weights(knots, layers)],
    }
    for part in ("cnn", "norms"):
        if part in params:
            out[part] = round(params[part], PRECISION)
    return out


def override(value: Mapping[str, Any]) -> str:
    """``merge.alpha={...}`` in Hydra's override grammar."""

    def text(v: Any) -> str:
        if isinstance(v, list | tuple):
            return "[" + ",".join(text(x) for x in v) + "]"
        return repr(float(v))

    return "merge.alpha={" + ",".join(f"{k}:{text(v)}" for k, v in value.items()) + "}"
