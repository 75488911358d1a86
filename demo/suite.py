"""The built-in demo suite: a deterministic miniature of the paper's benchmark, made offline.

Real datasets cannot be fetched on the machines this project targets, so the demo synthesises
stand-ins from pip-installable sound sources (eSpeak NG voices, a General MIDI soundfont, numpy
noise): one task per paper task id, a calibration set, and the two pretraining corpora of the
demo encoders. Every clip is a pure function of ``SEED`` and its index (``demo.recipes``), so
two builds are byte-identical.

Layout under the root (``default_root()``, named by ``SUITE_VERSION``; ``suite.json`` also
records a fingerprint of the generator's code and renderers, so a changed generator rebuilds
instead of reusing old files)::

    <task>/manifest.csv      path,label,split,group (paths relative to the manifest)
    <task>/<split>/*.wav     16 kHz mono PCM16
    calibration/*.wav        half speech, half music
    pretrain/speech/*.wav    ~30 min of speech
    pretrain/music/*.wav     ~30 min of music
    suite.json               written last: present means complete

``group`` names what a clip's split was decided by (voice family, program, speaker, ...), so
anyone can check that held-out voices or instruments really are held out.

Calibration and pretraining clips come from their own random streams (no text, voice draw,
melody or noise in common with a probe clip) and never use the voices held out for testing in
``ks``/``ic`` or the programs held out in ``instcls``/``pitchid``: neither the encoders nor the
merge hear test material.

Most clips pass through a random recording chain (room reverb, band limits, tilt) and carry
background noise, as real corpora do. Honest limits, per task:

- ``ks``, ``ic``: test voices are whole eSpeak variant families unseen by the probe and by the
  speech encoder's pretraining; accents and prosody are random per clip.
- ``sid``: same 24 speakers in every split, different sentences (VoxCeleb1 identification).
  Speakers come in fours sharing one eSpeak variant (vocal tract) and differ in accent, pitch,
  rate and range; each clip jitters the prosody.
- ``er``: emotion is acted by prosody rules (rate, pitch, range, loudness), not by affect; the
  five folds are disjoint voice groups (IEMOCAP sessions).
- ``singid``: eSpeak "singers" holding vowels on melody notes (pitch steps of ~1 semitone via
  embedded pitch commands, range 0 so no speech intonation); the label is the voice identity
  (singers in threes share a variant and differ in accent and tessitura), the splits differ
  by melody. It measures voice timbre under sung pitch, like VocalSet's singer task, but it is
  formant synthesis, not singing technique, so VocID is not offered.
- ``pitchid``: NSynth-style, label = MIDI key, test programs unseen in training (NSynth also
  splits by instrument). Programs whose samples are not usable pitch references are excluded.
- ``instcls``: 11 GM families; test programs unseen in training. TimGM6mb is small, and some
  programs of a family share samples, so "unseen program" is weaker than "unseen instrument".
- ``genreid``: styles defined by groove, tempo, harmony and instrumentation; every clip is a
  new random arrangement (key, tempo, progression, kit, mix; half the clips borrow a shared
  bass or chord instrument), but train and test share the style definitions (as GTZAN shares
  artists across splits).
- ``esc50``: 12 synthetic environmental classes, five folds of independent clips, half of
  them over a quieter sound of another class.

CLI: ``python -m demo.suite [--root DIR] [--scale X]``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from demo import recipes
from demo.speech import RATE, check_deterministic
from eval.data import csv_manifest
from eval.tasks import PAPER_TASKS, Task
from merging.files import write_atomically

SUITE_VERSION = 1
REPO = Path(__file__).resolve().parent.parent


def _task(name: str, domain: str, kind: str, max_seconds: float) -> Task:
    paper = PAPER_TASKS[name].paper if name in PAPER_TASKS else name
    return Task(name, paper, domain, kind, "accuracy", csv_manifest, max_seconds)


# How each demo task is probed: its domain in the paper's score (ESC-50 counts as music, as in
# the paper), its kind (utterance: train/valid/test; kfold: fold1..fold5) and its crop.
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        _task("ks", "speech", "utterance", 1.0),
        _task("ic", "speech", "utterance", 4.0),
        _task("sid", "speech", "utterance", 2.5),
        _task("er", "speech", "kfold", 2.5),
        _task("singid", "music", "utterance", 2.5),
        _task("instcls", "music", "utterance", 1.25),
        _task("pitchid", "music", "utterance", 1.0),
        _task("genreid", "music", "utterance", 2.0),
        _task("esc50", "music", "kfold", 1.5),
    )
}
PLANS = {
    "ks": recipes.plan_ks,
    "ic": recipes.plan_ic,
    "sid": recipes.plan_sid,
    "er": recipes.plan_er,
    "singid": recipes.plan_singid,
    "instcls": recipes.plan_instcls,
    "pitchid": recipes.plan_pitchid,
    "genreid": recipes.plan_genreid,
    "esc50": recipes.plan_esc50,
    "calibration": recipes.plan_calibration,
    "pretrain/speech": recipes.plan_pretrain_speech,
    "pretrain/music": recipes.plan_pretrain_music,
}
_OWN = {*TASKS, "calibration", "pretrain", "suite.json"}


def default_root() -> Path:
    """``$MERGE_CACHE_DIR/demo/suite-v{N}``, else ``<repo>/.cache/demo/suite-v{N}``."""
    base = os.environ.get("MERGE_CACHE_DIR")
    cache = Path(base).expanduser() if base else REPO / ".cache"
    return cache / "demo" / f"suite-v{SUITE_VERSION}"


# What the audio depends on besides SEED: the recipe modules and the libraries that render.
_SOURCES = ("speech", "voices", "texts", "music", "genres", "sounds", "recipes")
_LIBRARIES = ("espeakng-loader", "pretty_midi", "tinysoundfont", "numpy", "scipy", "soxr")


def generator_fingerprint() -> str:
    """A hash of the recipe sources and renderer versions: an edited generator (even one whose
    author forgot to bump ``SUITE_VERSION``) or an upgraded renderer is rebuilt, not reused."""
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update((Path(__file__).parent / f"{name}.py").read_bytes())
    for dist in _LIBRARIES:
        try:
            h.update(f"{dist}=={importlib.metadata.version(dist)}".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{dist} missing".encode())
    return h.hexdigest()[:16]


def _identity(scale: float) -> dict:
    return {
        "version": SUITE_VERSION,
        "generator": generator_fingerprint(),
        "seed": recipes.SEED,
        "scale": float(scale),
    }


def is_complete(root: Path, scale: float = 1.0) -> bool:
    """A finished build of this generator at this scale lives in ``root``."""
    try:
        meta = json.loads((Path(root) / "suite.json").read_text())
    except (OSError, ValueError):
        return False
    return all(meta.get(k) == v for k, v in _identity(scale).items())


def write_wav(path: Path, wave: np.ndarray) -> None:
    """16 kHz mono PCM16, quantised here (not by libsndfile) so the bytes are ours to fix."""
    pcm = np.round(np.clip(wave, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, RATE, subtype="PCM_16", format="WAV")


def _manifest(rows: list[recipes.Job], task: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "split", "group"])
    for job in rows:
        w.writerow([job.path[len(task) + 1 :], job.label, job.split, job.group])
    return buf.getvalue()


def plan(scale: float = 1.0) -> dict[str, list[recipes.Job]]:
    """Every clip of the suite, by part, without rendering anything."""
    return {part: make(scale) for part, make in PLANS.items()}


def _summary(parts: dict[str, list[recipes.Job]], seconds: dict[str, float]) -> dict:
    out = {}
    for part, jobs in parts.items():
        entry = {"clips": len(jobs), "audio_seconds": round(seconds[part], 1)}
        if part in TASKS:
            spec = TASKS[part]
            entry.update(
                domain=spec.domain,
                kind=spec.kind,
                max_seconds=spec.max_seconds,
                classes=sorted({j.label for j in jobs}),
                splits=dict(sorted(Counter(j.split for j in jobs).items())),
            )
        out[part] = entry
    return out


def _claim(root: Path) -> None:
    """Refuse to replace a folder that holds anything this builder did not make."""
    if root.exists():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in _OWN)
        if foreign:
            raise FileExistsError(
                f"{root} holds files the demo suite did not write ({', '.join(foreign[:5])}); "
                "choose an empty or new --root"
            )


def _clear_stale_temps(root: Path) -> None:
    for tmp in root.parent.glob(f"{root.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            os.kill(pid, 0)  # still building: leave it
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def build_suite(root: Path | None = None, progress: bool = True, scale: float = 1.0) -> Path:
    """Build the suite into ``root`` unless a complete build is already there; returns root.

    Builds into a temporary sibling and renames it into place, with ``suite.json`` written
    last, so an interrupted build leaves no root (or a root without ``suite.json``, which the
    next call rebuilds). ``scale`` shrinks every clip count (0.05 for quick tests; every class
    keeps at least one clip in every split).
    """
    root = Path(root) if root is not None else default_root()
    if is_complete(root, scale):
        return root
    _claim(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_temps(root)
    check_deterministic()
    started = time.perf_counter()
    parts = plan(scale)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = [job for part in parts.values() for job in part]
    seconds = dict.fromkeys(parts, 0.0)
    part_of = {id(job): part for part, js in parts.items() for job in js}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="demo suite", unit="clip")
    try:
        for job in jobs:
            wave = job.make()
            if wave.size == 0 or not np.isfinite(wave).all():
                raise RuntimeError(f"{job.path}: empty or non-finite audio")
            write_wav(tmp / job.path, wave)
            seconds[part_of[id(job)]] += len(wave) / RATE
            if bar is not None:
                bar.update()
        for task in TASKS:
            (tmp / task / "manifest.csv").write_text(_manifest(parts[task], task))
        meta = {
            **_identity(scale),
            "rate": RATE,
            "build_seconds": round(time.perf_counter() - started, 1),
            "parts": _summary(parts, seconds),
        }
        write_atomically(
            tmp / "suite.json", lambda p: p.write_text(json.dumps(meta, indent=2) + "\n")
        )
        if root.exists():
            if is_complete(root, scale):  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            if not is_complete(root, scale):  # not a concurrent build that won the race
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return root


ensure_suite = build_suite


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help=f"default: {default_root()}")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink clip counts (0-1]")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    root = build_suite(args.root, progress=not args.quiet, scale=args.scale)
    meta = json.loads((root / "suite.json").read_text())
    print(f"{root}  (built in {meta['build_seconds']} s)")
    for part, info in meta["parts"].items():
        extra = f"  {len(info['classes'])} classes  {info['splits']}" if "classes" in info else ""
        print(f"  {part:16s} {info['clips']:5d} clips  {info['audio_seconds']:7.1f} s{extra}")


if __name__ == "__main__":
    main()
