"""The demo suite: reproducible to the byte, complete splits, held-out material really held out."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from demo import music, speech
from demo.suite import TASKS, build_suite, is_complete
from merging.merge import export
from tests.helpers import local_job, random_encoder, run_py, tiny_config

ROOT = Path(__file__).resolve().parents[1]

SCALE = 0.05


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.suffix in (".wav", ".csv")
    }


def _manifest(root: Path, task: str) -> list[dict[str, str]]:
    with open(root / task / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _content(path: Path) -> str:
    data, _ = sf.read(str(path), dtype="int16")
    return hashlib.sha256(data.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """Two builds; the second starts from a copy of the first that looks interrupted."""
    base = tmp_path_factory.mktemp("demo")
    a = build_suite(base / "a", progress=False, scale=SCALE)
    b = base / "b"
    shutil.copytree(a, b)
    (b / "suite.json").unlink()  # as if the build had stopped before its last step
    (b / "ks" / "manifest.csv").write_text("path,label\n")
    (b / "ks" / "train" / "00000.wav").write_bytes(b"half a file")
    assert not is_complete(b, SCALE)
    assert build_suite(b, progress=False, scale=SCALE) == b
    return a, b


def test_two_builds_are_byte_identical(built):
    a, b = built
    fa, fb = _files(a), _files(b)
    assert len(fa) > 400 and fa.keys() == fb.keys()
    different = [k for k in fa if fa[k] != fb[k]]
    assert not different, different[:5]
    ja, jb = (json.loads((r / "suite.json").read_text()) for r in built)
    ja.pop("build_seconds"), jb.pop("build_seconds")
    assert ja == jb


def test_every_task_has_its_splits_and_all_classes(built):
    root = built[0]
    meta = json.loads((root / "suite.json").read_text())
    for task, spec in TASKS.items():
        rows = _manifest(root, task)
        classes = {r["label"] for r in rows}
        assert len(classes) >= 4, task
        assert sorted(meta["parts"][task]["classes"]) == sorted(classes)
        splits = (
            ("train", "valid", "test")
            if spec.kind == "utterance"
            else tuple(f"fold{k}" for k in range(1, 6))
        )
        assert {r["split"] for r in rows} == set(splits), task
        for split in splits if spec.kind == "kfold" else ("train",):
            assert {r["label"] for r in rows if r["split"] == split} == classes, (task, split)
        for r in rows:
            wav = root / task / r["path"]
            info = sf.info(str(wav))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.duration <= spec.max_seconds + 1e-3, (task, r["path"])


@pytest.mark.parametrize("task", ["ks", "ic", "instcls", "pitchid"])
def test_test_voices_and_programs_are_unseen_in_training(built, task):
    rows = _manifest(built[0], task)
    groups = {
        s: {r["group"] for r in rows if r["split"] == s} - {"noise"} for s in ("train", "test")
    }
    assert groups["test"] and groups["train"]
    assert not groups["test"] & groups["train"]


def test_calibration_and_pretraining_share_no_clip_with_probes(built):
    root = built[0]
    probe = {_content(p) for task in TASKS for p in (root / task).rglob("*.wav")}
    other = [*(root / "calibration").glob("*.wav"), *(root / "pretrain").rglob("*.wav")]
    assert {p.parent.name for p in other} == {"calibration", "speech", "music"}
    assert not probe & {_content(p) for p in other}


def test_complete_root_is_a_no_op(built):
    root = built[0]
    before = (root / "suite.json").stat().st_mtime_ns
    start = time.perf_counter()
    assert build_suite(root, progress=False, scale=SCALE) == root
    assert time.perf_counter() - start < 1.0
    assert (root / "suite.json").stat().st_mtime_ns == before
    assert not is_complete(root, scale=1.0)  # another scale is another build


def test_interrupted_build_is_redone(built):
    root = built[1]
    assert is_complete(root, SCALE)
    assert (root / "ks" / "manifest.csv").read_text().startswith("path,label,split,group\n")
    assert sf.info(str(root / "ks" / "train" / "00000.wav")).frames == 16000


def test_foreign_folder_is_not_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_suite(tmp_path, progress=False, scale=SCALE)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_espeak_is_deterministic_and_voices_differ():
    v = speech.Voice("en-us+f2", rate=150, pitch=60)
    first = speech.synthesize("turn on the lights", v)
    speech.synthesize("something else in between", speech.Voice("de+m3"))
    again = speech.synthesize("turn on the lights", v)
    assert first.dtype == np.float32 and first.size > 8000 and np.abs(first).max() > 0.05
    assert np.array_equal(first, again)
    other = speech.synthesize("turn on the lights", speech.Voice("en-us+m3", rate=150, pitch=60))
    assert other.shape != first.shape or not np.allclose(other, first)


def test_espeak_breath_noise_does_not_follow_the_clock():
    v = speech.Voice("en+whisper")  # breath noise: eSpeak seeds its generator from time()
    first = speech.synthesize_native("quiet please", v)
    time.sleep(1.05)
    assert np.array_equal(first, speech.synthesize_native("quiet please", v))


def test_espeak_unknown_voice_is_a_clear_error():
    with pytest.raises(speech.SpeechError, match="no voice"):
        speech.synthesize("hello", speech.Voice("xx+nobody"))


@pytest.mark.parametrize("key", [57, 69])
def test_soundfont_note_has_its_pitch(key):
    wave = music.render_note(program=0, key=key, velocity=0.8, hold=0.8, seconds=1.0)
    assert np.abs(wave).max() > 0.01
    f = music.dominant_frequency(wave[800:12800])
    assert abs(12 * np.log2(f / music.midi_to_hz(key))) < 1.0
    assert np.array_equal(wave, music.render_note(0, key, 0.8, 0.8, 1.0))


def test_run_scores_a_merge_on_the_demo_suite(built, tmp_path):
    """run.py with eval=demo end to end (on the small build): per-task metrics, the parents',
    FBANK's and the layer fusion's references, the floors, and both domain scores."""
    root, _ = built
    for name, seed in (("A", 0), ("B", 1)):
        export(random_encoder(tiny_config(), seed), tmp_path / name)
    out = tmp_path / "job"
    done = run_py(
        *local_job(
            tmp_path,
            out,
            f"calibration.dirs=[{root / 'calibration'}]",
            "calibration.size=4",
            "eval=demo",
            f"eval.root={root}",
            f"eval.scale={SCALE}",
            "eval.tasks=[ks,er,pitchid]",
            "eval.probe.epochs=3",
            "eval.probe.lrs=[0.01]",
            "save_merged=false",
        )
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    evaluation = results["evaluation"]
    assert set(evaluation["tasks"]) == {"ks", "er", "pitchid"}
    assert "folds" in evaluation["tasks"]["er"]  # k-fold, like IEMOCAP
    assert set(evaluation["references"]) == {"a", "b", "fbank", "fusion"}
    assert set(evaluation["floors"]) == {"ks", "er"}  # the speech tasks, from their labels
    assert set(evaluation["predictions"]) == {"merged", "a", "b", "fbank", "fusion"}
    scores = evaluation["scores"]
    values = {n: m["value"] for n, m in evaluation["tasks"].items()}
    refs = evaluation["references"]
    assert scores["music"] == pytest.approx(1000 * values["pitchid"] / refs["b"]["pitchid"])
    usable = {  # a floor model A does not beat is left out (floor 0)
        t: f if refs["a"][t] > f else 0.0 for t, f in evaluation["floors"].items()
    }
    speech = [(values[t] - f) / (refs["a"][t] - f) for t, f in usable.items()]
    assert speech and scores["speech"] == pytest.approx(1000 * sum(speech) / len(speech))
    assert scores["avg"] == pytest.approx((scores["speech"] + scores["music"]) / 2)
    assert results["calibration"]["clips"] == 4
