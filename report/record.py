"""The job record: what ``run.py`` writes to ``results.json`` and ``report/`` reads back.

One typed shape for both sides, so a reader never guesses at a key: missing parts of an older
or partial record come back as empty defaults, unknown keys are kept in ``extra``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merging.files import write_atomically
from report.results import to_json

STATUSES = ("running", "ok", "failed", "interrupted")


def _split(cls: type, data: dict) -> tuple[dict, dict]:
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k in names}, {
        k: v for k, v in data.items() if k not in names
    }


def _plain(obj: Any) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name == "extra":
            out.update(value)
        elif dataclasses.is_dataclass(value):
            out[f.name] = _plain(value)
        else:
            out[f.name] = value
    return out


@dataclass
class Evaluation:
    """Per-task probe results of the merged encoder, the references, floors, scores and
    their intervals; ``predictions`` holds every upstream's per-clip outcomes."""

    tasks: dict[str, dict] = field(default_factory=dict)
    suite: list[dict] = field(default_factory=list)
    predictions: dict[str, dict] = field(default_factory=dict)
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)
    floor: str | None = None  # majority | paper
    scores: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)
    probe_cached: dict[str, dict[str, bool]] = field(default_factory=dict)
    probe_seconds: dict[str, dict[str, float | None]] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)  # the validation split's scores
    members: list[str] = field(default_factory=lambda: ["a", "b"])  # the pool, by name
    normalisers: dict[str, str] = field(default_factory=lambda: {"speech": "a", "music": "b"})
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the s3prl backend's runs

    @classmethod
    def from_dict(cls, data: dict | None) -> Evaluation:
        known, extra = _split(cls, data or {})
        return cls(**{k: v for k, v in known.items() if v is not None}, extra=extra)

    @property
    def parents(self) -> tuple[str, str]:
        """The members whose scores normalise speech and music (model A and B of a pair)."""
        return self.normalisers["speech"], self.normalisers["music"]

    def values(self) -> dict[str, float]:
        """Each task's metric (tasks without one left out)."""
        return {
            n: m["value"]
            for n, m in self.tasks.items()
            if isinstance(m, dict) and m.get("value") is not None
        }


@dataclass
class JobRecord:
    config: dict = field(default_factory=dict)
    status: str = "running"
    checkpoints: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    data: str | None = None
    experiment_id: str | None = None
    parent: str | None = None
    scope: dict | None = None
    alpha: float | None = None
    match: str | None = None
    merge: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    alignment: list[dict] = field(default_factory=list)
    permutations: str | None = None
    plan: dict = field(default_factory=dict)  # the alignment plan's key, and whether reused
    plots: list[str] = field(default_factory=list)
    merged_dir: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # what the job left: content digests
    evaluation: Evaluation | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float | None = None
    peak_rss_mb: float | None = None  # the job process's peak resident memory
    error: str | None = None
    traceback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> JobRecord:
        known, extra = _split(cls, data)
        defaults = {f.name: f for f in dataclasses.fields(cls)}
        known = {
            k: v
            for k, v in known.items()  # a null where a container belongs: the default
            if v is not None or defaults[k].default is None
        }
        if "evaluation" in known:
            known["evaluation"] = Evaluation.from_dict(known["evaluation"])
        return cls(**known, extra=extra)

    @classmethod
    def read(cls, path: str | Path) -> JobRecord:
        """The record at ``path``; ``OSError`` / ``ValueError`` if it is missing or unreadable."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path} does not hold a job record")
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return _plain(self)

    def write(self, path: str | Path) -> Path:
        text = to_json(self.to_dict())
        return write_atomically(path, lambda tmp: tmp.write_text(text))

    @property
    def key(self) -> str | None:
        """The row it fills: its experiment ID."""
        return self.experiment_id or self.config.get("experiment_id")
