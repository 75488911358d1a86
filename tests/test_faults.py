"""Nothing silently wrong: caches that see labels, and damaged cache entries that heal."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from eval.data import Example, labelled_folder
from eval.probing import probe_task
from eval.tasks import Task
from tests.helpers import local_job
from tests.test_eval import LOGMEL, make_two_class_folder

CFG = OmegaConf.create(
    {
        "batch_size": 8,
        "probe": {"hidden": 0, "lrs": [0.01], "epochs": 8, "batch_size": 32, "seeds": [0]},
    }
)
ROOT = Path(__file__).resolve().parents[1]
TASK = Task("t", "t", "music", "utterance", "accuracy", None, 1.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_two_class_folder(tmp_path_factory.mktemp("faults") / "task", per_class=15)


def test_relabelling_or_editing_a_dataset_reruns_its_probe(folder, tmp_path):
    import shutil

    rows = labelled_folder(shutil.copytree(folder, tmp_path / "task"))
    first = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    assert first["value"] > 90
    again = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    assert again["probe_cached"]
    labels = [e.label for e in rows]
    random.Random(0).shuffle(labels)  # the same files, other labels: the old 100% is wrong
    shuffled = [Example(e.path, y, e.split) for e, y in zip(rows, labels, strict=True)]
    out = probe_task(LOGMEL, TASK, shuffled, CFG, tmp_path, progress=False)
    assert not out["probe_cached"] and out["features_cached"]  # features do not see labels
    assert out["value"] < first["value"]
    swap = {"train": "test", "test": "train", "valid": "valid"}
    resplit = [Example(e.path, e.label, swap[e.split]) for e in rows]
    assert not probe_task(LOGMEL, TASK, resplit, CFG, tmp_path, progress=False)["probe_cached"]
    edited = Path(rows[0].path)  # one clip's audio changed: the features are extracted anew
    edited.write_bytes(edited.read_bytes()[:-64])
    out = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    assert not out["features_cached"] and not out["probe_cached"]


@pytest.mark.parametrize("kind", ["probes", "features"])
def test_a_damaged_cache_entry_is_named_removed_and_recomputed(folder, tmp_path, caplog, kind):
    rows = labelled_folder(folder)
    first = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    (entry,) = (tmp_path / kind).iterdir()
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # truncated
    if kind == "features":  # the probe result must not hide the damaged features
        for p in (tmp_path / "probes").iterdir():
            p.unlink()
    with caplog.at_level(logging.WARNING):
        again = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    assert f"damaged cache entry {entry}" in caplog.text
    assert not again[f"{'probe' if kind == 'probes' else 'features'}_cached"]
    assert again["value"] == first["value"] and again["test"] == first["test"]
    assert entry.is_file()  # written anew


# --- a job dir never holds an ok record beside another job's weights ---------------------------


def job(pair, out, alpha, *extra):
    return [
        sys.executable,
        str(ROOT / "run.py"),
        *local_job(pair, out, f"merge.alpha={alpha}", *extra),
    ]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def start_until(cmd: list[str], ready, seconds: float = 240) -> subprocess.Popen:
    """Start a job and return once ``ready()`` holds (or the job ended, or time ran out)."""
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + seconds
    while time.time() < deadline and p.poll() is None and not ready():
        time.sleep(0.05)
    return p


def test_a_job_killed_after_export_leaves_no_ok_record_beside_its_weights(pair, tmp_path):
    out = tmp_path / "D"
    x = job(pair, out, 0.9, "eval=none")
    subprocess.run(x, env=ENV, check=True, capture_output=True, timeout=300)
    alpha = lambda: json.loads((out / "merged" / "merge.json").read_text())["alpha"]  # noqa: E731
    assert alpha() == 0.9
    slow_eval = ("eval=folder", f"eval.root={pair / 'task'}", "eval.probe.epochs=30")

    def exported() -> bool:
        try:
            return alpha() == 0.5
        except (OSError, ValueError):
            return False

    y = start_until(job(pair, out, 0.5, *slow_eval), exported)
    y.send_signal(signal.SIGKILL)
    y.wait()
    record = json.loads((out / "results.json").read_text())
    assert record["status"] == "running" and record["config"]["merge"]["alpha"] == 0.5
    assert not list(out.glob("merged.*"))  # no half-written checkpoint beside it
    done = subprocess.run(x, env=ENV, capture_output=True, text=True, timeout=300)
    assert "skipped" not in done.stdout + done.stderr  # Y's claim: X is not taken as done
    assert json.loads((out / "results.json").read_text())["status"] == "ok"
    assert alpha() == 0.9


def test_sigterm_is_recorded_as_interrupted(pair, tmp_path):
    out = tmp_path / "T"
    slow_eval = ("eval=folder", f"eval.root={pair / 'task'}", "eval.probe.epochs=200")
    p = start_until(job(pair, out, 0.9, *slow_eval), (out / "merged" / "merge.json").is_file)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"


# --- validation before the expensive work --------------------------------------------------


def test_bad_values_fail_before_any_forward_pass_naming_what_to_fix(tmp_path):
    import run
    from eval.evaluate import check_suite
    from merging.load import EncoderLoadError, load_encoder
    from merging.merge import export
    from tests.helpers import random_encoder, tiny_config
    from tests.test_runner import composed

    for alpha in ("abc", 1.5, True):
        with pytest.raises(
            ValueError, match=f"merge.alpha must be a number in \\[0, 1\\].*{alpha!r}"
        ):
            run.check_config(composed(f"merge.alpha={alpha}"))
    with pytest.raises(ValueError, match="calibration.size must be a non-negative integer"):
        run.check_config(composed("calibration.size=-1"))
    with pytest.raises(ValueError, match="match=exact matches on calibration statistics"):
        run.check_config(composed("calibration.size=0"))

    one_class = [Example(f"/d/x{i}.wav", "x", ("train", "test")[i % 2]) for i in range(6)]
    with pytest.raises(ValueError, match="task 't' has one class \\('x'\\) in 6 clips"):
        check_suite([(TASK, one_class)])
    no_test = [Example(f"/d/x{i}.wav", "xy"[i % 2], "train") for i in range(6)]
    with pytest.raises(ValueError, match="task 't' needs train and test clips"):
        check_suite([(TASK, no_test)])

    enc = random_encoder(tiny_config(), 0)
    with torch.no_grad():
        enc.model.encoder.layers[1].feed_forward.output_dense.weight[3, 2] = float("nan")
    export(enc, tmp_path / "nan")
    with pytest.raises(EncoderLoadError, match="encoder.layers.1.feed_forward.output_dense.weight"):
        load_encoder(tmp_path / "nan")


def test_inputs_that_would_be_silently_wrong_are_named(tmp_path, caplog):
    from eval.data import labelled_folder
    from merging.audio import AudioError, calibration_clips
    from merging.files import write_atomically
    from merging.load import EncoderLoadError, load_encoder
    from merging.merge import export
    from tests.helpers import random_encoder, tiny_config
    from tests.test_audio import write_mixed_folder

    root = make_two_class_folder(tmp_path / "task", per_class=3)
    (root / "loop").symlink_to(root, target_is_directory=True)  # every clip again, as "loop"
    with pytest.raises(AudioError, match="is the same file as"):
        labelled_folder(root)

    folder = write_mixed_folder(tmp_path / "calib")
    with caplog.at_level(logging.WARNING):
        clips, skipped = calibration_clips([folder], 1000, 16000, 1.0, 0)
    assert f"calibration.size=1000 but only {len(clips)} usable clips" in caplog.text
    assert skipped and all(Path(s).parent == folder for s in skipped)  # named, not counted

    ckpt = export(random_encoder(tiny_config(), 0), tmp_path / "A")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(
        EncoderLoadError, match=f"could not load {ckpt} \\(weights: model.safetensors\\)"
    ):
        load_encoder(ckpt)
    (ckpt / "config.json").write_text('{"model_type": "hub')
    with pytest.raises(EncoderLoadError, match=f"{ckpt / 'config.json'} is not readable JSON"):
        load_encoder(ckpt)

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: a missing dir instead
            locked = tmp_path / "file-not-dir"
            locked.write_text("")
        with pytest.raises(OSError, match=f"could not write {locked / 'results.json'}"):
            write_atomically(locked / "results.json", lambda tmp: tmp.write_text("{}"))
        assert not list(tmp_path.glob("**/results.json.tmp*"))
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_code_changes_reach_resume_and_every_cache_key(tmp_path, monkeypatch):
    from eval import features
    from report.results import code_stamp, finished

    for rel in ("run.py", "merging/spec.py", "eval/probe.py", "report/table.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    before = code_stamp(tmp_path)
    (tmp_path / "report/table.py").write_text("# reports do not change results\n")
    assert code_stamp(tmp_path) == before
    (tmp_path / "eval/probe.py").write_text("# another probe\n")
    assert code_stamp(tmp_path) != before

    out = tmp_path / "job"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"status": "ok", "config": {}, "code": before}))
    assert finished(out, {}, None, before) and not finished(out, {}, None, "other")

    rows = [Example(str(tmp_path / "run.py"), "x", "test")]
    key = features.dataset_key(LOGMEL, rows, 1.0)
    monkeypatch.setattr(features, "source_digest", lambda *m: "changed")
    assert features.dataset_key(LOGMEL, rows, 1.0) != key


def test_changed_data_reruns_a_job_a_restart_would_skip(pair, tmp_path):
    import shutil

    task = tmp_path / "task"
    shutil.copytree(pair / "task", task)
    out = tmp_path / "J"
    cmd = job(pair, out, 0.9, "eval=folder", f"eval.root={task}", "eval.probe.epochs=2")
    runs = [subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)]
    runs.append(subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300))
    moved = next((task / "hum").glob("h00*.wav"))
    moved.rename(task / "hiss" / moved.name)  # one clip relabelled
    runs.append(subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300))
    logs = [r.stdout + r.stderr for r in runs]
    assert all(r.returncode == 0 for r in runs), logs[-1][-2000:]
    assert ["skipped" in log for log in logs] == [False, True, False]
    assert json.loads((out / "results.json").read_text())["status"] == "ok"


# --- a job killed anywhere, restarted, ends as if it had never been killed --------------------

KILL_POINTS = {  # MODULE:NAME:N:WHEN[:PATH_PART], see tests/killed_run.py
    "during calibration": "merging.calibrate:_accumulate_batch:2:before",
    "after export": "merging.merge:export:1:after",
    "writing a probe result": "os:replace:1:before:/probes/",
    "during evaluation": "eval.probe:fit_probes:3:before",
    "writing the final record": "os:replace:2:before:results.json",
}
TIMINGS = ("seconds", "cached", "reused", "rss_mb")  # key endings: timings, cache hits, memory


def comparable_record(out: Path) -> dict:
    """results.json without what legitimately differs between two runs: timings, cache hits
    and the job's own paths (its dir, and its cache beside it)."""
    text = (out / "results.json").read_text().replace(str(out), "JOB")

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if not k.endswith(TIMINGS)}
        return [strip(x) for x in v] if isinstance(v, list) else v

    return strip(json.loads(text))


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file below ``root``: its bytes for the weights, else only its name."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.suffix == ".safetensors" else None
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "run.log"  # the job's log: appended to by each start
    }


def test_a_job_killed_anywhere_and_restarted_matches_an_uninterrupted_run(pair, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def cmd(name: str) -> list[str]:
        return job(
            pair, tmp_path / name, 0.5, "eval=folder", f"eval.root={pair / 'task'}",
            "eval.probe.epochs=2", "eval.probe.seeds=[0]", "calibration.batch_size=1",
            f"paths.cache={tmp_path / name}-cache",
        )  # fmt: skip

    def run_(args: list[str], expect: int = 0) -> None:
        r = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == expect, (r.stdout + r.stderr)[-3000:]

    def killed_and_restarted(point: str) -> str:
        name = point.replace(" ", "-")
        killer = [sys.executable, str(ROOT / "tests" / "killed_run.py"), KILL_POINTS[point]]
        run_(killer + cmd(name)[2:], expect=-signal.SIGKILL)
        assert json.loads((tmp_path / name / "results.json").read_text())["status"] == "running"
        run_(cmd(name))
        return name

    with ThreadPoolExecutor(2) as pool:  # the jobs are subprocesses: two at a time
        names = dict(zip(KILL_POINTS, pool.map(killed_and_restarted, KILL_POINTS), strict=True))
        run_(cmd("ref"))  # uninterrupted
    ref = tmp_path / "ref"
    for point, name in names.items():
        out = tmp_path / name
        assert comparable_record(out) == comparable_record(ref), point
        assert tree(out) == tree(ref), point  # same files, same weights, nothing half-written
        assert tree(Path(f"{out}-cache")) == tree(Path(f"{ref}-cache")), point

    before = comparable_record(ref)
    run_([*cmd("ref"), "resume=false"])  # unchanged: every stage is served from the caches
    record = json.loads((ref / "results.json").read_text())
    probes = record["evaluation"]["probe_cached"]
    assert set(probes) == {"merged", "a", "b", "fbank", "fusion"}
    assert record["calibration"]["cached"] and all(all(v.values()) for v in probes.values())
    assert comparable_record(ref)["evaluation"] == before["evaluation"]
