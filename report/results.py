"""When a job's output dir already holds its answer, so that a restarted sweep skips it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Config fields that change neither what a job computes nor what it leaves in its dir.
VOLATILE = ("progress", "paths", "logger", "resume", "report")


def to_json(value: Any, indent: str = "  ", level: int = 0) -> str:
    """Indented JSON whose lists of plain values stay on one line: per-clip outcomes (ids,
    labels, predictions) would otherwise take a line per clip."""
    pad, inner = indent * level, indent * (level + 1)
    if isinstance(value, Mapping) and value:
        items = [
            f"{inner}{json.dumps(str(k))}: {to_json(v, indent, level + 1)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value):
        items = [f"{inner}{to_json(v, indent, level + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, default=str)


def comparable(config: Mapping[str, Any]) -> Any:
    """The config as results.json stores it (JSON types), without its volatile fields."""
    kept = {k: v for k, v in config.items() if k not in VOLATILE}
    return json.loads(json.dumps(kept, default=str))


def checkpoint_stamp(sources: Iterable[str]) -> dict[str, str]:
    """A content digest of every local checkpoint directory among ``sources`` (hub ids are
    left out): a checkpoint retrained in place leaves the config as it was, and a restarted
    sweep must not keep the results of the old weights."""
    stamp = {}
    for source in sources:
        root = Path(str(source))
        if not source or not root.is_dir():
            continue
        digest = hashlib.blake2b(digest_size=16)
        try:
            for f in sorted(p for p in root.rglob("*") if p.is_file()):
                digest.update(f"{f.relative_to(root)}\0".encode())
                with f.open("rb") as fh:
                    while chunk := fh.read(1 << 23):
                        digest.update(chunk)
        except OSError:  # unreadable: loading it reports the error, inside the job's record
            continue
        stamp[str(source)] = digest.hexdigest()
    return stamp


ROOT = Path(__file__).resolve().parents[1]
CODE = ("run.py", "merging/*.py", "eval/*.py", "eval/data/*")  # what a job's results come from


def code_stamp(root: Path = ROOT) -> str:
    """A digest of the code a job's results come from: after an update that changes how jobs
    are merged or scored, a restarted sweep reruns them (their caches decide what is reused)."""
    digest = hashlib.blake2b(digest_size=8)
    for pattern in CODE:
        for f in sorted(root.glob(pattern)):
            if f.is_file():
                digest.update(f"{f.relative_to(root)}\0".encode() + f.read_bytes())
    return digest.hexdigest()


def finished(
    out: str | Path,
    config: Mapping[str, Any],
    checkpoints: Mapping[str, str] | None = None,
    code: str | None = None,
    data: str | None = None,
) -> bool:
    """Whether ``out/results.json`` is a successful run of this same config (and, given
    ``checkpoint_stamp``'s and ``code_stamp``'s answers, of the same checkpoint files and
    the same code; and given ``data``, the job's inputs' stamp)."""
    try:
        previous = json.loads((Path(out) / "results.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(previous, dict) or previous.get("status") != "ok":
        return False
    if checkpoints is not None and previous.get("checkpoints") != dict(checkpoints):
        return False
    if code is not None and previous.get("code") != code:
        return False
    if data is not None and previous.get("data") != data:
        return False
    return comparable(previous.get("config") or {}) == comparable(config)
