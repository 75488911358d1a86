"""Weights & Biases: one run per job, logged from its results after results.json is written.

Runs are offline by default and live in the job's own dir (``<job>/wandb/offline-run-*``), so
every job of a sweep, local or on a cluster, keeps its run beside its results; `wandb sync`
uploads them later. Tracking is a convenience: any error from it is a warning, never a failure.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from report.record import Evaluation, JobRecord

log = logging.getLogger("run.tracking")


def wandb_mode(logger: Mapping[str, Any]) -> str:
    """WANDB_MODE if set (`make test` disables W&B with it), else logger.mode, else offline."""
    return os.environ.get("WANDB_MODE") or logger.get("mode") or "offline"


def scalars(record: JobRecord) -> dict[str, float]:
    """Per-task metrics, references, scores, alignment statistics and timings, W&B-keyed."""
    out: dict[str, float] = {}
    evaluation = record.evaluation or Evaluation()
    out.update({f"task/{name}": v for name, v in evaluation.values().items()})
    for who, values in evaluation.references.items():
        for name, v in values.items():
            out[f"reference_{who}/{name}"] = v
    for name, v in evaluation.scores.items():
        if isinstance(v, int | float):
            out[f"score/{name}"] = v
    for name, v in (evaluation.validation.get("scores") or {}).items():
        if isinstance(v, int | float):
            out[f"valid_score/{name}"] = v
    for name, (lo, hi) in evaluation.intervals.items():
        out[f"interval/{name}_lo"], out[f"interval/{name}_hi"] = lo, hi
    for name, v in evaluation.floors.items():
        out[f"floor/{name}"] = v
    for row in record.alignment:  # a pool's rows name their member
        where = f"{row['member']}/{row['group']}" if "member" in row else row["group"]
        for key in ("moved", "corr_before", "corr_after"):
            if row.get(key) is not None:
                out[f"alignment/{where}/{key}"] = row[key]
    for name, v in record.seconds.items():
        out[f"seconds/{name}"] = v
    if record.total_seconds is not None:
        out["seconds/total"] = record.total_seconds
    return out


def task_rows(record: JobRecord) -> tuple[list[str], list[list[Any]]]:
    """One row per task: the merged encoder's metric beside the parents' and the floor's."""
    evaluation = record.evaluation or Evaluation()
    refs, spans, floors = evaluation.references, evaluation.intervals, evaluation.floors
    who = [w for w in (*evaluation.members, "base", "fbank", "fusion") if w in refs]
    label = {w: w for w in who} | {"a": "model A", "b": "model B"}
    label["fusion"] = "A + B fusion" if evaluation.members == ["a", "b"] else "fusion"
    columns = ["task", "metric", "merged", "lo", "hi", *(label[w] for w in who), "floor"]
    rows = [
        [
            name,
            m.get("metric"),
            m.get("value"),
            *(spans.get(name) or (None, None)),
            *(refs[w].get(name) for w in who),
            floors.get(name),
        ]
        for name, m in evaluation.tasks.items()
    ]
    return columns, rows


def _media(wandb: Any, record: JobRecord) -> dict[str, Any]:
    media: dict[str, Any] = {}
    columns, rows = task_rows(record)
    if rows:
        media["tasks"] = wandb.Table(columns=columns, data=rows)
    if record.alignment:
        keys = list(record.alignment[0])
        media["alignment"] = wandb.Table(
            columns=keys, data=[[r[k] for k in keys] for r in record.alignment]
        )
    for plot in record.plots:
        if Path(plot).is_file():
            media[f"heatmap/{Path(plot).stem}"] = wandb.Image(str(plot))
    return media


def log_job(
    record: JobRecord,
    out: str | Path,
    logger: Mapping[str, Any],
    group: str,
    name: str,
    tags: list[str],
) -> str | None:
    """Log one job as its own W&B run in ``out``; the run's dir, or None if nothing was logged."""
    mode = wandb_mode(logger)
    if mode == "disabled":
        return None
    run = None
    ok = record.status == "ok"
    try:
        import wandb

        run = wandb.init(
            project=logger.get("project") or "speechmusic-merge",
            entity=logger.get("entity") or None,
            dir=str(out),
            group=group,
            name=name,
            tags=tags,
            job_type="merge",
            config=dict(record.config),
            mode=mode,
            reinit="finish_previous",
            settings=wandb.Settings(console="off", quiet=True, x_disable_stats=True),
        )
        run.log({**scalars(record), **_media(wandb, record)})
        run.summary.update(
            {
                "status": record.status,
                "error": record.error,
                "experiment_id": record.experiment_id,
                "parent": record.parent,
                "calibration": record.calibration,  # clips and seconds per source folder
            }
        )
        return str(Path(run.dir).parent)
    except Exception as err:  # noqa: BLE001 - tracking never fails a job
        log.warning(
            "W&B logging failed (results.json is complete): %s: %s", type(err).__name__, err
        )
        return None
    finally:
        if run is not None:
            try:
                run.finish(exit_code=0 if ok else 1)
            except Exception as err:  # noqa: BLE001
                log.warning("W&B run did not finish cleanly: %s: %s", type(err).__name__, err)
