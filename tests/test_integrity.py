"""Nothing stale, nothing mixed, nothing lost: each defect a careful user found, reproduced.

1. code edits anywhere a result comes from rerun a finished job;
2. a real-use job calibrates on the user's folders only;
3. a forward-relevant config change recomputes every cache, and is refused as a merge;
4. one live job per dir, and resume checks the outputs are still there;
5. a failure found before any work leaves an ok record and its outputs as they were;
6. every bad value fails before any forward pass, naming its key;
7. damaged caches, interrupts, vanished classes, orphaned workers, an output dir that is a file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from eval.data import labelled_folder
from eval.probing import probe_task
from report.jobdir import hold
from tests.test_eval import LOGMEL
from tests.test_faults import CFG, ENV, ROOT, TASK, job


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, env={**ENV, **env}, capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def skipped(done: subprocess.CompletedProcess) -> bool:
    return "[run][INFO] - skipped" in done.stdout + done.stderr


# --- 1. one code identity over every file a result can come from ---------------------------


def test_an_edit_to_a_merger_matcher_family_or_the_s3prl_bridge_reruns_a_finished_job(
    pair, tmp_path
):
    """A copy of the project, so that its files can be edited: each edit reruns the job."""
    repo = tmp_path / "repo"
    for part in ("merging", "eval", "report", "conf", "demo"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("run.py", "checks.py"):
        shutil.copy(ROOT / part, repo / part)
    cmd = [sys.executable, str(repo / "run.py"), *job(pair, tmp_path / "J", 0.9, "eval=none")[2:]]
    env = {"PYTHONPATH": str(repo)}
    first = run(cmd, **env)
    assert first.returncode == 0 and not skipped(first), first.stderr[-2000:]
    assert skipped(run(cmd, **env))
    for edited in (
        "merging/mergers/repair.py",
        "merging/matchers/sinkhorn.py",
        "merging/families/wavlm.py",
        "eval/s3prl/launch.py",
    ):
        with (repo / edited).open("a") as f:
            f.write("\n# edited\n")
        done = run(cmd, **env)
        assert done.returncode == 0 and not skipped(done), (edited, done.stderr[-2000:])
    (repo / "report" / "table.py").write_text("# reports do not change results\n")
    assert skipped(run(cmd, **env))


def test_cache_keys_cover_the_modules_they_import_and_the_family_adapters():
    from merging.calibrate import family_modules
    from merging.identity import source_closure
    from tests.helpers import random_encoder, tiny_config

    features = {m for m, _ in source_closure("eval.features")}
    assert {"eval.features", "merging.forward", "merging.audio", "merging.identity"} <= features
    probes = {m for m, _ in source_closure("eval.probing")}
    assert {"eval.probe", "eval.ctc", "eval.features"} <= probes  # recursively
    wavlm = random_encoder(tiny_config("wavlm"), 0)
    calibration = {m for m, _ in source_closure("merging.calibrate", *family_modules(wavlm))}
    assert "merging.families.wavlm" in calibration  # its calibration points
    assert "merging.matchers.sinkhorn" not in calibration  # a matcher never recalibrates


# --- 2. calibration from the user's folders only -------------------------------------------


def clips_folder(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    rate = 16000
    t = np.arange(rate) / rate
    for i in range(n):
        sf.write(root / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)), rate)
    return root


def test_the_readme_real_use_command_calibrates_on_the_users_folder_only(pair, tmp_path):
    folder = clips_folder(tmp_path / "mine", 8)
    out, cache = tmp_path / "J", tmp_path / "cache"
    readme = [  # the README's real-use command, on the test pair
        "pair=local", f"pair.a={pair / 'A'}", f"pair.b={pair / 'B'}", "permute=fnn_attn",
        "merge.alpha=0.9", f"calibration.dirs=[{folder}]", "calibration.size=16", "eval=none",
        f"hydra.run.dir={out}", f"paths.cache={cache}", "logger=none", "progress=false",
    ]  # fmt: skip
    done = run([sys.executable, str(ROOT / "run.py"), *readme])
    assert done.returncode == 0, done.stderr[-2000:]
    cal = json.loads((out / "results.json").read_text())["calibration"]
    assert cal["clips"] == 8 and cal["requested"] == 16
    assert cal["sources"] == {str(folder): {"clips": 8, "seconds": pytest.approx(8.0)}}
    assert not (cache / "demo").exists()  # the demo suite is not built for it
    card = (out / "merged" / "README.md").read_text()
    assert f"`{folder}`: 8 clips, 8 s" in card

    no_dirs = [a for a in readme if not a.startswith("calibration.dirs")]
    done = run([sys.executable, str(ROOT / "run.py"), *no_dirs, f"hydra.run.dir={tmp_path}/N"])
    assert done.returncode == 2 and "calibration.dirs is empty" in done.stdout + done.stderr
    synthetic = [*no_dirs, "calibration=synthetic", f"hydra.run.dir={tmp_path}/S"]
    assert run([sys.executable, str(ROOT / "run.py"), *synthetic]).returncode == 0
    record = json.loads((tmp_path / "S" / "results.json").read_text())
    assert list(record["calibration"]["sources"]) == ["synthetic"]


# --- 3. what changes a forward pass changes every key ---------------------------------------


def with_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **changes}))
    return dst


def test_a_layer_norm_eps_change_recomputes_every_cache_and_is_no_merge(pair, tmp_path):
    from merging.load import EncoderLoadError, check_mergeable, load_encoder

    eps = {"layer_norm_eps": 0.5}
    a2, b2 = (
        with_config(pair / "A", tmp_path / "A", **eps),
        with_config(pair / "B", tmp_path / "B", **eps),
    )
    task = ("eval=folder", f"eval.root={pair / 'task'}", "eval.probe.epochs=2")
    cache = f"paths.cache={tmp_path / 'cache'}"
    first = run(job(pair, tmp_path / "J1", 0.9, *task, cache))
    assert first.returncode == 0, first.stderr[-2000:]
    again = run(job(pair, tmp_path / "J2", 0.9, *task, cache, f"pair.a={a2}", f"pair.b={b2}"))
    assert again.returncode == 0, again.stderr[-2000:]
    record = json.loads((tmp_path / "J2" / "results.json").read_text())
    assert record["calibration"]["cached"] is False
    for upstream in ("merged", "a", "b"):
        assert not any(record["evaluation"]["probe_cached"][upstream].values()), upstream
    with pytest.raises(EncoderLoadError, match="layer_norm_eps: 1e-05 vs 0.5"):
        check_mergeable(load_encoder(pair / "A"), load_encoder(b2))


# --- 4. one live job per dir; outputs verified on resume --------------------------------------


def test_a_second_live_job_in_the_same_dir_is_refused(pair, tmp_path):
    out = tmp_path / "J"
    cmd = job(pair, out, 0.9, "eval=none")
    assert run(cmd).returncode == 0
    before = (out / "results.json").read_bytes()
    with hold(out):  # a live job holds the dir
        done = run([*cmd, "merge.alpha=0.5"])
    log = done.stdout + done.stderr
    assert done.returncode == 2 and f"pid {os.getpid()}" in log and "in use" in log
    assert (out / "results.json").read_bytes() == before
    assert skipped(run(cmd))  # the lock went with its holder


@pytest.mark.parametrize("damage", ["deleted", "replaced"])
def test_a_missing_or_different_merged_checkpoint_reruns_the_job(pair, tmp_path, damage):
    out = tmp_path / "J"
    cmd = job(pair, out, 0.9, "eval=none")
    assert run(cmd).returncode == 0
    weights = (out / "merged" / "model.safetensors").read_bytes()
    if damage == "deleted":
        shutil.rmtree(out / "merged")
    else:
        (out / "merged" / "model.safetensors").write_bytes(weights[:-8] + b"\0" * 8)
    done = run(cmd)
    assert done.returncode == 0 and not skipped(done)
    assert (out / "merged" / "model.safetensors").read_bytes() == weights


# --- 5. a failure found before any work loses nothing ------------------------------------------


def test_a_missing_root_on_restart_leaves_the_ok_records_and_merged_untouched(pair, tmp_path):
    task = tmp_path / "task"
    shutil.copytree(pair / "task", task)
    base = job(pair, tmp_path / "unused", 0.9, "eval=folder", f"eval.root={task}",
               "eval.probe.epochs=2")  # fmt: skip
    sweep = [*base[:2], "-m", *base[2:], "merge.alpha=0.9,0.5", f"hydra.sweep.dir={tmp_path}/sweep"]
    sweep = [a for a in sweep if not a.startswith("hydra.run.dir")]
    assert run(sweep).returncode == 0
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2

    def state(j: Path) -> tuple[bytes, bytes]:
        return (j / "results.json").read_bytes(), (j / "merged/model.safetensors").read_bytes()

    before = [state(j) for j in jobs]
    task.rename(tmp_path / "unmounted")
    done = run(sweep)
    assert done.returncode == 1, done.stderr[-2000:]  # the sweep says it failed
    for j, kept in zip(jobs, before, strict=True):
        assert state(j) == kept
        refused = json.loads((j / "results.failed.json").read_text())
        assert "does not exist" in refused["error"] and str(task) in refused["error"]
    (tmp_path / "unmounted").rename(task)
    again = run(sweep)  # the disk is back: nothing to redo
    assert again.returncode == 0 and (again.stdout + again.stderr).count("skipped") == 2

    single = job(pair, tmp_path / "S", 0.9, "eval=none")
    assert run(single).returncode == 0
    kept = state(tmp_path / "S")
    typo = run([*single, "merge.alpha=1.5"])
    assert typo.returncode == 2 and state(tmp_path / "S") == kept
    assert "merge.alpha" in json.loads((tmp_path / "S/results.failed.json").read_text())["error"]
    assert run([*single, "merge.alpha=0.5"]).returncode == 0  # a real rerun clears the refusal
    assert not (tmp_path / "S/results.failed.json").exists()


# --- 6. every value checked before any forward pass ------------------------------------------

BAD_VALUES = {  # override -> what the message must say
    "permute.cnn=no": "permute.cnn must be true or false, got 'no'",
    "permute.ffn=1": "permute.ffn must be true or false, got 1",
    "permute.res=maybe": "permute.res must be true or false",
    "eval.probe.epochs=0": "eval.probe.epochs must be an integer >= 1, got 0",
    "eval.probe.epochs=-1": "eval.probe.epochs must be an integer >= 1, got -1",
    "+calibration.sise=4": "calibration.sise is not a key of calibration",
    "eval.probe.lrs=[]": "eval.probe.lrs must be a non-empty list",
    "eval.probe.lrs=[0.01,-1]": "eval.probe.lrs must hold numbers > 0",
    "eval.probe.batch_size=0": "eval.probe.batch_size must be an integer >= 1, got 0",
    "eval.batch_size=0": "eval.batch_size must be an integer >= 1, got 0",
    "eval.max_seconds=0": "eval.max_seconds must be a number > 0, got 0",
    "calibration.max_seconds=0": "calibration.max_seconds must be a number > 0, got 0",
    "calibration.batch_size=0": "calibration.batch_size must be an integer >= 1, got 0",
    "heatmaps=[bogus]": "heatmaps: no group ['bogus']",
    "merge.alpha={layers:[0.5,0.5,0.5]}": "merge.alpha.layers has 3 weights for 2 layers",
    "DUPLICATE": "is the same folder as",
    "paths.cache=FILE": "paths.cache: cannot write to",
    "trainer.devices=2": "'auto' would start run.py again on every rank",
}


def test_each_bad_value_fails_before_any_forward_pass_naming_its_key(pair, tmp_path):
    (tmp_path / "file").write_text("")
    # any forward pass of an encoder kills the job: a bad value must be found before it
    killer = [
        sys.executable,
        str(ROOT / "tests" / "killed_run.py"),
        "merging.forward:encode:1:before",
    ]
    task = ("eval=folder", f"eval.root={pair / 'task'}")

    def refused(i: int, override: str) -> tuple[int, str]:
        extra = {
            "DUPLICATE": f"calibration.dirs=[{pair / 'calib'},{pair / 'calib'}/]",
            "paths.cache=FILE": f"paths.cache={tmp_path / 'file'}",
        }.get(override, override)
        done = run([*killer, *job(pair, tmp_path / f"job{i}", 0.9, *task, extra)[2:]])
        return done.returncode, done.stdout + done.stderr

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as jobs:  # independent processes
        results = list(jobs.map(refused, range(len(BAD_VALUES)), BAD_VALUES))
    for (override, message), (code, log) in zip(BAD_VALUES.items(), results, strict=True):
        assert code == 2 and message in log, (override, log[-1500:])


# --- 7. robust caches and lifecycle ------------------------------------------------------------


def test_a_probe_cache_entry_of_the_wrong_shape_is_damaged(tmp_path, caplog):
    from tests.test_eval import make_two_class_folder

    rows = labelled_folder(make_two_class_folder(tmp_path / "task", per_class=10))
    first = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    (entry,) = (tmp_path / "probes").iterdir()
    entry.write_text("{}")  # valid JSON, no result in it
    with caplog.at_level(logging.WARNING):
        again = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    assert f"damaged cache entry {entry}" in caplog.text and "lacks" in caplog.text
    assert not again["probe_cached"] and again["value"] == first["value"]
    assert json.loads(entry.read_text())["value"] == first["value"]  # written anew


def test_a_class_whose_files_are_all_unreadable_is_an_error_naming_it(tmp_path):
    from tests.test_eval import make_two_class_folder

    root = make_two_class_folder(tmp_path / "task", per_class=8)
    for f in (root / "hiss").iterdir():
        f.write_bytes(b"RIFF broken")
    rows = labelled_folder(root)
    with pytest.raises(ValueError, match="task 't': no usable file in class 'hiss'"):
        probe_task(LOGMEL, TASK, rows, CFG, None, progress=False)
    ok = labelled_folder(make_two_class_folder(tmp_path / "fine", per_class=8))
    out = probe_task(LOGMEL, TASK, ok, CFG, None, progress=False)
    assert out["skipped_files"] == [str(tmp_path / "fine" / "hum" / "corrupt.wav")]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_during_probe_training_is_recorded_as_interrupted(pair, tmp_path, sig):
    out = tmp_path / "J"
    during_training = "torch.nn.functional:cross_entropy:3:before"  # inside Lightning's fit
    killer = [sys.executable, str(ROOT / "tests" / "killed_run.py"), during_training]
    own_cache = f"paths.cache={tmp_path / 'cache'}"  # earlier tests' probes must not spare training
    cmd = job(pair, out, 0.9, "eval=folder", f"eval.root={pair / 'task'}", own_cache)[2:]
    done = run([*killer, *cmd], KILL_SIGNAL=sig)
    assert done.returncode != 0
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"


def test_killing_a_joblib_sweep_stops_its_workers(pair, tmp_path):
    sweep = tmp_path / "sweep"
    base = job(pair, tmp_path / "unused", 0.9, "eval=folder", f"eval.root={pair / 'task'}",
               "eval.probe.epochs=100000")  # fmt: skip
    cmd = [*base[:2], "-m", *base[2:], "merge.alpha=0.9,0.5", "hydra/launcher=joblib",
           "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    cmd = [a for a in cmd if not a.startswith("hydra.run.dir")]
    main = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def records() -> list[str]:
        return [json.loads(p.read_text())["status"] for p in sweep.glob("*/results.json")]

    deadline = time.time() + 120
    while time.time() < deadline and records().count("running") < 2:
        time.sleep(0.2)  # both jobs at work
    assert records().count("running") == 2
    loky = worker_pids(main.pid)
    assert len(loky) == 2
    main.send_signal(signal.SIGKILL)
    main.wait()
    deadline = time.time() + 60
    while time.time() < deadline and any(alive(p) for p in loky):
        time.sleep(0.5)
    assert not any(alive(p) for p in loky)  # no orphan trains on
    assert records() == ["interrupted", "interrupted"]


def worker_pids(parent: int) -> list[int]:
    ps = subprocess.run(
        ["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True
    ).stdout
    rows = [line.split(None, 2) for line in ps.splitlines()[1:]]
    return [int(p) for p, pp, args in rows if int(pp) == parent and "LokyProcess" in args]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_output_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "out").write_text("")
    for args in (
        [f"hydra.run.dir={tmp_path / 'out'}"],
        ["-m", f"hydra.sweep.dir={tmp_path / 'out'}"],
    ):
        done = run([sys.executable, str(ROOT / "run.py"), *args])
        assert done.returncode == 2
        assert f"the output dir {tmp_path / 'out'} is a file" in done.stderr
        assert "Traceback" not in done.stderr


# --- provenance --------------------------------------------------------------------------------


def test_the_merged_checkpoint_carries_a_model_card(pair, tmp_path):
    out = tmp_path / "J"
    assert run(job(pair, out, 0.9, "eval=none", "merge=repair")).returncode == 0
    card = (out / "merged" / "README.md").read_text()
    front, body = card.split("---\n")[1:3]
    assert "tags:\n- merge\n" in front
    assert f'base_model:\n- "{pair / "A"}"\n- "{pair / "B"}"' in front
    record = json.loads((out / "results.json").read_text())
    for part in (
        "| permutation scope | fnn_attn |",
        "| matcher | exact |",
        '"method": "repair"',
        f"`{pair / 'calib'}`: 3 clips",
        f"`{record['code']}`",
        "HubertModel.from_pretrained",
    ):
        assert part in body, part
