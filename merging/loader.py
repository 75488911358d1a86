"""Audio streamed from disk: decoded, resampled and cropped in worker processes and handed over
in batches of similar length, so that memory is bounded by a few batches, never by the number
of clips, and the encoder does not wait for the decoder.

Batches are planned from the files' headers (``plan``): a clip's length after resampling and
cropping is known without decoding it (soxr returns ``floor(n * out / in + 0.5)`` samples), so
the batches are the ones that sorting the decoded clips by length would give. A file that
turns out silent or undecodable is dropped from its batch and reported, never fatal.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from merging.audio import Clip, read_audio
from merging.runtime import default_workers


def planned_samples(path: str, rate: int, max_seconds: float | None) -> int | None:
    """The samples ``read_audio(path, rate, max_seconds)`` returns for a readable file, from
    its header alone; None if the header cannot be read."""
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - libsndfile raises several types for broken files
        return None
    frames = int(info.frames)
    if max_seconds is not None:
        frames = min(frames, int(math.ceil(max_seconds * info.samplerate)))
    if info.samplerate != rate:
        frames = int(math.floor(frames * rate / info.samplerate + 0.5))
    if max_seconds is not None:
        frames = min(frames, int(max_seconds * rate))
    return frames


@dataclass
class Plan:
    """The usable files in their given order, with their planned lengths; the rest skipped."""

    index: list[int]  # positions in the planned list of paths
    samples: list[int]
    skipped: list[int]


def plan(
    paths: Sequence[str], rate: int, max_seconds: float | None, min_samples: int
) -> Plan:
    """Headers only: unreadable and too-short files are skipped before any decoding."""
    index, samples, skipped = [], [], []
    for i, p in enumerate(paths):
        n = planned_samples(p, rate, max_seconds)
        if n is None or n < min_samples:
            skipped.append(i)
        else:
            index.append(i)
            samples.append(n)
    return Plan(index, samples, skipped)


def length_batches(samples: Sequence[int], batch_size: int) -> list[list[int]]:
    """Positions in batches of similar length, longest first, so padding stays small."""
    order = sorted(range(len(samples)), key=lambda k: -samples[k])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class _Decoded(Dataset):
    def __init__(self, paths: Sequence[str], rate: int, max_seconds: float | None, least: int):
        self.paths, self.rate, self.max_seconds, self.least = paths, rate, max_seconds, least

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor | None]:
        wave = read_audio(self.paths[k], self.rate, self.max_seconds)
        if wave is None or wave.size < self.least:
            return k, None
        return k, torch.from_numpy(np.ascontiguousarray(wave))


def _as_list(items: list) -> list:
    return items


def stream(
    paths: Sequence[str],
    batches: Sequence[Sequence[int]],
    rate: int,
    max_seconds: float | None,
    min_samples: int,
    workers: int | None = None,
) -> Iterator[list[tuple[int, torch.Tensor | None]]]:
    """Each batch of ``batches`` (positions in ``paths``) as (position, waveform or None: silent,
    undecodable, too short), decoded by ``workers`` processes (None: ``default_workers``) a
    couple of batches ahead."""
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        _Decoded(paths, rate, max_seconds, min_samples),
        batch_sampler=[list(b) for b in batches],
        num_workers=workers,
        collate_fn=_as_list,
        prefetch_factor=2 if workers else None,
    )
    yield from loader


class _Waves(Dataset):
    def __init__(self, clips: Sequence[Clip]):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.clips[k].wave


def clip_batches(
    clips: Sequence[Clip], batch_size: int, workers: int | None = None
) -> Iterator[list[torch.Tensor]]:
    """The clips' waveforms in batches of similar length, longest first (a stable sort, so the
    batches are those of sorting the decoded clips), files decoded by ``workers`` processes
    (None: ``default_workers``; clips held in memory need none)."""
    batches = length_batches([c.samples for c in clips], batch_size)
    if all(c.held is not None for c in clips):
        workers = 0
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        _Waves(clips),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_as_list,
        prefetch_factor=2 if workers else None,
    )
    yield from loader
