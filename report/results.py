"""When a job's output dir already holds its answer, so that a restarted sweep skips it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Config fields that change neither what a job computes nor what it leaves in its dir.
VOLATILE = ("progress", "paths", "logger", "resume")


def comparable(config: Mapping[str, Any]) -> Any:
    """The config as results.json stores it (JSON types), without its volatile fields."""
    kept = {k: v for k, v in config.items() if k not in VOLATILE}
    return json.loads(json.dumps(kept, default=str))


def finished(out: str | Path, config: Mapping[str, Any]) -> bool:
    """Whether ``out/results.json`` is a successful run of this same config."""
    try:
        previous = json.loads((Path(out) / "results.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(previous, dict) or previous.get("status") != "ok":
        return False
    return comparable(previous.get("config") or {}) == comparable(config)
