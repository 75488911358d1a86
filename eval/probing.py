"""One task's probe result for one upstream, from the probe cache when possible.

The cache key holds everything that decides the result: the features' key, every clip's
label and split, the task kind, the probe settings and a digest of the code that trains and
records probes (this module, ``eval.probe``, ``eval.ctc``).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from eval.ctc import fit_ctc, frame_features, train_subset
from eval.data import Example, hash_split
from eval.features import LayerFusion, Upstream, dataset_key, pooled_features
from eval.frameprobe import FrameParts, FrameProbeSettings, fit_frame_probes
from eval.interface import INTERFACES
from eval.probe import clip_key, fit_kfold, fit_probes, majority_share
from eval.tasks import Task
from merging.files import read_cache, write_atomically
from merging.identity import source_digest

PROBES_VERSION = 3  # bump when probing changes what a cached result would be
PROBE_FIELDS = ("metric", "clips", "skipped", "test", "value")  # in every stored result


def clip_ids(rows: list[Example]) -> dict[str, str]:
    """Each clip's id in results: its path below the folder all of the task's clips share."""
    paths = [e.path for e in rows]
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    if root in paths:  # one file, or every row the same file
        root = os.path.dirname(root)
    return {p: os.path.relpath(p, root) for p in paths}


def seeds_of(probe: Mapping[str, Any]) -> list[int]:
    seeds = list(probe.get("seeds") or [0])
    if not all(isinstance(s, int) for s in seeds):
        raise ValueError(f"eval.probe.seeds must be a list of integers, got {seeds}")
    return seeds


def probe_task(
    upstream: Upstream,
    task: Task,
    rows: list[Example],
    cfg: DictConfig,
    cache_dir: str | Path | None,
    trainer: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict:
    """One task's metric (in %) for one upstream, from the probe cache when possible.

    With several ``probe.seeds`` every seed trains its own probe and the metric is their mean.
    ``test`` holds the per-clip outcomes (clip ids, fold, label, each seed's prediction; for
    CTC each seed's word edits) that intervals and significance tests are computed from.
    ``trainer`` (Lightning's accelerator, devices, strategy, precision) spreads the feature
    pass and the probes' training over devices; it is not part of the cache key: the same
    probe trained on other hardware is the same result.
    """
    probe = OmegaConf.to_container(cfg.ctc if task.kind == "ctc" else cfg.probe, resolve=True)
    seeds = seeds_of(probe)
    kind, tested = task.kind, bool(cfg.get("test", True))
    if kind == "ctc":
        rows = train_subset(rows, probe.get("max_train_hours"))
    if not tested:
        rows, kind = validation_rows(rows, kind)
    learned = interface_of(cfg) if kind != "ctc" else None  # None: the pooled probe
    path = None
    if cache_dir is not None:
        key = hashlib.blake2b(
            json.dumps(
                [
                    PROBES_VERSION,
                    source_digest("eval.probing"),
                    dataset_key(upstream, rows, task.max_seconds),
                    [(e.path, e.label, e.split) for e in rows],  # relabelled or re-split: rerun
                    kind,
                    probe,
                    *([learned, source_digest("eval.frameprobe")] if learned else []),
                ]
            ).encode(),
            digest_size=16,
        ).hexdigest()
        path = Path(cache_dir) / "probes" / f"{key}.json"
        cached = read_cache(path, lambda p: json.loads(p.read_text()), PROBE_FIELDS)
        if cached is not None:  # the features were not needed: no word about them
            for stale in ("features_cached", "feature_seconds"):
                cached.pop(stale, None)
            return {**cached, "probe_cached": True}
    kwargs = {
        "lrs": probe["lrs"],
        "hidden": probe["hidden"],
        "epochs": probe["epochs"],
        "batch_size": probe["batch_size"],
        "trainer": trainer,
        "test": tested,
    }
    extract = frame_features if kind == "ctc" or learned else pooled_features
    parts = upstream.parts if learned and isinstance(upstream, LayerFusion) else (upstream,)
    every = [
        extract(
            part,
            rows,
            cache_dir,
            task.max_seconds,
            cfg.batch_size,
            progress,
            cfg.get("workers"),
            trainer,
        )
        for part in parts
    ]
    feats = FrameParts.join(every) if learned else every[0]
    if kind != "ctc":
        check_classes(task, rows, feats.examples, feats.skipped)
    ids = clip_ids(rows)
    out: dict[str, Any] = {
        "metric": task.metric,
        "clips": len(feats.examples),
        "skipped": len(feats.skipped),
        "skipped_files": feats.skipped[:10],  # the first few, by name
        "feature_seconds": feats.seconds,
        "features_cached": feats.cached,
    }
    trained_from = time.perf_counter()
    if kind == "ctc":
        fits = [fit_ctc(feats, **kwargs, seed=s) for s in seeds]
        values = [100 * c.test_wer for c in fits]
        out.update(
            valid=statistics.fmean([100 * c.valid_wer for c in fits]),
            lr=fits[0].lr,
            layer_weights=mean_lists([c.layer_weights for c in fits]),
            transcripts=fits[0].examples,
        )
        out["test"] = {
            "ids": [ids[p] for p in fits[0].test_paths],
            "groups": ["test"] * len(fits[0].test_paths),
            "words": fits[0].test_words,
            "errors": [c.test_errors for c in fits],
        }
    elif kind == "kfold":
        fits = (
            fit_kfold(
                feats,
                seeds,
                fit_frame_probes,
                settings=frame_settings(learned, kwargs),
                trainer=trainer,
            )
            if learned
            else fit_kfold(feats, seeds=seeds, **{k: v for k, v in kwargs.items() if k != "test"})
        )
        values = [100 * k["mean"] for k in fits]
        folds = sorted(fits[0]["folds"])
        per_fold = {f: statistics.fmean([100 * k["folds"][f] for k in fits]) for f in folds}
        out.update(
            std=statistics.pstdev(per_fold.values()),
            folds=per_fold,
            valid=statistics.fmean([100 * k["valid"] for k in fits]),
            valid_floor=100 * fits[0]["valid_floor"],
        )
        tested = [e for e in feats.examples if e.path in fits[0]["predictions"]]
        out["test"] = {
            "ids": [ids[e.path] for e in tested],
            "groups": [e.split for e in tested],
            "labels": [e.label for e in tested],
            "predictions": [[k["predictions"][e.path] for e in tested] for k in fits],
        }
    else:
        fits = (
            fit_frame_probes(feats, frame_settings(learned, kwargs), seeds, trainer, tested)
            if learned
            else fit_probes(feats, seeds=seeds, **kwargs)
        )
        values = [100 * r.test_accuracy for r in fits]
        out.update(
            valid=statistics.fmean([100 * r.valid_accuracy for r in fits]),
            valid_floor=100 * majority_share(feats.examples),
            lr=fits[0].lr,
            layer_weights=mean_lists([r.layer_weights for r in fits]),
        )
        label = {e.path: e.label for e in feats.examples}
        out["test"] = {
            "ids": [ids[p] for p in fits[0].test_paths],
            "groups": ["test"] * len(fits[0].test_paths),
            "labels": [label[p] for p in fits[0].test_paths],
            "predictions": [r.test_predictions for r in fits],
        }
    out["train_seconds"] = time.perf_counter() - trained_from  # every seed and learning rate
    if not tested:  # validation only: no test clip was read
        out.update(value=None, test={})
    else:
        out["value"] = statistics.fmean(values)
        if len(seeds) > 1:
            out.update(seeds=seeds, seed_values=values, seed_std=statistics.pstdev(values))
    if path is not None:
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(out)))
    return {**out, "probe_cached": False}


def validation_rows(rows: list[Example], kind: str) -> tuple[list[Example], str]:
    """The clips a validation-only evaluation (``eval.test=false``) reads, and how they are
    probed: every split but test; of a k-fold task, every fold but the last (kept for the end),
    split into train and validation by a hash of each clip, and probed once."""
    if kind == "kfold":
        last = sorted({e.split for e in rows})[-1]
        kept = [e for e in rows if e.split != last]
        return [Example(e.path, e.label, hash_split(clip_key(e), 0.1, 0.0)) for e in kept], (
            "utterance"
        )
    return [e for e in rows if e.split != "test"], kind


def interface_of(cfg: DictConfig) -> dict | None:
    """``eval.interface`` when it names a learned interface over frames (hconv, chconv); None
    for the weighted sum, which the pooled probe computes (s3prl's, the numbers as ever)."""
    chosen = cfg.get("interface")
    if chosen is None:
        return None
    settings = OmegaConf.to_container(chosen, resolve=True)
    if settings.get("name") not in INTERFACES:
        raise ValueError(f"eval.interface.name={settings.get('name')!r}: one of {INTERFACES}")
    return None if settings["name"] == "weighted_sum" else settings


def frame_settings(learned: Mapping[str, Any], probe: Mapping[str, Any]) -> FrameProbeSettings:
    return FrameProbeSettings(
        interface=learned["name"],
        lrs=tuple(probe["lrs"]),
        hidden=probe["hidden"],
        epochs=probe["epochs"],
        batch_size=probe["batch_size"],
        weight_decay=float(learned.get("weight_decay") or 0.0),
        patience=learned.get("patience"),
        layer_dropout=float(learned.get("layer_dropout") or 0.0),
    )


def check_classes(
    task: Task, rows: list[Example], usable: list[Example], skipped: list[str]
) -> None:
    """A class whose every file was skipped would vanish from the task unnoticed (and its
    clips with it): an error naming the class and some of its files."""
    kept = {e.label for e in usable}
    lost = sorted({e.label for e in rows} - kept)
    if lost:
        files = [e.path for e in rows if e.label == lost[0]][:3]
        raise ValueError(
            f"task {task.name!r}: no usable file in class {lost[0]!r}"
            + (f" (nor in {lost[1:]})" if len(lost) > 1 else "")
            + f"; every one is unreadable, empty, silent or too short (e.g. {files}; "
            f"{len(skipped)} skipped in all)"
        )


def mean_lists(lists: list[list[float]]) -> list[float]:
    return [statistics.fmean(column) for column in zip(*lists, strict=True)]
