"""Extract once, probe many: time-pooled hidden states of every layer, cached on disk.

A softmax-weighted sum of layers commutes with mean pooling over time, so caching each layer's
time-mean is exact for s3prl's weighted-sum + mean-pool utterance head.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm
from transformers.audio_utils import mel_filter_bank

from eval.data import Example
from merging.files import read_cache, write_atomically
from merging.forward import conv_output_lengths, encode, frame_mask, min_samples, pad_batch
from merging.identity import model_digest, source_digest
from merging.load import Encoder
from merging.loader import length_batches, plan, stream
from merging.ranks import gather, spread

FEATURES_VERSION = 1


class Upstream(Protocol):
    """Anything that maps a padded batch of waveforms to per-layer frame features. One with
    weights also has ``to(device) -> Upstream``, so that a pass spread over devices
    (``merging.ranks``) can move each rank's copy to its device."""

    name: str
    sample_rate: int
    min_samples: int

    def fingerprint(self) -> str: ...

    def layers(
        self, wave: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(list of (batch, frames, dim) per layer, valid frames per clip)."""
        ...


@dataclass
class EncoderUpstream:
    encoder: Encoder
    name: str = "encoder"

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    @property
    def min_samples(self) -> int:
        return min_samples(self.encoder.config)

    def fingerprint(self) -> str:
        return model_digest(self.encoder.model) + f"-{self.encoder.normalize}"

    def to(self, device: torch.device | str) -> EncoderUpstream:
        self.encoder.model.to(device)
        return self

    def layers(self, wave, lengths):
        out = encode(self.encoder, wave, lengths, output_hidden_states=True)
        return list(out.hidden_states), conv_output_lengths(lengths, self.encoder.config)[-1]


@dataclass
class LayerFusion:
    """Several upstreams' layers side by side, for one probe that weighs all of them at once:
    the upper bound of a merge (what the encoders know together, at N times the compute).
    Its pooled features are the parts' cached ones, concatenated along the layer axis."""

    parts: tuple[Upstream, ...]
    name: str = "A + B layer fusion"

    @property
    def sample_rate(self) -> int:
        return self.parts[0].sample_rate

    @property
    def min_samples(self) -> int:
        return max(u.min_samples for u in self.parts)

    def fingerprint(self) -> str:
        return f"fusion({','.join(u.fingerprint() for u in self.parts)})"

    def to(self, device: torch.device | str) -> LayerFusion:
        self.parts = tuple(on_device(u, device) for u in self.parts)
        return self

    def layers(self, wave, lengths):
        layers, frames = self.parts[0].layers(wave, lengths)
        for part in self.parts[1:]:
            more, other = part.layers(wave, lengths)
            if not torch.equal(frames, other):
                raise ValueError(f"{self.name}: the upstreams' frame rates differ")
            layers = layers + more
        return layers, frames


def on_device(upstream: Upstream, device: torch.device | str) -> Upstream:
    """``upstream`` moved to ``device``, if it has weights to move."""
    move = getattr(upstream, "to", None)
    return move(device) if move is not None else upstream


@functools.lru_cache(maxsize=8)
def mel_bank(n_fft: int, bins: int, rate: int) -> torch.Tensor:
    """(n_fft // 2 + 1, bins) Kaldi-scale triangular filters from 20 Hz to Nyquist; read-only."""
    return torch.from_numpy(
        mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=bins,
            min_frequency=20.0,
            max_frequency=rate / 2,
            sampling_rate=rate,
            mel_scale="kaldi",
        )
    ).float()


@functools.lru_cache(maxsize=8)
def kaldi_mel_banks(bins: int, n_fft: int, rate: int, low: float = 20.0) -> torch.Tensor:
    """(n_fft // 2 + 1, bins) Kaldi's triangular filters: equal widths on Kaldi's mel scale
    (1127 ln(1 + f / 700)) from ``low`` to Nyquist, evaluated on the mel value of each FFT
    bin; the Nyquist bin gets no weight. Built once per setting (every clip uses it); read-only."""

    def mel(f: torch.Tensor | float) -> torch.Tensor:
        return 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)

    lo, hi = mel(low), mel(rate / 2)
    edges = lo + (hi - lo) / (bins + 1) * torch.arange(bins + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    freqs = mel(rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64))[None, :]
    up, down = (freqs - left) / (center - left), (right - freqs) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.cat([banks, torch.zeros(bins, 1, dtype=torch.float64)], 1).T.float()


def kaldi_fbank(wave: torch.Tensor, rate: int, bins: int = 80) -> torch.Tensor:
    """(frames, bins) log-mel energies as Kaldi's ``compute-fbank-feats`` (and torchaudio's
    ``compliance.kaldi.fbank``, which s3prl's FBANK upstream calls) computes them with their
    defaults: 25 ms frames every 10 ms inside the clip (no padding), each frame's mean removed,
    pre-emphasis 0.97, Povey window, zero-padded to a power of two, power spectrum, log floored
    at float32 epsilon. ``wave``: (samples,), at least one frame long."""
    length, shift = int(0.025 * rate), int(0.010 * rate)
    n_fft = 1 << (length - 1).bit_length()
    frames = wave.double().unfold(0, length, shift)
    frames = frames - frames.mean(1, keepdim=True)
    frames = frames - 0.97 * torch.cat([frames[:, :1], frames[:, :-1]], 1)
    window = torch.hann_window(length, periodic=False, dtype=torch.float64).pow(0.85)
    power = torch.fft.rfft(frames * window, n=n_fft).abs().square()
    energy = power.float() @ kaldi_mel_banks(bins, n_fft, rate)
    return energy.clamp(min=torch.finfo(torch.float32).eps).log()


@dataclass
class FbankUpstream:
    """s3prl's FBANK baseline: 80 Kaldi log-mel bins (:func:`kaldi_fbank`), deltas and
    delta-deltas, each clip normalised to zero mean and unit variance (CMVN). Time-pooled,
    CMVN leaves nothing to classify, which is why SUPERB's FBANK floor is at chance on KS, IC,
    SID and ER. ``delta_order=0, cmvn=False`` is plain log-mel, whose time mean is a strong
    spectral feature (a reference, not the floor)."""

    sample_rate: int = 16000
    bins: int = 80
    delta_order: int = 2
    cmvn: bool = True
    name: str = "fbank"
    min_samples: int = 400

    def fingerprint(self) -> str:
        norm = "cmvn" if self.cmvn else "raw"
        return f"kaldi-fbank-{self.sample_rate}-{self.bins}-d{self.delta_order}-{norm}"

    def layers(self, wave, lengths):
        length, shift = int(0.025 * self.sample_rate), int(0.010 * self.sample_rate)
        frames = 1 + (lengths - length).clamp(min=0) // shift
        out = torch.zeros(len(wave), int(frames.max()), self.bins * (1 + self.delta_order))
        for i, n in enumerate(lengths.tolist()):  # one clip at a time: padding enters nothing
            feats = [kaldi_fbank(wave[i, :n], self.sample_rate, self.bins)]
            for _ in range(self.delta_order):
                feats.append(deltas(feats[-1]))
            x = torch.cat(feats, dim=1)
            if self.cmvn:  # in float64, so that a constant bin (floored energy) becomes 0
                x = x.double()
                x = (x - x.mean(0)) / (x.std(0) + 1e-10)
            out[i, : len(x)] = x
        return [out], frames


def deltas(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas of (frames, dims) over +-width frames with repeated edges (HTK's and
    Kaldi's definition; width 2 is s3prl's window of 5)."""
    t = len(x)
    padded = torch.cat([x[:1].expand(width, -1), x, x[-1:].expand(width, -1)])
    num = sum(
        n * (padded[width + n : width + n + t] - padded[width - n : width - n + t])
        for n in range(1, width + 1)
    )
    return num / (2 * sum(n * n for n in range(1, width + 1)))


@dataclass
class PooledFeatures:
    features: torch.Tensor  # (clips, layers, dim): per-layer time means
    examples: list[Example]  # the usable examples, aligned with ``features``
    skipped: list[str]  # unreadable, empty, silent or too short
    seconds: float
    cached: bool


def dataset_key(upstream: Upstream, examples: Sequence[Example], max_seconds: float) -> str:
    files = []
    for e in examples:
        try:
            st = os.stat(e.path)
            files.append((e.path, st.st_size, st.st_mtime_ns))
        except OSError:
            files.append((e.path, -1, -1))
    blob = json.dumps(
        [
            FEATURES_VERSION,
            source_digest("eval.features"),
            upstream.fingerprint(),
            upstream.sample_rate,
            max_seconds,
            files,
        ]
    )
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


@dataclass
class Usable:
    """What a streamed pass found: the examples it encoded (positions in the given list, in
    order) and the skipped ones (unreadable, empty, silent or too short) by position and path."""

    index: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def union(cls, shares: Sequence[Mapping[str, list[int]]], examples: Sequence[Example]):
        """What the ranks of a spread pass found together (each share's ``index`` and
        ``dropped``); a task left with no usable file is an error."""
        index = sorted({i for s in shares for i in s["index"]})
        dropped = sorted({i for s in shares for i in s["dropped"]})
        if not index:
            raise ValueError("no usable audio among the task's files")
        return cls(index, dropped, [examples[i].path for i in dropped])

    def share(self) -> dict[str, list[int]]:
        return {"index": self.index, "dropped": self.dropped}


def layer_batches(
    upstream: Upstream,
    examples: Sequence[Example],
    max_seconds: float,
    batch_size: int,
    usable: Usable,
    progress: bool = True,
    workers: int | None = None,
    desc: str = "features",
    part: tuple[int, int] = (0, 1),
) -> Iterator[tuple[list[int], list[torch.Tensor], torch.Tensor]]:
    """Every layer of ``upstream`` over the examples, a batch of similar lengths at a time:
    (example positions, per-layer (batch, frames, dim), valid frames per clip). The audio is
    decoded in worker processes (``merging.loader``); ``usable`` is filled as it goes, and a
    task left with no usable file is an error. ``part=(rank, world)``: every world-th batch
    from the rank-th, a rank's share of a pass spread over devices (``Usable.union`` joins
    the shares' findings)."""
    rate, least = upstream.sample_rate, upstream.min_samples
    planned = plan([e.path for e in examples], rate, max_seconds, least)
    paths = [examples[i].path for i in planned.index]
    rank, world = part
    batches = length_batches(planned.samples, batch_size)[rank::world]
    dropped = list(planned.skipped)
    done: set[int] = set()
    bar = tqdm(total=len(batches), desc=f"{desc} ({upstream.name})", disable=not progress)
    with stream(paths, batches, rate, max_seconds, least, workers).guard() as loaded:
        for batch in loaded:
            bar.update()
            dropped += [planned.index[k] for k, w in batch if w is None]
            good = [(k, w) for k, w in batch if w is not None]
            if good:
                layers, frames = upstream.layers(*pad_batch([w for _, w in good]))
                done.update(k for k, _ in good)
                yield [planned.index[k] for k, _ in good], layers, frames
    bar.close()
    usable.index = [planned.index[k] for k in range(len(paths)) if k in done]
    usable.dropped = sorted(dropped)
    usable.skipped = [examples[i].path for i in usable.dropped]
    if not usable.index and world == 1:
        raise ValueError("no usable audio among the task's files")


@torch.no_grad()
def pooled_features(
    upstream: Upstream,
    examples: Sequence[Example],
    cache_dir: str | Path | None,
    max_seconds: float = 10.0,
    batch_size: int = 8,
    progress: bool = True,
    workers: int | None = None,
    trainer: Mapping[str, Any] | None = None,
) -> PooledFeatures:
    """Per-layer time-pooled features of every readable example, from the cache if present;
    the audio streamed from disk (``workers`` decoding processes, None: one per spare core).
    A ``trainer`` naming several devices spreads the pass over them (``merging.ranks``)."""
    t0 = time.perf_counter()
    if isinstance(upstream, LayerFusion):  # pooling commutes with stacking: reuse the parts
        parts = [
            pooled_features(
                u, examples, cache_dir, max_seconds, batch_size, progress, workers, trainer
            )
            for u in upstream.parts
        ]
        return fuse(parts, time.perf_counter() - t0)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "features" / f"{dataset_key(upstream, examples, max_seconds)}.pt"
        raw = read_cache(
            path, lambda p: torch.load(p, weights_only=True), ("features", "index", "skipped")
        )
        if raw is not None:
            return PooledFeatures(
                raw["features"],
                [examples[i] for i in raw["index"]],
                raw["skipped"],
                time.perf_counter() - t0,
                True,
            )
    fabric = spread(trainer)
    if fabric is None:
        usable = Usable()
        done, pooled = _pool(upstream, examples, max_seconds, batch_size, usable, progress, workers)
    else:
        shares = gather(
            fabric, _pooled_share, upstream, examples, max_seconds, batch_size, progress, workers
        )
        usable = Usable.union([s["usable"] for s in shares], examples)
        done = [i for s in shares for i in s["positions"]]
        pooled = torch.cat([s["features"] for s in shares if s["positions"]])
    row = {i: r for r, i in enumerate(done)}
    index, skipped = usable.index, usable.skipped
    features = pooled[[row[i] for i in index]]  # in example order
    if path is not None:
        saved = {"features": features, "index": index, "skipped": skipped}
        write_atomically(path, lambda tmp: torch.save(saved, tmp))
    return PooledFeatures(
        features, [examples[i] for i in index], skipped, time.perf_counter() - t0, False
    )


def _pool(
    upstream: Upstream,
    examples: Sequence[Example],
    max_seconds: float,
    batch_size: int,
    usable: Usable,
    progress: bool,
    workers: int | None,
    part: tuple[int, int] = (0, 1),
) -> tuple[list[int], torch.Tensor]:
    """The usable examples' positions and their (layers, dim) time means, in the order done.
    The means go into one tensor allocated at the first batch: one small tensor kept per batch
    would pin the allocator's heap between the freed activations, which then grows with the
    number of batches wherever freed memory is kept (``merging.runtime.keep_freed_memory``)."""
    positions: list[int] = []
    out: torch.Tensor | None = None
    for done, layers, frames in layer_batches(
        upstream, examples, max_seconds, batch_size, usable, progress, workers, part=part
    ):
        mask = frame_mask(frames.to(layers[0].device), layers[0].shape[1])[:, :, None].float()
        means = torch.stack([(h * mask).sum(1) / mask.sum(1) for h in layers], dim=1)
        if out is None:
            out = torch.empty(len(examples), *means.shape[1:])
        out[len(positions) : len(positions) + len(done)] = means
        positions += done
    return positions, (out[: len(positions)] if out is not None else torch.empty(0))


@torch.no_grad()
def _pooled_share(fabric, upstream, examples, max_seconds, batch_size, progress, workers):
    """One rank's share of :func:`pooled_features`."""
    rank, usable = fabric.global_rank, Usable()
    positions, features = _pool(
        on_device(upstream, fabric.device), examples, max_seconds, batch_size, usable,
        progress and rank == 0, workers, (rank, fabric.world_size),
    )  # fmt: skip
    return {"positions": positions, "features": features.clone(), "usable": usable.share()}


def fuse(parts: Sequence[PooledFeatures], seconds: float = 0.0) -> PooledFeatures:
    """Every upstream's layers for the examples all could read (in the first's order)."""
    widths = sorted({p.features.shape[2] for p in parts})
    if len(widths) > 1:
        raise ValueError(f"layer fusion needs one width, got {widths}")
    rows = [{e.path: i for i, e in enumerate(p.examples)} for p in parts]
    first = parts[0].examples
    keep = [e.path for e in first if all(e.path in r for r in rows)]
    features = torch.cat(
        [p.features[[r[path] for path in keep]] for p, r in zip(parts, rows, strict=True)], dim=1
    )
    skipped = sorted(set().union(*(p.skipped for p in parts)))
    return PooledFeatures(
        features,
        [first[rows[0][path]] for path in keep],
        skipped,
        seconds,
        all(p.cached for p in parts),
    )
