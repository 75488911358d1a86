"""An Optuna study over merge weights whose trials are run.py jobs on the validation split.

The study lives in its folder: ``study.db`` (SQLite: a killed study resumes, its finished
trials kept), ``trials/NNNN/`` (each trial's job), ``trials.csv`` (parameters, objective and
timings), ``objective.png``, ``schedule.png``, ``best.json``, and ``final/``: the best trial
scored once on the test split beside the experiments of ``compare``, with ``table.md`` (every
score with its interval, tested against ID 5).
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from report.record import Evaluation, JobRecord
from report.resolvers import ROOT
from report.table import build as build_table
from report.tracking import wandb_mode
from search.schedule import alpha, override, suggest

log = logging.getLogger("search")
ENDED = "ended"  # user attribute of a trial whose job ran to its end (ok or failed)
# What makes two trials comparable: a study resumed with any of these changed is refused (its
# old trials would sit beside new ones that answer another question); trials, compare, out,
# progress and logger may change.
DEFINING = ("pair", "eval", "run", "align", "schedule", "objective", "sampler", "seed")


def depth(cfg: Mapping[str, Any]) -> int:
    """Transformer layers of the encoders the trials merge: the anchor's config.json, from
    run.py's config composed with the study's overrides (``run.py --cfg job``: this process
    may itself be a Hydra app, which cannot compose a second config)."""
    overrides = [f"pair={cfg['pair']}", *cfg["run"], *cfg["align"]]
    command = [sys.executable, str(ROOT / "run.py"), *overrides, "--cfg", "job", "--resolve"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"run.py does not compose with {overrides}: {done.stderr[-1500:]}")
    models = yaml.safe_load(done.stdout)["models"]
    anchor = Path(str(models["members"][models["anchor"]]))
    return int(json.loads((anchor / "config.json").read_text())["num_hidden_layers"])


def job(overrides: Sequence[str], out: Path, sweep: bool = False) -> subprocess.CompletedProcess:
    """run.py with ``overrides`` into ``out`` (a job dir, or a sweep dir with ``sweep``)."""
    where = f"hydra.sweep.dir={out}" if sweep else f"hydra.run.dir={out}"
    command = [sys.executable, str(ROOT / "run.py"), *(["-m"] if sweep else []), *overrides, where]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True)


def shared_overrides(cfg: Mapping[str, Any]) -> list[str]:
    """What every job of the study says: the pair, the suite, ``run`` (data, cache, ...)."""
    return [f"pair={cfg['pair']}", f"eval={cfg['eval']}", *cfg["run"], "progress=false"]


def trial_overrides(cfg: Mapping[str, Any], merge_alpha: Mapping[str, Any]) -> list[str]:
    return [*shared_overrides(cfg), *cfg["align"], override(merge_alpha)]


def open_study(cfg: Mapping[str, Any], out: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = int(cfg["seed"])
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
    }
    if cfg["sampler"] not in samplers:
        raise ValueError(f"sampler={cfg['sampler']}: one of {', '.join(samplers)}")
    study = optuna.create_study(
        study_name="search",
        storage=f"sqlite:///{out / 'study.db'}",
        direction="maximize",
        sampler=samplers[cfg["sampler"]](),
        load_if_exists=True,
    )
    defining = json.loads(json.dumps({k: cfg.get(k) for k in DEFINING}))
    recorded = study.user_attrs.get("config")
    if recorded is None:
        study.set_user_attr("config", defining)
    elif recorded != defining:
        changed = sorted(k for k in DEFINING if recorded.get(k) != defining.get(k))
        raise ValueError(
            f"{out / 'study.db'} was started with other {', '.join(changed)} "
            f"({', '.join(f'{k}={recorded.get(k)}' for k in changed)}): resume it with those, "
            "or give this study its own out="
        )
    for trial in study.get_trials(deepcopy=False):  # a killed study's trial in flight
        if trial.state == optuna.trial.TrialState.RUNNING:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return study


def finished(study) -> list:
    """Trials that count towards the study's total: those whose job ended (complete, or
    failed for a reason of its own); a trial a kill interrupted is asked again."""
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ENDED)]


def run_trial(cfg: Mapping[str, Any], out: Path, number: int, merge_alpha: Mapping) -> dict:
    """One trial's job; its objective (None if the job failed) and timings."""
    folder = out / "trials" / f"{number:04d}"
    done = job(
        [*trial_overrides(cfg, merge_alpha), "eval.test=false",
         f"optimized_metric={cfg['objective']}", "logger=none"],
        folder,
    )  # fmt: skip
    try:
        record = JobRecord.read(folder / "results.json")
    except (OSError, ValueError):
        record = JobRecord(status="failed", error=done.stderr[-2000:] or done.stdout[-2000:])
    evaluation = record.evaluation or Evaluation()
    scores = evaluation.validation.get("scores") or {}
    name = str(cfg["objective"]).rpartition(".")[2]
    value = scores.get(name) if record.status == "ok" else None
    return {
        "value": value if isinstance(value, int | float) else None,
        "status": record.status,
        "error": record.error,
        "validation": {k: v for k, v in scores.items() if isinstance(v, int | float)},
        "plan_reused": (record.plan or {}).get("reused"),
        "matching_s": record.seconds.get("matching"),
        "evaluation_s": record.seconds.get("evaluation"),
        "total_s": record.total_seconds,
        "test_clips_read": sum(
            len(t.get("ids", [])) for p in evaluation.predictions.values() for t in p.values()
        ),  # fmt: skip
    }


def search(cfg: Mapping[str, Any], progress: bool = True) -> dict:
    """Run the study's missing trials, then score the best on the test split (once)."""
    import optuna
    from tqdm import tqdm

    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    if not str(cfg["objective"]).startswith("validation."):
        raise ValueError(f"objective={cfg['objective']}: trials see validation scores only")
    layers = depth(cfg)
    study = open_study(cfg, out)
    missing = max(int(cfg["trials"]) - len(finished(study)), 0)
    tracker = Tracker(cfg, out)
    bar = tqdm(range(missing), desc="trials", disable=not progress)
    for _ in bar:
        trial = study.ask()
        params = suggest(trial.suggest_float, cfg["schedule"])
        chosen = alpha(params, layers)
        result = run_trial(cfg, out, trial.number, chosen)
        for key, value in {**result, ENDED: True}.items():
            if key != "value":
                trial.set_user_attr(key, value)
        if result["value"] is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, result["error"])
        else:
            study.tell(trial, result["value"])
        tracker.log(trial.number, result)
        complete = [t for t in finished(study) if t.value is not None]
        if complete:
            bar.set_postfix(best=f"{max(t.value for t in complete):.1f}")
    tracker.finish()
    trials = finished(study)
    write_trials(trials, out / "trials.csv")
    complete = [t for t in trials if t.value is not None]
    if not complete:
        raise RuntimeError(f"no trial of {out} finished: see trials/*/results.json")
    best = max(complete, key=lambda t: (t.value, -t.number))
    best_alpha = alpha(best.params, layers)
    plot_objective(trials, best, out / "objective.png")
    plot_schedule(best_alpha, layers, out / "schedule.png")
    summary = final(cfg, out, best, best_alpha, len(trials))
    (out / "best.json").write_text(json.dumps(summary, indent=2))
    return summary


def final(cfg: Mapping[str, Any], out: Path, best, best_alpha: Mapping, trials: int) -> dict:
    """The best trial scored on the test split, beside the ``compare`` experiments, in one
    table (tested against ID 5); what ``best.json`` says."""
    final_dir = out / "final"
    runs = [([*trial_overrides(cfg, best_alpha), "experiment_id=search-best", "logger=none"],
             final_dir / "best", False)]  # fmt: skip
    if cfg["compare"]:
        compared = [*shared_overrides(cfg), f"experiment={','.join(cfg['compare'])}"]
        runs.append(([*compared, "logger=none"], final_dir, True))
    for overrides, where, sweep in runs:
        done = job(overrides, where, sweep)
        if done.returncode != 0:
            raise RuntimeError(
                f"scoring on the test split failed in {where}: {done.stdout[-2000:]}"
            )
    reference = "id5" if "id5" in cfg["compare"] else None
    table = build_table(final_dir, reference)
    record = JobRecord.read(final_dir / "best" / "results.json")
    evaluation = record.evaluation or Evaluation()
    return {
        "trials": trials,
        "best_trial": best.number,
        "params": best.params,
        "merge_alpha": dict(best_alpha),
        "validation": best.user_attrs.get("validation"),
        "test": {k: v for k, v in evaluation.scores.items() if isinstance(v, int | float)},
        "test_intervals": evaluation.intervals,
        "table": str(table["md"]),
    }


def write_trials(trials: Sequence, path: Path) -> None:
    keys = sorted({k for t in trials for k in t.params})
    extra = ["plan_reused", "matching_s", "evaluation_s", "total_s", "test_clips_read", "status"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "objective", *keys, *extra])
        for t in trials:
            w.writerow([t.number, t.value, *(t.params.get(k) for k in keys),
                        *(t.user_attrs.get(k) for k in extra)])  # fmt: skip


def plot_objective(trials: Sequence, best, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = sorted((t for t in trials if t.value is not None), key=lambda t: t.number)
    xs, ys = [t.number for t in done], [t.value for t in done]
    running = [max(ys[: i + 1]) for i in range(len(ys))]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(xs, ys, "o", ms=4, label="trial")
    ax.step(xs, running, where="post", label="best so far")
    ax.plot([best.number], [best.value], "*", ms=12, label=f"best (trial {best.number})")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (validation)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_schedule(best_alpha: Mapping[str, Any], layers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(range(1, layers + 1), best_alpha["layers"], "o-", label="transformer layer")
    for part, style in (("cnn", "--"), ("norms", ":")):
        if part in best_alpha:
            ax.axhline(best_alpha[part], ls=style, lw=1, label=f"{part} {best_alpha[part]:.2f}")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(range(1, layers + 1))
    ax.set_xlabel("layer")
    ax.set_ylabel("weight of model A")
    ax.set_title("the best trial's weights over depth")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class Tracker:
    """The study as one W&B run (offline by default, in the study's folder): each trial's
    objective and timings; tracking errors are warnings."""

    def __init__(self, cfg: Mapping[str, Any], out: Path):
        self.run = None
        logger = cfg.get("logger") or {}
        mode = wandb_mode(logger)
        if mode == "disabled":
            return
        try:
            import wandb

            self.run = wandb.init(
                project=logger.get("project") or "speechmusic-search", dir=str(out),
                name=out.name, job_type="search", config=dict(cfg), mode=mode,
                reinit="finish_previous",
                settings=wandb.Settings(console="off", quiet=True, x_disable_stats=True),
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001 - tracking never stops a study
            log.warning("W&B: %s", err)

    def log(self, number: int, result: Mapping[str, Any]) -> None:
        if self.run is None:
            return
        values = {k: v for k, v in result.items() if isinstance(v, int | float)}
        values.update({f"validation/{k}": v for k, v in (result.get("validation") or {}).items()})
        try:
            self.run.log({"trial": number, **values})
        except Exception as err:  # noqa: BLE001
            log.warning("W&B: %s", err)

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as err:  # noqa: BLE001
                log.warning("W&B: %s", err)
