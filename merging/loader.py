"""Audio streamed from disk: decoded, resampled and cropped in worker processes and handed over
in batches of similar length, so that memory is bounded by a few batches, never by the number
of clips, and the encoder does not wait for the decoder.

Batches are planned from the files' headers (``plan``): a clip's length after resampling and
cropping is known without decoding it (soxr returns ``floor(n * out / in + 0.5)`` samples), so
the batches are the ones that sorting the decoded clips by length would give. A file that
turns out silent or undecodable is dropped from its batch and reported, never fatal.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from merging.audio import AudioError, Clip, read_usable
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


def plan(paths: Sequence[str], rate: int, max_seconds: float | None, min_samples: int) -> Plan:
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
        wave = read_usable(self.paths[k], self.rate, self.max_seconds, self.least)
        return k, None if wave is None else torch.from_numpy(np.ascontiguousarray(wave))


def _as_list(items: list) -> list:
    return items


class Stream:
    """Batches from a ``DataLoader`` over worker processes. Iterate it inside ``guard()``: a
    file that kills its decoding process (a crash inside the decoder library; torch reports
    it wherever the main process is at that moment) then ends the pass with an error naming
    the files in flight."""

    def __init__(self, dataset: Dataset, batches: list[list[int]], names: list[str], workers):
        self.batches, self.names, self.workers, self.done = batches, names, workers, 0
        self._active: Iterator[list] | None = None
        self.loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=_as_list,
            prefetch_factor=2 if workers else None,
        )

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list]:
        self._active = self._batches()
        return self._active

    def _batches(self) -> Iterator[list]:
        batches = iter(self.loader)
        try:
            for batch in batches:
                yield batch
                self.done += 1
        finally:  # stop the workers now, so that none of their exits is reported later
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()

    @contextlib.contextmanager
    def guard(self) -> Iterator[Stream]:
        try:
            yield self
        except (RuntimeError, ConnectionError, EOFError) as err:
            # torch reports a dead worker as a RuntimeError; caught while a tensor it sent is
            # being received, the same death is a reset connection to it
            died = "DataLoader worker" in str(err) or not isinstance(err, RuntimeError)
            if not (died and self.workers):
                raise
            ahead = self.batches[self.done : self.done + 2 * self.workers + 1]
            flight = [self.names[k] for b in ahead for k in b]
            raise AudioError(
                f"a process decoding audio died ({err}); the file that killed it is one of "
                f"{flight[:24]}{' ...' if len(flight) > 24 else ''}: move it aside, or find "
                "it with workers=0"
            ) from None
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decoding processes (a pass left early leaves none behind)."""
        if self._active is not None:
            self._active.close()


def stream(
    paths: Sequence[str],
    batches: Sequence[Sequence[int]],
    rate: int,
    max_seconds: float | None,
    min_samples: int,
    workers: int | None = None,
) -> Stream:
    """Each batch of ``batches`` (positions in ``paths``) as (position, waveform or None: silent,
    undecodable, too short), decoded by ``workers`` processes (None: ``default_workers``) a
    couple of batches ahead."""
    workers = default_workers() if workers is None else workers
    dataset = _Decoded(paths, rate, max_seconds, min_samples)
    return Stream(dataset, [list(b) for b in batches], list(paths), workers)


class _Waves(Dataset):
    def __init__(self, clips: Sequence[Clip]):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.clips[k].wave


def clip_batches(
    clips: Sequence[Clip],
    batch_size: int,
    workers: int | None = None,
    part: tuple[int, int] = (0, 1),
) -> Stream:
    """The clips' waveforms in batches of similar length, longest first (a stable sort, so the
    batches are those of sorting the decoded clips), files decoded by ``workers`` processes
    (None: ``default_workers``; clips held in memory need none). ``part=(rank, world)``: every
    world-th batch from the rank-th, a rank's share of a pass spread over devices."""
    rank, world = part
    batches = length_batches([c.samples for c in clips], batch_size)[rank::world]
    if all(c.held is not None for c in clips):
        workers = 0
    workers = default_workers() if workers is None else workers
    return Stream(_Waves(clips), batches, [c.name for c in clips], workers)


def each_clip(clips: Sequence[Clip], workers: int | None = None) -> Stream:
    """Every clip's waveform, one per batch in the given order (a pass whose sums must not
    depend on batching), decoded a few clips ahead by ``workers`` processes (None:
    ``default_workers``; clips held in memory need none)."""
    if all(c.held is not None for c in clips):
        workers = 0
    workers = default_workers() if workers is None else workers
    return Stream(_Waves(clips), [[k] for k in range(len(clips))], [c.name for c in clips], workers)
