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
import threading
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

from checks import (
    check_added_keys,
    check_cache_dir,
    check_calibration_dirs,
    check_heatmaps,
    check_values,
)
from merging.analysis import plot_alignment
from merging.audio import calibration_clips, list_audio
from merging.calibrate import PointStats, cached_calibrate_pool
from merging.combine import Merger
from merging.families import register
from merging.files import write_atomically
from merging.forward import min_samples
from merging.identity import target_modules
from merging.load import load_encoder
from merging.match import Matcher, Scope
from merging.merge import PoolMergeResult, export, merge_pool
from merging.plan import load_plan, plan_key, save_plan
from merging.plugins import build
from merging.pool import Pool
from merging.runtime import keep_freed_memory
from report.jobdir import (
    JobDirBusy,
    clear_rejection,
    hold,
    record_rejection,
)
from report.record import Evaluation, JobRecord
from report.resolvers import register_repo
from report.results import checkpoint_stamp, code_stamp, finished, outputs_digest, targets
from report.tracking import log_job

log = logging.getLogger("run")
DEFAULT_HEATMAPS = ("conv.0", "ffn.0", "attn_vo.0")  # heatmaps=null: those the encoders have
OUTPUTS = ("merged", "permutations.safetensors")  # what resume checks is still in the job dir


def register_resolvers() -> None:
    """``${repo:PATH}``: PATH under the repository root, wherever the job is started from."""
    register_repo()


register_resolvers()


def check_parent(cfg: DictConfig) -> None:
    """``parent=NAME`` scores one member of the pool alone (IDs 1 and 2: a pair's A and B).
    Only a linear merge with all the weight on it and no alignment returns its weights exactly
    (``torch.lerp`` returns its end points, a weighted mean with weights 1, 0, ... its first)."""
    parent = cfg.get("parent")
    if parent is None:
        return
    members = [str(n) for n in cfg.models.members]
    if parent not in members:
        raise ValueError(f"parent={parent} is not a member of the pool ({', '.join(members)})")
    p = cfg.permute
    aligned = bool(p.cnn or p.ffn or p.res or p.attn != "none")
    weights = cfg.merge.get("weights")
    if weights is None:  # two members weighed by alpha, the anchor's weight
        alpha = 1.0 if parent == str(cfg.models.anchor) else 0.0
        wanted, got = f"merge.alpha={alpha}", f"merge.alpha={cfg.merge.get('alpha')}"
        exact = cfg.merge.get("alpha") == alpha
    else:
        one = {m: 1.0 if m == parent else 0.0 for m in members}
        wanted = "merge.weights={" + ",".join(f"{m}:{w}" for m, w in one.items()) + "}"
        got = f"merge.weights={OmegaConf.to_container(weights)}"
        exact = {str(m): w for m, w in weights.items()} == one
    linear = cfg.merge.get("_target_") == "merging.combine.Linear"
    if not (exact and linear) or aligned:
        raise ValueError(
            f"parent={parent} scores {parent} alone, which needs merge=linear, {wanted} and "
            f"permute=none (got merge={cfg.merge.get('_target_')}, {got}, permute={p.name}"
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
    p = cfg.permute
    aligns = p.cnn or p.ffn or p.attn != "none" or p.res  # permute=none: nothing to match
    if size == 0 and aligns and getattr(matcher, "needs_calibration", True):
        raise ValueError(
            f"match={getattr(matcher, 'name', matcher)} matches on calibration statistics: "
            "calibration.size must be at least 1 (match=weight needs none; permute=none "
            "aligns nothing)"
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
        check_calibration_dirs(dirs)
        if bool(dirs) == bool(cal.get("synthetic")):
            raise ValueError(
                "calibration=synthetic generates its clips: it takes no calibration.dirs"
                if dirs
                else "calibration.dirs is empty: name folders of speech and music audio "
                "(calibration.dirs=[/data/speech,/data/music]), or choose calibration=synthetic "
                "(generated tones) or calibration=demo (the demo set)"
            )
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


def load_pool(cfg: DictConfig, record: JobRecord) -> Pool:
    """The members (and the base) of ``models``, each of the anchor's family and layout."""
    models = cfg.models
    with timed(record, "loading"):
        members = {str(n): load_encoder(path, cfg.device) for n, path in models.members.items()}
        base = load_encoder(models.base, cfg.device) if models.get("base") else None
        pool = Pool(members, str(models.anchor), base)
        pool.check()
    return pool


def pool_paths(cfg: DictConfig) -> list[str]:
    """Every checkpoint the job reads: the members in order, then the base."""
    models = cfg.models
    return [
        *(str(p) for p in models.members.values()),
        *([models.base] if models.get("base") else []),
    ]


def calibrate_pool(
    cfg: DictConfig, pool: Pool, inputs: Inputs, record: JobRecord
) -> tuple[dict[str, dict[str, PointStats]], list]:
    """Per member, the anchor x member statistics at every merge point, over the calibration
    clips, in one pass (cached); none at all with ``calibration.size=0`` (a data-free matcher,
    or nothing aligned)."""
    cal = cfg.calibration
    a = pool.members[pool.anchor]
    if cal.size == 0:
        record.calibration = {"clips": 0, "requested": 0, "skipped": 0, "cached": False}
        return {name: {} for name in pool.others}, []
    clips, skipped = calibration_clips(
        inputs.calibration_dirs,
        cal.size,
        a.sample_rate,
        cal.max_seconds,
        cal.seed,
        min_samples(a.config),
        cal.get("workers"),
    )
    with timed(record, "calibration"):
        stats, cached = cached_calibrate_pool(
            a, {n: pool.members[n] for n in pool.others}, clips, cfg.paths.cache,
            cal.batch_size, cfg.progress,
            cal.get("max_frame_rate"), cal.get("workers"),
            OmegaConf.to_container(cfg.trainer, resolve=True),
        )  # fmt: skip
    record.calibration = {
        "clips": len(clips),
        "requested": cal.size,
        "skipped": len(skipped),
        "skipped_files": skipped[:10],  # the first few, by name
        "audio_seconds": sum(c.samples for c in clips) / a.sample_rate,
        "sources": by_source(clips, inputs.calibration_dirs, a.sample_rate),
        "cached": cached,
    }
    return stats, clips


def by_source(clips: list, dirs: list[str], rate: int) -> dict[str, dict[str, float]]:
    """Clips and seconds per calibration folder (``synthetic`` for generated clips)."""
    roots = [(d, Path(d).expanduser().resolve()) for d in dirs]
    sources = {d: {"clips": 0, "seconds": 0.0} for d in [*dirs, "synthetic"]}
    for clip in clips:
        path = Path(clip.name).resolve()
        name = next((d for d, root in roots if path.is_relative_to(root)), "synthetic")
        sources[name]["clips"] += 1
        sources[name]["seconds"] += clip.samples / rate
    return {d: s for d, s in sources.items() if d != "synthetic" or s["clips"]}


def align_and_combine(
    cfg: DictConfig,
    pool: Pool,
    stats: dict[str, dict[str, PointStats]],
    clips: list,
    inputs: Inputs,
    out: Path,
    record: JobRecord,
) -> PoolMergeResult:
    """Match, permute every other member onto the anchor, combine (and refine); which unit of
    each went where is saved (a pair: B's groups; a larger pool: ``member/group``)."""
    p = cfg.permute
    scope = Scope(cnn=p.cnn, ffn=p.ffn, attn=p.attn, res=p.res, vo_point=p.get("vo_point", "v"))
    key, plan = None, None
    if p.cnn or p.ffn or p.res or p.attn != "none":  # something to match: a plan to reuse
        with timed(record, "plan"):
            match = OmegaConf.to_container(cfg.match, resolve=True)
            key = plan_key(pool, stats, scope, match, target_modules(targets(match)))
            plan = load_plan(cfg.paths.cache, key)
    result = merge_pool(pool, stats, scope, inputs.merger, inputs.matcher, clips, plan)
    if key is not None:
        if plan is None:
            save_plan(cfg.paths.cache, key, result.perms)
        record.plan = {"key": key, "reused": plan is not None}
    if cfg.get("parent") is not None:  # the parent's weights (exact); its input convention too
        result.encoder.normalize = pool.members[cfg.parent].normalize
    record.seconds.update(result.seconds)
    pair = len(pool.members) == 2
    flat = {
        (g if pair else f"{member}/{g}"): index.contiguous()
        for member, groups in result.perms.items()
        for g, index in groups.items()
    }
    perms = out / "permutations.safetensors"  # compare jobs by it
    write_atomically(perms, lambda tmp: save_file(flat, str(tmp)))
    record.scope = OmegaConf.to_container(p)
    record.match = inputs.matcher.name
    refined = {"refined": result.refined} if result.refined else {}
    record.merge = {**inputs.merger.describe(), **refined}
    record.alpha = record.merge.get("alpha")
    record.alignment = [
        row if pair else {"member": member, **row}
        for member, rows in result.alignment.items()
        for row in rows
    ]
    record.permutations = str(perms)
    groups = DEFAULT_HEATMAPS if cfg.heatmaps is None else cfg.heatmaps
    with timed(record, "plots"):
        record.plots = [
            str(
                plot_alignment(
                    result.spec,
                    stats[member],
                    result.perms[member],
                    g,
                    out / "plots" / (f"corr_{g}.png" if pair else f"corr_{member}_{g}.png"),
                    data=cfg.heatmaps_data,
                )
            )
            for member in pool.others
            for g in groups
            if g in result.perms[member] and all(q in stats[member] for q in result.spec[g].points)
        ]
    return result


def export_merged(
    cfg: DictConfig, result: PoolMergeResult, pool: Pool, out: Path, record: JobRecord
) -> None:
    a, b = (pool.members[n] for n in (pool.anchor, pool.others[0]))
    card = {
        "a": a.source,
        "b": b.source,
        **(
            {}
            if len(pool.members) == 2
            else {"members": {n: e.source for n, e in pool}, "anchor": pool.anchor}
        ),
        **({"base": pool.base.source} if pool.base is not None else {}),
        "scope": cfg.permute.name,
        "match": record.match,
        "merge": record.merge,
        "alpha": record.alpha,
        "calibration": {
            k: v for k, v in record.calibration.items() if k not in ("skipped_files", "cached")
        },
        "code": record.code,
    }
    with timed(record, "export"):
        export(result.encoder, out / "merged", card)
    record.merged_dir = str(out / "merged")


def evaluate_merged(
    cfg: DictConfig, result: PoolMergeResult, pool: Pool, inputs: Inputs, out: Path,
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
                members=pool.members,
                references=references(cfg),
                base=pool.base,
                trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
                progress=cfg.progress,
                suite=inputs.suite,
            )
    record.evaluation = Evaluation.from_dict(evaluation)


def references(cfg: DictConfig) -> tuple[str, str]:
    """The members whose scores normalise the speech and the music tasks (``ref_A``, ``ref_B``
    of the score formula): ``models.references`` where set, else the anchor and the next
    member."""
    members = [str(n) for n in cfg.models.members]
    anchor = str(cfg.models.anchor)
    chosen = dict(cfg.models.get("references") or {})
    unknown = set(chosen) - {"speech", "music"}
    if unknown:
        raise ValueError(f"models.references: unknown domains {sorted(unknown)} (speech, music)")
    speech = str(chosen.get("speech") or anchor)
    music = str(chosen.get("music") or next(n for n in members if n != anchor))
    for domain, name in (("speech", speech), ("music", music)):
        if name not in members:
            raise ValueError(
                f"models.references.{domain}={name} is not a member ({', '.join(members)})"
            )
    if speech == music:
        raise ValueError(f"models.references: {speech} cannot normalise both domains")
    return speech, music


def merge_job(cfg: DictConfig, out: Path, inputs: Inputs, pool: Pool, record: JobRecord) -> None:
    """conf -> merging -> eval, stage by stage, each filling its part of ``record``."""
    torch.manual_seed(cfg.seed)
    stats, clips = calibrate_pool(cfg, pool, inputs, record)
    result = align_and_combine(cfg, pool, stats, clips, inputs, out, record)
    if cfg.save_merged:
        export_merged(cfg, result, pool, out, record)
    if cfg.eval.get("suite") is not None:
        evaluate_merged(cfg, result, pool, inputs, out, record)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption), recorded like an interrupt."""


class JobFailed(Exception):
    """Raised at the end of a failed job in a sweep: Hydra's launchers run the other jobs,
    then the sweep exits non-zero."""


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


SWEEP_PID = "MERGE_SWEEP_PID"  # the process that started run.py, inherited by its workers


def stop_with_the_sweep(poll: float = 1.0, grace: float = 10.0) -> None:
    """In a worker process of the sweep (joblib's), end the job as if by SIGTERM once the
    sweep's process is gone (it records ``interrupted``), then the worker itself, instead of
    running on as an orphan."""
    sweep = os.environ.get(SWEEP_PID, "")
    if os.getppid() != (int(sweep) if sweep.isdigit() else -1):
        return  # the sweep's process itself, or a job on another node (Slurm)
    if any(t.name == "stop-with-the-sweep" for t in threading.enumerate()):
        return  # once per worker process, which runs many jobs

    def watch() -> None:
        while os.getppid() == int(sweep):
            time.sleep(poll)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)  # time to write the record
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-the-sweep", daemon=True).start()


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


def prepare(
    cfg: DictConfig, hc: DictConfig, out: Path, record: JobRecord
) -> tuple[Inputs, Pool] | None:
    """Everything a job checks before its work: the config's values, the inputs, the job's
    identity (None: an ok record of it is already there), the encoders and what depends on
    them. An error here leaves the job dir's record and outputs as they were."""
    check_values(cfg)
    check_added_keys(cfg, hc.overrides.task)
    check_cache_dir(cfg.paths.cache)
    check_parent(cfg)
    inputs = gather_inputs(cfg)
    record.checkpoints = checkpoint_stamp(pool_paths(cfg))
    record.code = code_stamp(plugins=targets(record.config))
    record.data = inputs.stamp()
    identity = (record.config, record.checkpoints, record.code, record.data)
    if cfg.resume and finished(out, *identity):
        return None
    references(cfg)  # named members, checked before loading
    names = [str(n) for n in cfg.models.members]  # before loading: a method that cannot
    inputs.merger.check_pool(names, bool(cfg.models.get("base")))  # merge them costs nothing
    pool = load_pool(cfg, record)
    a = pool.members[pool.anchor]
    spec_groups = {
        g.name
        for split in (False, True)
        for g in a.family.build_spec(a.config, split, a.model.state_dict().keys()).groups
    }
    check_heatmaps(cfg, spec_groups)
    inputs.merger.check(a.config)
    return inputs, pool


def run_job(cfg: DictConfig, hc: DictConfig, out: Path) -> JobRecord | None:
    """Check, then claim the dir and do the work; the final record (None: skipped)."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        error = None
    except Exception as err:  # noqa: BLE001 - e.g. a missing pair.a: the job's error
        config, error = OmegaConf.to_container(cfg, resolve=False), err
    record = JobRecord(
        config=config, experiment_id=cfg.get("experiment_id"), parent=cfg.get("parent")
    )
    t = time.perf_counter()
    try:
        if error is not None:
            raise error
        prepared = prepare(cfg, hc, out, record)
    except Exception as err:  # noqa: BLE001 - refused before any work: recorded, nothing lost
        record.status, record.error = "failed", f"{type(err).__name__}: {err}"
        record.traceback = traceback.format_exc()
        record.total_seconds = time.perf_counter() - t
        where = record_rejection(out, record)
        log.error("job refused: %s (recorded in %s)", record.error, where)
        if OmegaConf.select(cfg, "logger.name", default=None) == "wandb":
            log_job(record, out, cfg.logger, *tracking_identity(cfg, hc, out))
        return record
    if prepared is None:
        log.info("skipped %s: its results.json is ok for this config (resume=false reruns)", out)
        return None
    inputs, pool = prepared
    # Claim the dir before touching anything in it: from here on a kill leaves a "running"
    # record of this config, never an earlier job's "ok" beside this job's weights.
    save_record(out, record)
    clear_rejection(out)
    previous = on_sigterm(_terminated)  # Slurm preemption: recorded like Ctrl-C
    try:
        merge_job(cfg, out, inputs, pool, record)
        record.outputs = outputs_digest(out, OUTPUTS)
        record.status = "ok"
    except (KeyboardInterrupt, SystemExit):  # Lightning turns an interrupt into SystemExit
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
    else:
        log.error("job failed: %s (details in %s)", record.error, out / "results.json")
    return record


def optimized(record: JobRecord | None, out: Path, name: str | None) -> float | None:
    """The score ``optimized_metric`` names (``validation.avg``, ``avg``) of this job's
    record (a skipped job's: the one already in its dir); None if unnamed or not scored."""
    if not name:
        return None
    if record is None:
        try:
            record = JobRecord.read(out / "results.json")
        except (OSError, ValueError):
            return None
    evaluation = record.evaluation or Evaluation()
    where, _, score = str(name).rpartition(".")  # checked by checks.check_values
    scores = (evaluation.validation.get("scores") or {}) if where else evaluation.scores
    value = scores.get(score)
    return float(value) if isinstance(value, int | float) else None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    register_resolvers()  # again: launchers that ship this function to workers skip the import
    keep_freed_memory()
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    stop_with_the_sweep()
    try:
        with hold(out):
            record = run_job(cfg, hc, out)
    except JobDirBusy as err:
        log.error("%s", err)
        record = JobRecord(status="failed", error=str(err))
    if record is None or record.status == "ok":
        return optimized(record, out, cfg.get("optimized_metric"))
    if hc.mode == RunMode.MULTIRUN:  # the launcher runs the other jobs, then the sweep fails
        raise JobFailed(f"{out}: {record.error}")
    sys.exit(2)


if __name__ == "__main__":
    os.environ.setdefault(SWEEP_PID, str(os.getpid()))
    main()
