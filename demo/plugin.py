"""The demo world as a plugin: its evaluation suite and its calibration set, named by
``conf/eval/demo.yaml`` and ``conf/calibration/demo.yaml``; nothing below ``demo`` imports it."""

from __future__ import annotations

from pathlib import Path

from demo.suite import TASKS, build_suite, default_root
from eval.data import Example, csv_manifest
from eval.tasks import Task


def suite(
    root: str | None = None, tasks: list[str] | None = None, scale: float = 1.0
) -> list[tuple[Task, list[Example]]]:
    """The synthetic suite's tasks (all, or ``tasks``), generated into the cache on first use."""
    wanted = list(tasks) if tasks else list(TASKS)
    unknown = sorted(set(wanted) - set(TASKS))
    if unknown:
        raise ValueError(f"eval.tasks: {unknown} are not demo tasks ({', '.join(TASKS)})")
    where = Path(root) if root else default_root()
    if scale != 1.0 and not root:  # a reduced suite must not evict the full one
        where = where.with_name(f"{where.name}-scale{scale:g}")
    where = build_suite(where, scale=scale)
    return [(TASKS[n], csv_manifest(where / n / "manifest.csv")) for n in wanted]


def calibration(progress: bool = True) -> str:
    """The demo's calibration folder (half speech, half music; disjoint from every split)."""
    return str(build_suite(default_root(), progress=progress) / "calibration")
