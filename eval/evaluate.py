"""eval's entry point for the runner: probe an encoder on a suite and score it like the paper.

Probe results are cached per (upstream weights, task data, probe settings), so the parents and
the FBANK floor that every score is normalised by are computed once and reused by a sweep.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from eval.ctc import fit_ctc, frame_features, train_subset
from eval.data import Example, csv_manifest, labelled_folder
from eval.datasets import speech_commands
from eval.features import EncoderUpstream, FbankUpstream, Upstream, dataset_key, pooled_features
from eval.probe import fit_kfold, fit_probe
from eval.s3prl import run_commands, s3prl_commands, task_metrics, write_script
from eval.scores import PAPER_FBANK, domain_score
from eval.tasks import PAPER_TASKS, Task
from merging.files import write_atomically
from merging.load import Encoder

DOMAINS = ("speech", "music")
PROBES_VERSION = 2  # bump when probing changes what a cached result would be


def build_suite(cfg: DictConfig) -> list[tuple[Task, list[Example]]]:
    """The configured tasks with their examples (``eval=folder`` or ``eval=paper``)."""
    if cfg.name == "folder":
        if cfg.domain not in DOMAINS:
            raise ValueError(f"eval.domain must be one of {DOMAINS}, got {cfg.domain!r}")
        task = Task(
            Path(cfg.root).name,
            Path(cfg.root).name,
            cfg.domain,
            "utterance",
            "accuracy",
            labelled_folder,
            cfg.max_seconds,
        )
        return [(task, labelled_folder(cfg.root))]
    if cfg.name == "paper":
        suite = []
        for name, root in cfg.roots.items():
            if not root:
                continue
            if name not in PAPER_TASKS:
                raise ValueError(f"eval.roots.{name}: not a paper task ({', '.join(PAPER_TASKS)})")
            task = PAPER_TASKS[name]
            if name == "ks":
                rows = speech_commands(root, cfg.get("speech_commands_test") or None)
            else:
                rows = task.adapter(root)
            suite.append((task, rows))
        if not suite:
            raise ValueError("eval=paper needs at least one of eval.roots.<task>=DIR")
        return suite
    if cfg.name == "demo":
        return demo_suite(cfg)
    raise ValueError(f"eval={cfg.name!r} is not known (choose: none, demo, folder, paper)")


def demo_suite(cfg: DictConfig) -> list[tuple[Task, list[Example]]]:
    """The built-in synthetic suite, generated into the cache on first use."""
    from demo.suite import TASKS, build_suite, default_root  # only the demo needs its deps

    wanted = list(cfg.tasks) if cfg.get("tasks") else list(TASKS)
    unknown = sorted(set(wanted) - set(TASKS))
    if unknown:
        raise ValueError(f"eval.tasks: {unknown} are not demo tasks ({', '.join(TASKS)})")
    root = Path(cfg.root) if cfg.get("root") else default_root()
    if cfg.scale != 1.0 and not cfg.get("root"):  # a reduced suite must not evict the full one
        root = root.with_name(f"{root.name}-scale{cfg.scale:g}")
    root = build_suite(root, scale=cfg.scale)
    suite = []
    for name in wanted:
        spec = TASKS[name]
        paper = PAPER_TASKS[name].paper if name in PAPER_TASKS else name
        task = Task(name, paper, spec.domain, spec.kind, "accuracy", csv_manifest, spec.max_seconds)
        suite.append((task, csv_manifest(root / name / "manifest.csv")))
    return suite


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

    ``trainer`` (Lightning's accelerator, devices, strategy, precision) is not part of the
    cache key: the same probe trained on other hardware is the same result.
    """
    probe = OmegaConf.to_container(cfg.ctc if task.kind == "ctc" else cfg.probe, resolve=True)
    if task.kind == "ctc":
        rows = train_subset(rows, probe.get("max_train_hours"))
    path = None
    if cache_dir is not None:
        key = hashlib.blake2b(
            json.dumps(
                [PROBES_VERSION, dataset_key(upstream, rows, task.max_seconds), task.kind, probe]
            ).encode(),
            digest_size=16,
        ).hexdigest()
        path = Path(cache_dir) / "probes" / f"{key}.json"
        if path.is_file():
            return {**json.loads(path.read_text()), "probe_cached": True}
    kwargs = {
        "lrs": probe["lrs"],
        "hidden": probe["hidden"],
        "epochs": probe["epochs"],
        "batch_size": probe["batch_size"],
        "trainer": trainer,
    }
    extract = frame_features if task.kind == "ctc" else pooled_features
    feats = extract(upstream, rows, cache_dir, task.max_seconds, cfg.batch_size, progress)
    out = {
        "metric": task.metric,
        "clips": len(feats.examples),
        "skipped": len(feats.skipped),
        "feature_seconds": feats.seconds,
        "features_cached": feats.cached,
    }
    if task.kind == "ctc":
        c = fit_ctc(feats, **kwargs)
        out.update(
            value=100 * c.test_wer,
            valid=100 * c.valid_wer,
            lr=c.lr,
            layer_weights=c.layer_weights,
            transcripts=c.examples,
        )
    elif task.kind == "kfold":
        k = fit_kfold(feats, **kwargs)
        out.update(
            value=100 * k["mean"],
            std=100 * k["std"],
            folds={f: 100 * v for f, v in k["folds"].items()},
        )
    else:
        r = fit_probe(feats, **kwargs)
        out.update(
            value=100 * r.test_accuracy,
            valid=100 * r.valid_accuracy,
            lr=r.lr,
            layer_weights=r.layer_weights,
        )
    if path is not None:
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(out)))
    return {**out, "probe_cached": False}


def scores(
    metrics: dict[str, float],
    suite: list[tuple[Task, list[Example]]],
    ref_a: dict[str, float],
    ref_b: dict[str, float],
    floor: dict[str, float],
) -> dict:
    """Speech (vs A, above the FBANK floor), Music (vs B), and Avg where both exist.

    A floor that model A does not beat would turn (s - f) / (A - f) upside down; such a task is
    scored against A alone (floor 0) and named in ``speech_note``.
    """
    out: dict = {}
    usable, dropped = {}, []
    for t, _ in suite:
        if t.domain == "speech" and t.name in floor and t.name in ref_a:
            f, r = floor[t.name], ref_a[t.name]
            if r > f if t.higher_is_better else r < f:
                usable[t.name] = f
            else:
                dropped.append(t.name)
    if dropped:
        out["speech_note"] = f"model A does not beat the FBANK floor on {dropped}: no floor there"
    for domain, ref, low in (("speech", ref_a, usable), ("music", ref_b, None)):
        names = [t.name for t, _ in suite if t.domain == domain]
        if names:
            try:
                out[domain] = domain_score(metrics, {t: ref[t] for t in names}, low)
            except ValueError as err:  # e.g. a parent no better than the floor on a task
                out[domain] = None
                out[f"{domain}_error"] = str(err)
    if out.get("speech") is not None and out.get("music") is not None:
        out["avg"] = (out["speech"] + out["music"]) / 2
    return out


def evaluate(
    encoder: Encoder,
    cfg: DictConfig,
    cache_dir: str | Path | None,
    parents: tuple[Encoder, Encoder] | None = None,
    trainer: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict:
    """Per-task metrics of a frozen encoder; with ``parents`` also the references and scores."""
    suite = build_suite(cfg)

    def run(upstream: Upstream) -> dict[str, dict]:
        return {
            t.name: probe_task(upstream, t, rows, cfg, cache_dir, trainer, progress)
            for t, rows in suite
        }

    tasks = run(EncoderUpstream(encoder, "merged"))
    result: dict = {"tasks": tasks}
    if parents is None:
        return result
    a, b = parents
    refs = {
        "a": run(EncoderUpstream(a, "model A")),
        "b": run(EncoderUpstream(b, "model B")),
    }
    paper_floor = cfg.name == "paper"
    if not paper_floor and any(t.domain == "speech" for t, _ in suite):
        refs["fbank"] = run(FbankUpstream(encoder.sample_rate))
    floor = (
        dict(PAPER_FBANK)
        if paper_floor
        else {name: m["value"] for name, m in refs.get("fbank", {}).items()}
    )
    value = {name: m["value"] for name, m in tasks.items()}
    ref_a = {name: m["value"] for name, m in refs["a"].items()}
    ref_b = {name: m["value"] for name, m in refs["b"].items()}
    result["references"] = {k: {n: m["value"] for n, m in v.items()} for k, v in refs.items()}
    result["scores"] = scores(value, suite, ref_a, ref_b, floor)
    return result


def evaluate_s3prl(merged_dir: str | Path, cfg: DictConfig, out: str | Path, prefix: str) -> dict:
    """Write s3prl's recipes for the configured tasks; run them if a checkout is configured."""
    commands, skipped = s3prl_commands(
        merged_dir,
        OmegaConf.to_container(cfg.roots),
        prefix,
        cfg.get("speech_commands_test"),
        OmegaConf.to_container(cfg.s3prl.downstreams),
    )
    script = write_script(commands, Path(out) / "s3prl.sh", cfg.s3prl.root)
    result = {"backend": "s3prl", "script": str(script), "skipped": skipped}
    if cfg.s3prl.root:
        result["runs"] = run_commands(commands, cfg.s3prl.root, Path(out) / "s3prl_logs")
        result["tasks"] = task_metrics(result["runs"])
    return result
