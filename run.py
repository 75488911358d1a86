"""Merge two encoders as the config says and record everything in the job's output directory.

python run.py pair=local pair.a=DIR pair.b=DIR permute=fnn_attn merge.alpha=0.9
python run.py -m permute=cnn,fnn_attn,all
python run.py -m experiment=id1,id5 hydra.sweep.dir=multirun/mine   # started again: resumes
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from merging.analysis import plot_alignment
from merging.audio import calibration_clips, list_audio
from merging.calibrate import PointStats, cached_calibrate
from merging.combine import Merger
from merging.families import register
from merging.files import write_atomically
from merging.forward import min_samples
from merging.load import Encoder, check_mergeable, load_encoder
from merging.match import Matcher, Scope
from merging.merge import MergeResult, export, merge
from merging.plugins import build
from merging.runtime import keep_freed_memory
from report.record import Evaluation, JobRecord
from report.results import checkpoint_stamp, code_stamp, finished
from report.tracking import log_job

log = logging.getLogger("run")
ROOT = Path(__file__).resolve().parent
PARENT_ALPHA = {"a": 1.0, "b": 0.0}  # torch.lerp returns the end points exactly


def _repo_path(path: str) -> str:
    return os.path.normpath(ROOT / path)


def register_resolvers() -> None:
    """``${repo:PATH}``: PATH under the repository root, wherever the job is started from."""
    OmegaConf.register_new_resolver("repo", _repo_path, replace=True)


register_resolvers()


def check_parent(cfg: DictConfig) -> None:
    """IDs 1 and 2 score a parent alone: only alpha 1 (0) with no alignment gives A (B) exactly."""
    if cfg.get("parent") is None:
        return
    if cfg.parent not in PARENT_ALPHA:
        raise ValueError(f"parent must be a, b or null, got {cfg.parent!r}")
    p = cfg.permute
    aligned = bool(p.cnn or p.ffn or p.res or p.attn != "none")
    if cfg.merge.get("alpha") != PARENT_ALPHA[cfg.parent] or aligned:
        raise ValueError(
            f"parent={cfg.parent} scores model {cfg.parent.upper()} alone, which needs "
            f"merge.alpha={PARENT_ALPHA[cfg.parent]} and permute=none "
            f"(got merge.alpha={cfg.merge.get('alpha')}, permute={p.name}"
            f"{'' if p.cnn or p.name == 'none' else ' without CNN'})"
        )


def check_config(cfg: DictConfig) -> tuple[Matcher, Merger]:
    """The values a typo would otherwise only reveal after calibration; the matcher and the
    merge method the config names (``match``, ``merge``: ``_target_``)."""
    size = cfg.calibration.size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"calibration.size must be a non-negative integer, got {size!r}")
    matcher, merger = build(cfg.match, "match"), build(cfg.merge, "merge")
    if not callable(matcher):
        raise TypeError(f"match: {type(matcher).__name__} is not a matcher (not callable)")
    if not isinstance(merger, Merger):
        raise TypeError(f"merge: {type(merger).__name__} is not a merging.combine.Merger")
    if size == 0 and merger.needs_clips:
        raise ValueError(f"merge={merger.name} needs calibration clips: calibration.size >= 1")
    if size == 0 and getattr(matcher, "needs_calibration", True):
        raise ValueError(
            f"match={getattr(matcher, 'name', matcher)} matches on calibration statistics: "
            "calibration.size must be at least 1 (match=weight needs none)"
        )
    return matcher, merger


@dataclass
class Inputs:
    """What a job reads and runs, found and checked before any forward pass."""

    calibration_dirs: list[str]
    suite: list | None  # the evaluation suite's (task, examples), None without probes
    matcher: Matcher
    merger: Merger

    def stamp(self) -> str:
        """(path, size, mtime) of every calibration file and every evaluated clip, with its
        label and split: changed data reruns a job that a restart would otherwise skip."""
        digest = hashlib.blake2b(digest_size=16)

        def add(path: str | Path, *extra: str) -> None:
            try:
                st = os.stat(path)
                digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
            except OSError:
                digest.update(f"{path}\0missing".encode())
            digest.update("\0".join(extra).encode() + b"\n")

        for d in self.calibration_dirs:
            for f in list_audio(d):
                add(f)
        for task, rows in self.suite or []:
            digest.update(f"task {task.name}\n".encode())
            for e in rows:
                add(e.path, e.label, e.split)
        return digest.hexdigest()


def gather_inputs(cfg: DictConfig) -> Inputs:
    """Check the config's values, find the calibration folders and build (and check) the
    evaluation suite: every mistake a config can hold is reported before hours of work."""
    matcher, merger = check_config(cfg)
    for node in cfg.pair.get("families") or []:  # encoder families from outside the project
        register(build(node, "pair.families"))
    cal = cfg.calibration
    dirs = []
    if cal.size > 0:  # calibration.size=0: no pass over audio, no folders to find
        dirs = [str(d) for d in cal.dirs]
        dirs += [str(build(s, "calibration.sources")) for s in cal.get("sources") or []]
    suite = None
    if cfg.eval.get("suite") is not None and cfg.eval.get("backend") != "s3prl":
        from eval.evaluate import build_suite, check_suite  # merging never depends on eval

        suite = build_suite(cfg.eval)
        check_suite(suite)
    return Inputs(dirs, suite, matcher, merger)


@contextmanager
def timed(record: JobRecord, stage: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    record.seconds[stage] = time.perf_counter() - t


def load_pair(cfg: DictConfig, record: JobRecord) -> tuple[Encoder, Encoder]:
    with timed(record, "loading"):
        a = load_encoder(cfg.pair.a, cfg.device)
        b = load_encoder(cfg.pair.b, cfg.device)
        check_mergeable(a, b)
    return a, b


def calibrate_pair(
    cfg: DictConfig, a: Encoder, b: Encoder, inputs: Inputs, record: JobRecord
) -> tuple[dict[str, PointStats], list]:
    """Both encoders' statistics at every merge point, over the calibration clips (cached);
    none at all with ``calibration.size=0`` (a data-free matcher)."""
    cal = cfg.calibration
    if cal.size == 0:
        record.calibration = {"clips": 0, "requested": 0, "skipped": 0, "cached": False}
        return {}, []
    clips, skipped = calibration_clips(
        inputs.calibration_dirs,
        cal.size,
        a.sample_rate,
        cal.max_seconds,
        cal.seed,
        min_samples(a.config),
    )
    with timed(record, "calibration"):
        stats, cached = cached_calibrate(
            a, b, clips, cfg.paths.cache, cal.batch_size, cfg.progress, cal.get("max_frame_rate")
        )
    record.calibration = {
        "clips": len(clips),
        "requested": cal.size,
        "skipped": len(skipped),
        "skipped_files": skipped[:10],  # the first few, by name
        "audio_seconds": sum(c.wave.numel() for c in clips) / a.sample_rate,
        "cached": cached,
    }
    return stats, clips


def align_and_combine(
    cfg: DictConfig,
    a: Encoder,
    b: Encoder,
    stats: dict[str, PointStats],
    clips: list,
    inputs: Inputs,
    out: Path,
    record: JobRecord,
) -> MergeResult:
    """Match, permute B, combine (and refine); which unit of B went where is saved."""
    p = cfg.permute
    scope = Scope(cnn=p.cnn, ffn=p.ffn, attn=p.attn, res=p.res, vo_point=p.get("vo_point", "v"))
    result = merge(a, b, stats, scope, inputs.merger, inputs.matcher, clips)
    if cfg.get("parent") is not None:  # the parent's weights (exact); its input convention too
        result.encoder.normalize = {"a": a, "b": b}[cfg.parent].normalize
    record.seconds.update(result.seconds)
    perms = out / "permutations.safetensors"  # compare jobs by it
    write_atomically(
        perms,
        lambda tmp: save_file({g: p.contiguous() for g, p in result.perms.items()}, str(tmp)),
    )
    record.scope = OmegaConf.to_container(p)
    record.match = inputs.matcher.name
    refined = {"refined": result.refined} if result.refined else {}
    record.merge = {**inputs.merger.describe(), **refined}
    record.alpha = record.merge.get("alpha")
    record.alignment = result.alignment
    record.permutations = str(perms)
    with timed(record, "plots"):
        record.plots = [
            str(
                plot_alignment(
                    result.spec,
                    stats,
                    result.perms,
                    g,
                    out / "plots" / f"corr_{g}.png",
                    data=cfg.heatmaps_data,
                )
            )
            for g in cfg.heatmaps
            if g in result.perms and all(p in stats for p in result.spec[g].points)
        ]
    return result


def export_merged(
    cfg: DictConfig, result: MergeResult, a: Encoder, b: Encoder, out: Path, record: JobRecord
) -> None:
    card = {"a": a.source, "b": b.source, "scope": cfg.permute.name, "match": record.match}
    with timed(record, "export"):
        export(
            result.encoder, out / "merged", {**card, "merge": record.merge, "alpha": record.alpha}
        )
    record.merged_dir = str(out / "merged")


def evaluate_merged(
    cfg: DictConfig, result: MergeResult, a: Encoder, b: Encoder, inputs: Inputs, out: Path,
    record: JobRecord,
) -> None:  # fmt: skip
    from eval.evaluate import evaluate, evaluate_s3prl  # merging never depends on eval

    with timed(record, "evaluation"):
        if cfg.eval.get("backend") == "s3prl":
            if not cfg.save_merged:
                raise ValueError(
                    "eval.backend=s3prl needs the merged checkpoint (save_merged=true)"
                )
            evaluation = evaluate_s3prl(out / "merged", cfg.eval, out, out.name)
        else:
            evaluation = evaluate(
                result.encoder,
                cfg.eval,
                cfg.paths.cache,
                parents=(a, b),
                trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
                progress=cfg.progress,
                suite=inputs.suite,
            )
    record.evaluation = Evaluation.from_dict(evaluation)


def merge_job(cfg: DictConfig, out: Path, inputs: Inputs, record: JobRecord) -> None:
    """conf -> merging -> eval, stage by stage, each filling its part of ``record``."""
    torch.manual_seed(cfg.seed)
    a, b = load_pair(cfg, record)
    stats, clips = calibrate_pair(cfg, a, b, inputs, record)
    result = align_and_combine(cfg, a, b, stats, clips, inputs, out, record)
    if cfg.save_merged:
        export_merged(cfg, result, a, b, out, record)
    if cfg.eval.get("suite") is not None:
        evaluate_merged(cfg, result, a, b, inputs, out, record)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption), recorded like an interrupt."""


def _terminated(signum, frame) -> None:
    raise Terminated(f"signal {signum}")


def on_sigterm(handler):
    """Install a SIGTERM handler; the previous one (None off the main thread, where a
    launcher may run jobs and signals cannot be caught)."""
    if handler is None:
        return None
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


def save_record(out: Path, record: JobRecord) -> None:
    record.write(out / "results.json")


def tracking_identity(cfg: DictConfig, hc: DictConfig, out: Path) -> tuple[str, str, list[str]]:
    """W&B group (the sweep, or "single"), run name and tags, so IDs compare side by side."""
    group = "single"
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir).resolve()
        runs = (Path(hc.runtime.cwd) / "multirun").resolve()
        group = str(sweep.relative_to(runs)) if sweep.is_relative_to(runs) else sweep.name
    name = cfg.get("experiment_id") or hc.job.override_dirname or out.name
    tags = [str(t) for t in (cfg.get("experiment_id"), cfg.permute.get("name")) if t]
    return group, str(name), tags


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    register_resolvers()  # again: launchers that ship this function to workers skip the import
    keep_freed_memory()
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        config, config_error = OmegaConf.to_container(cfg, resolve=True), None
    except Exception as err:  # noqa: BLE001 - e.g. a missing pair.a: recorded as the job's error
        config, config_error = OmegaConf.to_container(cfg, resolve=False), err
    checkpoints = {} if config_error else checkpoint_stamp([cfg.pair.a, cfg.pair.b])
    code = code_stamp()
    inputs, data = None, None
    if config_error is None:
        try:
            inputs = gather_inputs(cfg)
            data = inputs.stamp()
        except Exception as err:  # noqa: BLE001 - recorded as the job's error below
            config_error = err
    if (
        config_error is None
        and cfg.get("resume", True)
        and finished(out, config, checkpoints, code, data)
    ):
        log.info("skipped %s: its results.json is ok for this config (resume=false reruns)", out)
        return
    record = JobRecord(
        config=config,
        checkpoints=checkpoints,
        code=code,
        data=data,
        experiment_id=cfg.get("experiment_id"),
        parent=cfg.get("parent"),
    )
    # Claim the dir before touching anything in it: from here on a kill leaves a "running"
    # record of this config, never an earlier job's "ok" beside this job's weights.
    save_record(out, record)
    t = time.perf_counter()
    previous = on_sigterm(_terminated)  # Slurm preemption: recorded like Ctrl-C
    try:
        if config_error is not None:
            raise config_error
        check_parent(cfg)
        assert inputs is not None
        merge_job(cfg, out, inputs, record)
        record.status = "ok"
    except KeyboardInterrupt:
        record.status = "interrupted"  # never taken for finished: a restart redoes it
        raise
    except Exception as err:  # noqa: BLE001 - recorded with its traceback, reported below
        record.status, record.error = "failed", f"{type(err).__name__}: {err}"
        record.traceback = traceback.format_exc()
    finally:
        on_sigterm(previous)
        record.total_seconds = time.perf_counter() - t
        record.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        save_record(out, record)
    # after results.json, so that a tracking failure never loses the job's results
    if cfg.logger.get("name") == "wandb":
        log_job(record, out, cfg.logger, *tracking_identity(cfg, hc, out))
    if record.status == "ok":
        log.info("merged %s -> %s", cfg.permute.name, out)
        return
    log.error("job failed: %s (details in %s)", record.error, out / "results.json")
    if hc.mode != RunMode.MULTIRUN:  # a sweep records the failure and goes on
        sys.exit(2)


if __name__ == "__main__":
    main()
