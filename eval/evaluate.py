"""eval's entry point for the runner: probe an encoder on a suite and score it like the paper.

Probe results are cached per (upstream weights, task data, probe settings), so the parents and
the FBANK floor that every score is normalised by are computed once and reused by a sweep.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from eval.data import Example
from eval.features import (
    EncoderUpstream,
    FbankUpstream,
    LayerFusion,
    Upstream,
)
from eval.probing import probe_task
from eval.s3prl import (
    checkout,
    listed_test_set,
    run_commands,
    s3prl_commands,
    task_metrics,
    write_script,
)
from eval.s3prl import installed as s3prl_installed
from eval.scores import PAPER_FBANK, WER_FLOOR, suite_scores, usable_floors
from eval.stats import Bootstrap, intervals, majority, point, score_rows
from eval.suites import suite_of
from eval.tasks import KINDS, Task
from merging.families import family_of
from merging.load import Encoder
from merging.pool import PAIR


def build_suite(cfg: DictConfig) -> list[tuple[Task, list[Example]]]:
    """The configured tasks with their examples (``eval.suite``: see ``eval.suites``)."""
    return suite_of(cfg)


def check_suite(suite: list[tuple[Task, list[Example]]]) -> None:
    """Fail before any forward pass on a task that cannot be probed: no training or test
    clips, or (classification) fewer than two classes."""
    for t, rows in suite:
        splits = {e.split for e in rows}
        where = f"eval: task {t.name!r}"
        if t.kind == "kfold":
            if len(splits) < 2:
                raise ValueError(f"{where} needs at least two folds, got {sorted(splits)}")
        elif not {"train", "test"} <= splits:
            raise ValueError(
                f"{where} needs train and test clips, got splits {sorted(splits)} "
                f"({len(rows)} clips): add files or name the splits in its manifest"
            )
        if t.kind != "ctc" and len({e.label for e in rows}) < 2:
            raise ValueError(
                f"{where} has one class ({rows[0].label!r}) in {len(rows)} clips: a probe "
                "would score 100% on it; check the dataset's folder layout or labels"
            )


def scores(
    metrics: dict[str, float],
    suite: list[tuple[Task, list[Example]]],
    ref_a: dict[str, float],
    ref_b: dict[str, float],
    floor: dict[str, float],
) -> dict:
    """Speech (vs A, above the floor), Music (vs B), and Avg where both exist.

    A floor that model A does not beat would turn (s - f) / (A - f) upside down; such a task is
    scored against A alone (floor 0) and named in ``speech_note``.
    """
    tasks = [t for t, _ in suite]
    usable, dropped = usable_floors(tasks, ref_a, floor)
    out = suite_scores(metrics, tasks, ref_a, ref_b, usable)
    if dropped:
        out["speech_note"] = f"model A does not beat the floor on {dropped}: no floor there"
    return out


def floors(
    suite: list[tuple[Task, list[Example]]], paper: bool, tests_a: Mapping[str, Mapping]
) -> dict[str, float]:
    """The Speech score's floor per speech task: the paper's FBANK numbers on its suite; on
    any other suite the majority-class accuracy of the task's test split (per fold), from its
    labels: what SUPERB's FBANK floor is by construction, and free of probe noise (a WER task:
    an empty transcript's 100%)."""
    out = {}
    for t, _ in suite:
        if t.domain != "speech":
            continue
        if paper:
            out[t.name] = PAPER_FBANK[t.name]
        elif t.kind != "ctc":
            out[t.name] = point(majority(tests_a[t.name]))
        else:
            out[t.name] = WER_FLOOR
    return out


def suite_record(suite: list[tuple[Task, list[Example]]]) -> list[dict[str, str]]:
    """What the report needs to score rows of this suite again: each task's domain and kind."""
    return [
        {"name": t.name, "paper": t.paper, "domain": t.domain, "kind": t.kind, "metric": t.metric}
        for t, _ in suite
    ]


def evaluate(
    encoder: Encoder,
    cfg: DictConfig,
    cache_dir: str | Path | None,
    members: Mapping[str, Encoder] | None = None,
    references: tuple[str, str] | None = None,
    base: Encoder | None = None,
    trainer: Mapping[str, Any] | None = None,
    progress: bool = True,
    suite: list[tuple[Task, list[Example]]] | None = None,
) -> dict:
    """Per-task metrics of a frozen encoder; with the pool's ``members`` (by name) also the
    references: each member alone, the shared ``base`` if any, s3prl's FBANK and one probe over
    every member's layers; the floors, the scores (normalised by the ``references`` members for
    speech and music, default the first two) and their bootstrap intervals. Per-clip outcomes
    of every upstream are in ``predictions``. ``suite``: the configured suite if already built
    and checked (``check_suite``)."""
    if suite is None:
        suite = build_suite(cfg)
        check_suite(suite)

    def run(upstream: Upstream, kinds: tuple[str, ...] = KINDS, settings=cfg) -> dict[str, dict]:
        return {
            t.name: probe_task(upstream, t, rows, settings, cache_dir, trainer, progress)
            for t, rows in suite
            if t.kind in kinds
        }

    tasks = run(EncoderUpstream(encoder, "merged"))
    result: dict = {"tasks": tasks, "suite": suite_record(suite)}
    predictions = {"merged": {n: m.pop("test") for n, m in tasks.items()}}
    result["predictions"] = predictions
    if not members:
        return result
    names = list(members)
    speech, music = references or (names[0], names[1])
    parts = {
        n: EncoderUpstream(e, f"model {n.upper()}" if n in PAIR else n) for n, e in members.items()
    }
    refs = {n: run(u) for n, u in parts.items()}
    if base is not None:
        refs["base"] = run(EncoderUpstream(base, "base"))
    paper_floor = cfg.get("floor") == "paper"
    if not paper_floor and any(t.domain == "speech" for t, _ in suite):
        # a reference, not the floor; one layer: the pooled probe whatever eval.interface says
        pooled = cfg.copy()
        with open_dict(pooled):
            pooled.interface = {"name": "weighted_sum"}
        refs["fbank"] = run(FbankUpstream(encoder.sample_rate), settings=pooled)
    fusion = LayerFusion(tuple(parts.values()), fusion_name(names))
    refs["fusion"] = run(fusion, ("utterance", "kfold"))
    for who, values in refs.items():
        predictions[who] = {n: m.pop("test") for n, m in values.items()}
    result["members"] = names
    result["normalisers"] = {"speech": speech, "music": music}
    results = {"merged": tasks, **refs}
    result["probe_cached"] = {  # what a rerun served from the caches, every upstream's
        who: {n: m["probe_cached"] for n, m in values.items()} for who, values in results.items()
    }
    result["probe_seconds"] = {  # each probe's training, every seed and learning rate
        who: {n: m.get("train_seconds") for n, m in values.items()}
        for who, values in results.items()
    }
    result["references"] = {k: {n: m["value"] for n, m in v.items()} for k, v in refs.items()}
    result["validation"] = validation(suite, results, speech, music, paper_floor)
    if not cfg.get("test", True):  # validation only: no test clip was read, nothing to score
        result["predictions"] = {}
        return result
    result["floors"] = floors(suite, paper_floor, predictions[speech])
    result["floor"] = "paper" if paper_floor else "majority"
    value = {name: m["value"] for name, m in tasks.items()}
    result["scores"] = scores(
        value, suite, result["references"][speech], result["references"][music], result["floors"]
    )
    boot = Bootstrap.of(cfg.get("bootstrap"))
    rows = {who: predictions[who] for who in ("merged", speech, music)}
    scored = score_rows(
        rows,
        [t for t, _ in suite],
        result["floors"] if paper_floor else "majority",
        boot.resamples,
        boot.seed,
        speech,
        music,
    )["merged"]
    result["intervals"] = intervals(scored.samples, boot.level)
    return result


def validation(
    suite: list[tuple[Task, list[Example]]],
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    speech: str,
    music: str,
    paper: bool = False,
) -> dict:
    """Speech / Music / Avg of the validation split: each probe's validation metric (its
    chosen setting's), normalised by the ``speech`` and ``music`` members' as the test scores
    are, the floors the validation labels' majority-class shares (ASR on the paper's suite:
    its FBANK number). What a search may select on without looking at the test split."""
    tasks = [t for t, _ in suite]
    values = {
        who: {n: m["valid"] for n, m in by_task.items() if m.get("valid") is not None}
        for who, by_task in results.items()
    }
    floors = {}
    for t in tasks:
        chosen = (results[speech].get(t.name) or {}).get("valid_floor")
        if t.domain == "speech" and chosen is not None:
            floors[t.name] = chosen
        elif t.domain == "speech" and paper and t.name in PAPER_FBANK:
            floors[t.name] = PAPER_FBANK[t.name]
        elif t.domain == "speech" and t.kind == "ctc":
            floors[t.name] = WER_FLOOR
    usable, _ = usable_floors(tasks, values[speech], floors)
    return {
        "tasks": values["merged"],
        "references": {who: v for who, v in values.items() if who != "merged"},
        "floors": floors,
        "scores": suite_scores(values["merged"], tasks, values[speech], values[music], usable),
    }


def fusion_name(members: Sequence[str]) -> str:
    """``A + B layer fusion`` for a pair, else the members by name."""
    shown = [n.upper() if tuple(members) == PAIR else n for n in members]
    return f"{' + '.join(shown)} layer fusion"


def evaluate_s3prl(merged_dir: str | Path, cfg: DictConfig, out: str | Path, prefix: str) -> dict:
    """s3prl's own recipes for the configured tasks, written to ``s3prl.sh`` and run: from an
    s3prl checkout (``eval.s3prl.root``) or else from the installed package (``make s3prl``),
    in ``out/s3prl/``. The upstream is the one s3prl loads the merged checkpoint's family with."""
    model_type = json.loads((Path(merged_dir) / "config.json").read_text()).get("model_type")
    family = family_of(model_type)
    if family is None or not family.s3prl_upstream:
        raise ValueError(
            f"eval.backend=s3prl: no s3prl upstream loads {model_type!r} checkpoint folders "
            "(use the built-in probes: eval.backend=probes)"
        )
    root = cfg.s3prl.root
    package = not root and s3prl_installed()
    roots, notes = OmegaConf.to_container(cfg.roots), {}
    test = cfg.get("speech_commands_test")
    ks = roots.get("ks")
    if ks and not test and (Path(ks) / "testing_list.txt").is_file():  # as the probes do
        test = str(listed_test_set(ks, Path(out).resolve() / "s3prl" / "ks_test"))
        notes["ks"] = (
            "tested on the testing list of eval.roots.ks; SUPERB tests on the separate v0.01 "
            "test set (eval.speech_commands_test)"
        )
    commands, skipped = s3prl_commands(
        merged_dir,
        roots,
        prefix,
        test,
        OmegaConf.to_container(cfg.s3prl.downstreams),
        python=sys.executable if package else "python3",
        upstream=family.s3prl_upstream,
        package=package,
        config=OmegaConf.to_container(cfg.s3prl.config) if cfg.s3prl.get("config") else {},
    )
    workdir = checkout(root) if root else Path(out).resolve() / "s3prl"
    script = write_script(commands, Path(out) / "s3prl.sh", workdir if root or package else None)
    result = {"backend": "s3prl", "script": str(script), "skipped": skipped, "notes": notes}
    if not (root or package):
        result["runner"] = None
        result["not_run"] = "s3prl is not installed (make s3prl) and eval.s3prl.root is unset"
        return result
    result["runner"] = "checkout" if root else "package"
    result["runs"] = run_commands(commands, workdir, Path(out) / "s3prl_logs")
    result["tasks"] = task_metrics(result["runs"])
    return result
