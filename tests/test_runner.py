"""The runner: every config group composes, Table I's experiments, resumable tracked sweeps."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import run  # registers the ${repo:} resolver the demo pair uses
from merging.combine import interpolate
from merging.merge import export
from merging.plugins import build
from report import table, tracking
from report.record import JobRecord
from report.results import checkpoint_stamp, finished
from tests.helpers import random_encoder, tiny_config
from tests.test_audio import write_mixed_folder
from tests.test_eval import make_two_class_folder

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = (
    "pair",
    "models",
    "permute",
    "match",
    "merge",
    "calibration",
    "eval",
    "logger",
    "trainer",
    "experiment",
)
LAUNCHERS = {
    "basic": "BasicLauncher",
    "joblib": "JoblibLauncher",
    "submitit_slurm": "SlurmLauncher",
}
# (permute preset, permute.cnn, merge.alpha, parent) of each row of the paper's Table I
TABLE_I = {
    1: ("none", False, 1.0, "a"),
    2: ("none", False, 0.0, "b"),
    3: ("none", False, 0.5, None),
    4: ("none", False, 0.9, None),
    5: ("fnn_attn", True, 0.9, None),
    6: ("cnn", True, 0.9, None),
    7: ("ffn", True, 0.9, None),
    8: ("all", True, 0.9, None),
    9: ("fnn_attn", False, 0.9, None),
}


def composed(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_every_option_of_every_group_composes(group, option):
    weights = ["merge.weights={a:1.0,b:1.0}"]
    required = {  # their mandatory values
        ("eval", "folder"): ["eval.root=/data/task"],
        ("models", "local"): ["models.members={a:/ckpt/a,b:/ckpt/b}", "models.anchor=a"],
        **{("merge", m): weights for m in ("task_arithmetic", "ties", "dare")},
    }
    cfg = composed(f"{group}={option}", *required.get((group, option), []))
    if group == "experiment":
        assert cfg.experiment_id == option
        return
    node = OmegaConf.to_container(cfg[group], resolve=True)  # resolvers (${repo:}) work too
    if "_target_" in node:  # a plug point: the option builds the object it names
        assert build(cfg[group], group).name == option
    else:
        assert node["name"] == option
    if group == "trainer":
        assert {"accelerator", "devices", "strategy", "precision"} <= set(node)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_every_launcher_composes(launcher):
    cfg = composed(f"hydra/launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_.endswith(LAUNCHERS[launcher])


def test_defaults_are_the_demo_world_and_repo_paths_resolve():
    run.register_resolvers()  # idempotent
    cfg = composed()
    assert (cfg.pair.name, cfg.eval.name, cfg.logger.name, cfg.trainer.name) == (
        "demo",
        "demo",
        "wandb",
        "cpu",
    )
    assert cfg.pair.a == str(ROOT / "checkpoints" / "demo-speech")
    assert cfg.experiment_id is None and cfg.parent is None and cfg.resume is True


@pytest.mark.parametrize("number", sorted(TABLE_I))
def test_experiments_set_what_they_claim(number):
    scope, cnn, alpha, parent = TABLE_I[number]
    cfg = composed(f"experiment=id{number}")
    assert (cfg.permute.name, cfg.permute.cnn, cfg.merge.alpha, cfg.parent) == (
        scope,
        cnn,
        alpha,
        parent,
    )
    assert cfg.experiment_id == f"id{number}"
    path = CONF / "experiment" / f"id{number}.yaml"
    assert path.read_text().startswith("# @package _global_")
    assert set(yaml.safe_load(path.read_text())) <= {
        "defaults",
        "experiment_id",
        "merge",
        "permute",
        "parent",
    }
    run.check_parent(cfg)
    # a command-line override still wins over the experiment
    assert composed(f"experiment=id{number}", "merge.alpha=0.25").merge.alpha == 0.25


def test_alpha_one_and_zero_are_exactly_the_parents():
    a, b = (random_encoder(tiny_config(), s).model.state_dict() for s in (0, 1))
    for alpha, parent in ((1.0, a), (0.0, b)):
        merged = interpolate(a, b, alpha)
        assert all(torch.equal(merged[k], parent[k]) for k in a)
    with pytest.raises(ValueError, match="merge.alpha=1.0 and permute=none"):
        run.check_parent(composed("experiment=id1", "merge.alpha=0.9"))
    with pytest.raises(ValueError, match="permute=none"):
        run.check_parent(composed("experiment=id2", "permute=cnn"))


def test_any_member_of_a_pool_is_scored_alone_exactly():
    from merging.combine import Linear

    states = {n: random_encoder(tiny_config(), s).model.state_dict() for s, n in enumerate("xyz")}
    for parent in states:
        one = {m: 1.0 if m == parent else 0.0 for m in states}
        merged = Linear(weights=one).combine_pool(states, anchor="x")
        assert all(torch.equal(merged[k], states[parent][k]) for k in merged)
    pool = ("models=distill_demo", "merge=linear", "permute=none")
    run.check_parent(composed(*pool, "parent=music", "merge.weights={speech:0.0,music:1.0}"))
    with pytest.raises(ValueError, match="not a member of the pool"):
        run.check_parent(composed(*pool, "parent=a", "merge.weights={speech:0.0,music:1.0}"))
    with pytest.raises(ValueError, match=r"merge.weights=\{speech:0.0,music:1.0\}"):
        run.check_parent(composed(*pool, "parent=music", "merge.weights={speech:0.5,music:0.5}"))
    with pytest.raises(ValueError, match="needs merge=linear"):
        run.check_parent(
            composed(
                "models=distill_demo",
                "merge=task_arithmetic",
                "parent=music",
                "merge.weights={speech:0.0,music:1.0}",
            )
        )


def test_main_returns_the_optimized_metric(tmp_path):
    from checks import check_values
    from report.record import Evaluation

    ev = Evaluation(scores={"avg": 812.5}, validation={"scores": {"avg": 790.0, "music": None}})
    record = JobRecord(status="ok", evaluation=ev)
    assert run.optimized(record, tmp_path, "avg") == 812.5
    assert run.optimized(record, tmp_path, "validation.avg") == 790.0
    assert run.optimized(record, tmp_path, "validation.music") is None  # not scored
    assert run.optimized(record, tmp_path, None) is None
    record.write(tmp_path / "results.json")  # a skipped job: the record already there
    assert run.optimized(None, tmp_path, "validation.avg") == 790.0
    check_values(composed("optimized_metric=validation.avg"))
    for bad in ("valid.avg", "validation.wer", "accuracy"):
        with pytest.raises(ValueError, match="optimized_metric="):
            check_values(composed(f"optimized_metric={bad}"))


def test_resume_needs_an_ok_result_of_the_same_config(tmp_path):
    config = {"seed": 0, "merge": {"alpha": 0.9}, "progress": True, "paths": {"cache": "x"}}
    assert not finished(tmp_path, config)
    write = (tmp_path / "results.json").write_text
    write(json.dumps({"status": "ok", "config": {**config, "progress": False, "paths": {}}}))
    assert finished(tmp_path, config)  # progress and paths do not change results
    assert not finished(tmp_path, {**config, "merge": {"alpha": 0.5}})
    write(json.dumps({"status": "failed", "config": config}))
    assert not finished(tmp_path, config)
    write("{not json")
    assert not finished(tmp_path, config)


def test_resume_notices_a_checkpoint_retrained_in_place(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"weights v1")
    (ckpt / "sub" / "config.json").write_text("{}")
    stamp = checkpoint_stamp([str(ckpt), "facebook/hubert-base-ls960", None])
    assert list(stamp) == [str(ckpt)]  # hub ids and unset paths are not stamped
    assert checkpoint_stamp([str(ckpt)]) == stamp
    config = {"pair": {"a": str(ckpt)}}
    out = tmp_path / "job"
    out.mkdir()
    (out / "results.json").write_text(
        json.dumps({"status": "ok", "config": config, "checkpoints": stamp})
    )
    assert finished(out, config, stamp)
    (ckpt / "model.safetensors").write_bytes(b"weights v2")
    assert not finished(out, config, checkpoint_stamp([str(ckpt)]))
    (ckpt / "model.safetensors").write_bytes(b"weights v1")
    (ckpt / "sub" / "config.json").rename(ckpt / "config.json")  # same bytes, another file
    assert not finished(out, config, checkpoint_stamp([str(ckpt)]))


def test_tracking_mode_and_failures_never_raise(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert tracking.wandb_mode({"mode": "offline"}) == "offline"
    assert tracking.wandb_mode({"mode": "online"}) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.wandb_mode({"mode": "online"}) == "disabled"
    assert tracking.log_job(JobRecord(status="ok"), tmp_path, {}, "g", "n", []) is None
    monkeypatch.setenv("WANDB_MODE", "offline")
    import wandb

    def broken(**_kwargs):
        raise RuntimeError("no service")

    monkeypatch.setattr(wandb, "init", broken)
    with caplog.at_level(logging.WARNING):
        assert tracking.log_job(JobRecord(status="ok"), tmp_path, {}, "g", "n", []) is None
    assert "no service" in caplog.text


def test_probe_cache_key_ignores_the_hardware(tmp_path):
    from eval.features import FbankUpstream
    from eval.probing import probe_task
    from eval.tasks import Task

    root = make_two_class_folder(tmp_path / "hum_vs_hiss", per_class=15)
    cfg = OmegaConf.create(
        {"batch_size": 8, "probe": {"hidden": 0, "lrs": [0.01], "epochs": 2, "batch_size": 32}}
    )
    task = Task("t", "t", "music", "utterance", "accuracy", None, 1.0)
    from eval.data import labelled_folder

    rows = labelled_folder(root)
    args = (FbankUpstream(16000), task, rows, cfg, tmp_path / "cache")
    first = probe_task(*args, trainer={"accelerator": "cpu", "devices": 1}, progress=False)
    other = {"accelerator": "gpu", "devices": 4, "strategy": "ddp_spawn", "precision": "16-mixed"}
    again = probe_task(*args, trainer=other, progress=False)
    assert (first["probe_cached"], again["probe_cached"]) == (False, True)
    assert again["value"] == first["value"]


# --- a real sweep: three jobs (one bad), W&B offline runs, resume, the table -------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runner")
    config = tiny_config()
    export(random_encoder(config, 0), root / "A")
    export(random_encoder(config, 1), root / "B")
    write_mixed_folder(root / "calib")
    make_two_class_folder(root / "task", per_class=12)
    return root


def sweep(world: Path) -> subprocess.CompletedProcess:
    """IDs 1, 5 and 9 at alpha 0.9: ID 1 (model A alone) must fail; 5 and 9 must succeed."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        **{f"WANDB_{k}_DIR": str(world / "wandb_home") for k in ("CONFIG", "CACHE", "DATA")},
    }
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "-m",
            "experiment=id1,id5,id9",
            "merge.alpha=0.9",
            "pair=local",
            f"pair.a={world / 'A'}",
            f"pair.b={world / 'B'}",
            "calibration=default",
            f"calibration.dirs=[{world / 'calib'}]",
            "calibration.size=3",
            "eval=folder",
            f"eval.root={world / 'task'}",
            "eval.domain=music",
            "eval.probe.epochs=3",
            "eval.probe.lrs=[0.01]",
            "logger=wandb",
            "save_merged=false",
            "progress=false",
            f"paths.cache={world / 'cache'}",
            f"hydra.sweep.dir={world / 'sweep'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def job_dirs(world: Path) -> dict[str, Path]:
    dirs = {}
    for d in (world / "sweep").iterdir():
        if d.is_dir():
            part = next(p for p in d.name.split(",") if p.startswith("experiment="))
            dirs[part.removeprefix("experiment=")] = d
    return dirs


@pytest.fixture(scope="module")
def swept(world) -> dict[str, Path]:
    done = sweep(world)  # id1 fails: the sweep runs the others, then exits non-zero
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert "merge.alpha=1.0" in done.stderr.splitlines()[-3]
    return job_dirs(world)


def results(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


def test_sweep_records_each_job_and_tracks_it_offline(swept):
    assert sorted(swept) == ["id1", "id5", "id9"]
    bad = results(swept["id1"])
    assert bad["status"] == "failed" and "merge.alpha=1.0" in bad["error"]
    for name in ("id5", "id9"):
        r = results(swept[name])
        assert r["status"] == "ok" and r["experiment_id"] == name
        assert r["evaluation"]["scores"]["music"] > 0
    assert results(swept["id5"])["config"]["permute"]["cnn"] is True
    assert results(swept["id9"])["config"]["permute"]["cnn"] is False
    for name, job in swept.items():  # every job its own offline run, failed ones too
        runs = list((job / "wandb").glob("offline-run-*/*.wandb"))
        assert len(runs) == 1, name
        data = runs[0].read_bytes()
        assert name.encode() in data
        if name != "id1":
            assert b"score/music" in data and b"task/task" in data and b"seconds/total" in data
            assert b"interval/music_lo" in data
            assert b"sources" in data and str(swept[name].parents[1] / "calib").encode() in data


def test_a_restarted_sweep_runs_only_the_missing_jobs(world, swept):
    mtime = {n: (j / "results.json").stat().st_mtime_ns for n, j in swept.items()}
    done = sweep(world)
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]  # id1 fails again
    log = done.stdout + done.stderr
    assert log.count("[run][INFO] - skipped") == 2
    for name in ("id5", "id9"):
        assert (swept[name] / "results.json").stat().st_mtime_ns == mtime[name]
    assert results(swept["id1"])["status"] == "failed"  # failed jobs are retried

    (swept["id9"] / "results.json").unlink()
    done = sweep(world)
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert (swept["id5"] / "results.json").stat().st_mtime_ns == mtime["id5"]
    assert results(swept["id9"])["status"] == "ok"
    assert len(list((swept["id9"] / "wandb").glob("offline-run-*"))) == 2


def test_table_from_the_sweep(world, swept):
    assert table.main([str(world / "sweep")]) == 0
    md = (world / "sweep" / "table.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| 1", "| 5", "| 9", "| fusion"]
    assert "failed" in rows[1] and "merge.alpha=1.0" in rows[1]
    assert "fnn_attn without CNN, alpha 0.9" in rows[3]
    assert "A + B layer fusion by weighted sum (2x compute)" in rows[4]
    assert "| 100.00 [100.0, 100.0] |" in rows[2]  # every number with its interval
    assert "paper" not in md  # not the paper's pair
    text = (world / "sweep" / "table.csv").read_text()
    assert text.count("\nmeasured,") == 3 and text.count("\nreference,fusion,") == 1
    assert "music_lo,music_hi" in text.splitlines()[0]
    assert (world / "sweep" / "table.png").stat().st_size > 5000
    # no ID 4 in this sweep: nothing to test against, and nothing marked
    assert (world / "sweep" / "significance.csv").read_text().count("\n") == 1


def test_table_puts_the_papers_numbers_beside_the_papers_pair(tmp_path):
    paper = table.paper_table()
    for n in (1, 5, 8):
        job = tmp_path / f"{n}_experiment=id{n}"
        job.mkdir()
        values = {k: paper[n][k] for k in ("ks", "esc50", "er")}
        record = {
            "status": "ok" if n != 8 else "failed",
            "error": "RuntimeError: out of memory" if n == 8 else None,
            "experiment_id": f"id{n}",
            "parent": "a" if n == 1 else None,
            "config": {
                "pair": {"name": "hubert_mert", "a": "facebook/hubert-base-ls960"},
                "permute": {"name": "fnn_attn", "cnn": True},
                "merge": {"method": "linear", "alpha": 0.9},
            },
            "evaluation": {
                "tasks": {k: {"value": v} for k, v in values.items()},
                "scores": {s: paper[n][s] for s in table.SCORES},
            },
        }
        (job / "results.json").write_text(json.dumps(record))
    paths = table.build(tmp_path)
    md = paths["md"].read_text()
    header = md.splitlines()[2]
    assert header.index("KS") < header.index("ER") < header.index("ESC-50")  # the paper's order
    assert "Avg (paper)" in header and "model A alone (hubert-base-ls960)" in md
    assert "| 5 | linear, fnn_attn, alpha 0.9 | 96.17 | 65.61 | 71.69 | 997.72" in md
    assert "out of memory" in md
    assert "The paper's Table I" in md
    lines = paths["csv"].read_text().splitlines()
    assert sum(line.startswith("paper,") for line in lines) == 9


def test_alpha_per_component_weighs_each_part_as_asked():
    from merging.combine import Linear

    a, b = (random_encoder(tiny_config(num_hidden_layers=3), s).model.state_dict() for s in (0, 1))
    merged = Linear({"default": 0.5, "cnn": 1.0, "layers": {"from": 1.0, "to": 0.0}}).combine(a, b)
    conv = "feature_extractor.conv_layers.0.conv.weight"
    assert torch.equal(merged[conv], a[conv])  # the CNN kept from A
    for i, w in enumerate((1.0, 0.5, 0.0)):  # a schedule over depth
        k = f"encoder.layers.{i}.feed_forward.intermediate_dense.weight"
        torch.testing.assert_close(merged[k], w * a[k] + (1 - w) * b[k])
    k = "encoder.pos_conv_embed.conv.bias"
    torch.testing.assert_close(merged[k], 0.5 * a[k] + 0.5 * b[k])
    norms = Linear({"default": 0.9, "norms": 0.0}).combine(a, b)
    assert torch.equal(
        norms["encoder.layers.1.layer_norm.weight"], b["encoder.layers.1.layer_norm.weight"]
    )
    for bad in ({"cnns": 1.0}, {"layers": [0.5, 2.0]}, {"layers": {"from": 1}}):
        with pytest.raises(ValueError, match="merge.alpha"):
            Linear(bad)
    with pytest.raises(ValueError, match="has 2 weights for 3 layers"):
        Linear({"layers": [0.5, 0.5]}).combine(a, b)
    cfg = composed("merge.alpha={default:0.9,cnn:1.0}")
    assert run.check_config(cfg)[1].weight(conv, 3) == 1.0  # one override from the command line


def test_the_job_record_round_trips_and_reads_partial_or_older_records(tmp_path):
    from report.record import Evaluation

    record = JobRecord(config={"seed": 0}, status="ok", evaluation=Evaluation(floor="majority"))
    record.extra["note"] = "kept"
    record.evaluation.extra["backend"] = "s3prl"
    path = record.write(tmp_path / "results.json")
    again = JobRecord.read(path)
    assert again == record and json.loads(path.read_text())["note"] == "kept"
    old = JobRecord.from_dict(
        {"status": "failed", "alignment": None, "evaluation": {"tasks": None}}
    )
    assert old.alignment == [] and old.evaluation.tasks == {} and old.config == {}
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="does not hold a job record"):
        JobRecord.read(tmp_path / "list.json")
