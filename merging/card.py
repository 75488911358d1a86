"""The merged checkpoint's model card (``README.md`` in Hugging Face's format), so that a
checkpoint found on a disk says how it was made: its parents, the recipe, the calibration data
and the code version."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def model_card(card: Mapping[str, Any], model_class: str) -> str:
    """Markdown with YAML front matter from ``card`` (run.py's ``merge.json``: ``a``, ``b``,
    ``scope``, ``match``, ``merge``, ``calibration``, ``code``; missing parts left out)."""
    members = card.get("members") or {}  # a pool of more than two: every member by name
    parents = [str(v) for v in members.values()] or [
        str(card[k]) for k in ("a", "b") if card.get(k)
    ]
    front = ["---", "library_name: transformers", "tags:", "- merge", "- audio"]
    if parents:
        front += ["base_model:", *(f"- {json.dumps(p)}" for p in parents)]
    rows = [
        (
            "parents",
            ", ".join(f"{n}: `{v}`" for n, v in members.items())
            + f" (aligned to {card.get('anchor')})"
            if members
            else " and ".join(f"`{p}`" for p in parents) + " (B aligned to A)",
        ),
        ("permutation scope", _value(card.get("scope"))),
        ("matcher", _value(card.get("match"))),
        ("merge method", _value(card.get("merge"))),
    ]
    cal = card.get("calibration") or {}
    if cal:
        sources = "; ".join(
            f"`{name}`: {s.get('clips', 0)} clips, {s.get('seconds', 0.0):.0f} s"
            for name, s in (cal.get("sources") or {}).items()
        )
        rows.append(
            ("calibration", f"{cal.get('clips', 0)} clips, {cal.get('audio_seconds', 0):.0f} s"
             + (f" ({sources})" if sources else ""))
        )  # fmt: skip
    if card.get("code"):
        rows.append(("code version", f"`{card['code']}` (digest of the merging code)"))
    body = [
        "",
        f"# Merged encoder: {' + '.join(parents) or 'two encoders'}",
        "",
        (
            f"Made by merging {len(members)} encoders of one architecture: every member's units "
            "aligned to the anchor's"
            if members
            else "Made by merging two encoders of one architecture: B's units aligned to A's"
        )
        + " (the permutation scope and the matcher below, on the calibration clips), then the "
        "weights combined by the merge method. `merge.json` holds the same recipe as data.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v.replace('|', '/')} |" for k, v in rows if v and v != "null"),
        "",
        "```python",
        f"from transformers import {model_class}",
        "",
        f'model = {model_class}.from_pretrained("path/to/merged")',
        "```",
        "",
    ]
    return "\n".join([*front, "---", *body])
