"""Audio input: any format soundfile reads, mono, resampled with soxr; a synthetic fallback."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from merging.runtime import default_workers

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}

log = logging.getLogger("merging.audio")


class AudioError(RuntimeError):
    """A folder holds no usable audio, or a setting is out of range."""


@dataclass(frozen=True)
class Clip:
    """A mono waveform at the encoders' rate: held in memory (generated clips), or the file
    ``name`` decoded when it is used, so that a calibration set of any size costs only its
    list of files until a batch of it runs."""

    name: str
    held: torch.Tensor | None = None
    samples: int = 0  # its length once decoded (from ``held`` when held)
    rate: int = 16000
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.held is not None:
            object.__setattr__(self, "samples", int(self.held.numel()))

    @property
    def wave(self) -> torch.Tensor:
        if self.held is not None:
            return self.held
        wave = read_audio(self.name, self.rate, self.max_seconds)
        if wave is None:
            raise AudioError(f"calibration file {self.name} is no longer readable audio")
        return torch.from_numpy(wave)


def list_audio(directory: str | Path) -> list[Path]:
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise AudioError(f"audio folder {str(directory)!r} does not exist")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def read_audio(path: str | Path, rate: int, max_seconds: float | None = None) -> np.ndarray | None:
    """Mono float32 at ``rate``; ``None`` if unreadable, empty or silent."""
    try:
        info = sf.info(str(path))
        frames = -1 if max_seconds is None else int(math.ceil(max_seconds * info.samplerate))
        data, sr = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except Exception:  # noqa: BLE001 - libsndfile raises several types for broken files
        return None
    wave = data.mean(axis=1)
    if wave.size == 0 or not np.isfinite(wave).all() or float(np.abs(wave).max()) == 0.0:
        return None
    if sr != rate:
        wave = soxr.resample(wave, sr, rate).astype(np.float32)
    if max_seconds is not None:
        wave = wave[: int(max_seconds * rate)]
    return wave


def synthetic_clips(n: int, rate: int, seconds: float, seed: int) -> list[Clip]:
    """Deterministic tones, chirps and noise: a stand-in calibration set that needs no data."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    clips = []
    for i in range(n):
        f0 = rng.uniform(80, 1200)
        f1 = f0 * rng.uniform(0.5, 2.0)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
        harmonics = sum(rng.uniform(0, 1) / k * np.sin(k * phase) for k in range(1, 6))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 4) * t + rng.uniform(0, 6))
        wave = harmonics * envelope + rng.uniform(0.0, 0.3) * rng.standard_normal(t.size)
        wave = 0.3 * wave / (np.abs(wave).max() + 1e-9)
        clips.append(Clip(f"synthetic-{i:05d}", torch.from_numpy(wave.astype(np.float32))))
    return clips


def read_usable(
    path: str | Path, rate: int, max_seconds: float | None, least: int
) -> np.ndarray | None:
    """``read_audio``'s waveform, or None for a file that is unreadable, empty, silent or
    shorter than ``least`` samples: what every pass over audio skips and counts."""
    wave = read_audio(path, rate, max_seconds)
    return None if wave is None or wave.size < least else wave


def usable_samples(path: str, rate: int, max_seconds: float | None, least: int) -> int:
    """The decoded length of a usable file (``read_usable``), 0 for one that is not."""
    wave = read_usable(path, rate, max_seconds, least)
    return 0 if wave is None else int(wave.size)


class _Scan:
    """Which files of a folder are usable, decoded a chunk at a time in worker processes (the
    waves are dropped: only their lengths are kept)."""

    def __init__(self, files: list[Path], check: Callable[[str], int], pool, chunk: int = 64):
        self.files, self.check, self.pool, self.chunk = files, check, pool, chunk
        self.samples: list[int] = []

    def __call__(self, j: int) -> int:
        while j >= len(self.samples):
            part = [str(f) for f in self.files[len(self.samples) : len(self.samples) + self.chunk]]
            self.samples += list(
                self.pool.map(self.check, part) if self.pool else map(self.check, part)
            )
        return self.samples[j]


def calibration_clips(
    dirs: Sequence[str | Path],
    size: int,
    rate: int,
    max_seconds: float,
    seed: int,
    min_samples: int = 400,
    workers: int | None = None,
) -> tuple[list[Clip], list[str]]:
    """Pick ``size`` clips, balanced across ``dirs`` (round-robin after a seeded shuffle).

    Returns the clips and the files skipped as unreadable, empty, silent or too short. With
    no ``dirs`` a synthetic set is generated. Fewer usable files than ``size`` is a warning
    with both numbers, not an error. Files are checked by decoding them in ``workers``
    processes (None: one per spare core); the clips hold no audio until they are used.
    """
    if size <= 0:
        raise AudioError(f"calibration.size must be positive, got {size}")
    if not dirs:
        return synthetic_clips(size, rate, max_seconds, seed), []
    pools = []
    for d in dirs:
        files = list_audio(d)
        if not files:
            raise AudioError(f"calibration folder {str(d)!r} holds no audio files")
        random.Random(seed).shuffle(files)
        pools.append(files)
    workers = default_workers() if workers is None else workers
    check = functools.partial(usable_samples, rate=rate, max_seconds=max_seconds, least=min_samples)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ProcessPoolExecutor(workers)) if workers else None
        scans = [_Scan(files, check, pool) for files in pools]
        clips: list[Clip] = []
        skipped: list[str] = []
        cursors = [0] * len(pools)
        while len(clips) < size and any(c < len(p) for c, p in zip(cursors, pools, strict=True)):
            for i, files in enumerate(pools):  # one usable clip from each folder in turn
                while len(clips) < size and cursors[i] < len(files):
                    path, samples = files[cursors[i]], scans[i](cursors[i])
                    cursors[i] += 1
                    if not samples:
                        skipped.append(str(path))
                        continue
                    clips.append(Clip(str(path), None, samples, rate, max_seconds))
                    break
    if not clips:
        raise AudioError(f"no usable audio in {', '.join(map(str, dirs))}")
    if len(clips) < size:
        log.warning(
            "calibration.size=%d but only %d usable clips in %s (%d skipped): using %d",
            size,
            len(clips),
            ", ".join(map(str, dirs)),
            len(skipped),
            len(clips),
        )
    return clips, skipped
