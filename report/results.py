"""When a job's output dir already holds its answer, so that a restarted sweep skips it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from merging.identity import digest_files, source_closure, target_modules

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


def _digest_path(path: Path) -> str | None:
    """A content digest of a file or of every file below a dir; None if it is missing."""
    if not path.exists():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.blake2b(digest_size=16)
    for f in files:
        digest.update(f"{f.relative_to(path) if path.is_dir() else f.name}\0".encode())
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 23):
                digest.update(chunk)
    return digest.hexdigest()


def checkpoint_stamp(sources: Iterable[str]) -> dict[str, str]:
    """A content digest of every local checkpoint directory among ``sources`` (hub ids are
    left out): a checkpoint retrained in place leaves the config as it was, and a restarted
    sweep must not keep the results of the old weights."""
    stamp = {}
    for source in sources:
        root = Path(str(source))
        if not source or not root.is_dir():
            continue
        try:
            stamp[str(source)] = _digest_path(root)
        except OSError:  # unreadable: loading it reports the error, inside the job's record
            continue
    return stamp


ROOT = Path(__file__).resolve().parents[1]
# What a job's results come from: every file below these folders (code, data tables, recipe
# configs), at any depth, and these files; plus the plugins a config names (``code_stamp``).
CODE_TREES = ("merging", "eval")
CODE_FILES = ("run.py", "report/record.py", "report/results.py")


def targets(config: Any) -> list[str]:
    """Every ``_target_`` in a (resolved) config, wherever it is nested."""
    if isinstance(config, Mapping):
        own = [str(config["_target_"])] if "_target_" in config else []
        return own + [t for v in config.values() for t in targets(v)]
    if isinstance(config, list | tuple):
        return [t for v in config for t in targets(v)]
    return []


def code_files(root: Path = ROOT, plugins: Iterable[str] = ()) -> list[tuple[str, Path]]:
    """(name, file) of the code a job's results come from: ``CODE_TREES`` and ``CODE_FILES``
    under ``root``, and the source closure of each plugin (``_target_``) module outside them."""
    files = {}
    for tree in CODE_TREES:
        for f in sorted((root / tree).rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                files[str(f.relative_to(root))] = f
    for name in CODE_FILES:
        if (root / name).is_file():
            files[name] = root / name
    for module, f in source_closure(*target_modules(plugins)):
        files.setdefault(str(f.relative_to(root)) if f.is_relative_to(root) else module, f)
    return sorted(files.items())


def code_stamp(root: Path = ROOT, plugins: Iterable[str] = ()) -> str:
    """A digest of the code a job's results come from (``code_files``): after an update that
    changes how jobs are merged or scored, a restarted sweep reruns them (their caches decide
    what is reused)."""
    return digest_files(code_files(root, plugins))


def outputs_digest(out: Path, names: Iterable[str]) -> dict[str, str]:
    """{name: digest} of the named files and dirs of ``out`` that exist: the final record
    stores it and resume checks it, so a deleted or replaced checkpoint reruns its job."""
    found = {name: _digest_path(out / name) for name in names}
    return {name: d for name, d in found.items() if d is not None}


def outputs_intact(out: Path, recorded: dict[str, str]) -> bool:
    """Whether every output a record lists is still there with the same content."""
    return all(_digest_path(out / name) == d for name, d in recorded.items())


def finished(
    out: str | Path,
    config: Mapping[str, Any],
    checkpoints: Mapping[str, str] | None = None,
    code: str | None = None,
    data: str | None = None,
) -> bool:
    """Whether ``out/results.json`` is a successful run of this same config (and, given
    ``checkpoint_stamp``'s and ``code_stamp``'s answers, of the same checkpoint files and
    the same code; and given ``data``, the job's inputs' stamp), whose outputs (``merged/``,
    the permutations) are still there as it left them."""
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
    if comparable(previous.get("config") or {}) != comparable(config):
        return False
    return outputs_intact(Path(out), previous.get("outputs") or {})
