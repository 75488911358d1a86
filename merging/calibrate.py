"""Streamed activation statistics of two encoders at every merge point.

For each point only sums, sums of squares and the A x B cross products are accumulated (never
A x A, never the activations themselves), so memory does not grow with the calibration set;
padded frames are excluded, so the result does not depend on batching or padding.
Conv layers near the waveform run at thousands of frames per second whose neighbours overlap
by half a receptive field; ``max_frame_rate`` reads every k-th of their frames (counted from each
clip's start, so still independent of batching), which saves most of the conv points' cost
and loses hardly any of their information. ``None`` reads every frame.
The statistics do not depend on the permutation scope or alpha: they are cached on disk and
reused by every job of a sweep.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import HubertConfig

from merging.audio import Clip
from merging.files import read_cache, write_atomically
from merging.forward import conv_output_lengths, encode, frame_mask, pad_batch
from merging.identity import model_digest, modules_of, source_digest
from merging.load import Encoder
from merging.loader import Stream, clip_batches
from merging.points import Point
from merging.ranks import gather, spread

STATS_VERSION = 1


@dataclass
class PointStats:
    """Finalised statistics of one merge point."""

    n: int
    mean_a: torch.Tensor
    std_a: torch.Tensor
    mean_b: torch.Tensor
    std_b: torch.Tensor
    corr: torch.Tensor  # (units of A, units of B), Pearson, float32; 0 where a unit is constant

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _sum_of_squares(x: torch.Tensor) -> torch.Tensor:
    """Per-unit sum of squares over (clip, frame), taking the fast path for either layout."""
    if x.stride(-1) == 1:  # units contiguous: transformer activations
        return x.square().sum((0, 1)).double()
    return sum(torch.linalg.vector_norm(c, dim=0).double().square() for c in x)  # conv


class CrossMoments:
    """Running sums of shifted activations, their squares and A x B cross products.

    Batches arrive as (clips, frames, units) tensors of any memory layout plus each clip's
    valid frames. Data are shifted by the first clip's means before any product, so float32
    matrix products lose nothing to cancellation when means dwarf spreads. Cross products
    collect in a float32 buffer flushed into float64 every ``FLUSH_FRAMES`` frames (the float64
    matrix exists only from the first flush: a calibration set below that many frames never
    allocates, fills or adds one); all other sums are float64.
    """

    FLUSH_FRAMES = 1 << 18

    def __init__(self, ca: int, cb: int, device: torch.device | str = "cpu") -> None:
        """Sums for ``ca`` units of A and ``cb`` of B, kept on ``device`` (the activations')."""
        f64 = torch.float64
        self.n = 0
        self.pending = 0
        self.ref_a: torch.Tensor | None = None
        self.ref_b: torch.Tensor | None = None
        zeros = functools.partial(torch.zeros, device=device)
        self.sum_a, self.sum_b = zeros(ca, dtype=f64), zeros(cb, dtype=f64)
        self.sq_a, self.sq_b = zeros(ca, dtype=f64), zeros(cb, dtype=f64)
        self.cross: torch.Tensor | None = None  # float64, from the first flush on
        self.buffer = zeros(ca, cb)

    def update(
        self, a: torch.Tensor, b: torch.Tensor, lengths: Sequence[int], consume: bool = False
    ) -> None:
        """Fold in a (clips, frames, units) batch; ``consume`` lets it overwrite ``a`` and ``b``."""
        if self.ref_a is None:  # any typical value will do as the shift: the first clip's mean
            self.ref_a, self.ref_b = a[0, : lengths[0]].mean(0), b[0, : lengths[0]].mean(0)
        a = a.sub_(self.ref_a) if consume else a - self.ref_a
        b = b.sub_(self.ref_b) if consume else b - self.ref_b
        if min(lengths) < a.shape[1]:  # padded frames must add nothing to the sums
            valid = frame_mask(torch.as_tensor(lengths, device=a.device), a.shape[1])[:, :, None]
            a.mul_(valid)
            b.mul_(valid)
        if a.stride(-1) == 1 and b.stride(-1) == 1:  # units contiguous: one large product
            self.buffer.addmm_(a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1]))
        else:  # channels-first conv activations: per clip, still without copies
            for i, n_i in enumerate(lengths):
                self.buffer.addmm_(a[i, :n_i].T, b[i, :n_i])
        self.sum_a.add_(a.sum((0, 1)))
        self.sum_b.add_(b.sum((0, 1)))
        self.sq_a.add_(_sum_of_squares(a))
        self.sq_b.add_(_sum_of_squares(b))
        self.n += sum(lengths)
        self.pending += sum(lengths)
        if self.pending >= self.FLUSH_FRAMES:
            self._flush()

    def _flush(self, last: bool = False) -> None:
        if self.cross is None:
            self.cross = self.buffer.double()
        else:
            self.cross.add_(self.buffer)
        if not last:
            self.buffer.zero_()
        self.pending = 0

    def rebase(self, ref_a: torch.Tensor, ref_b: torch.Tensor) -> None:
        """Shift the sums to other references, exactly in float64: the shares of a pass spread
        over devices each start from their own first clip, and add up only once they share one.
        With y = x - r and d = r - r': sum(y + d) = S + n d, sum((y + d)^2) = Q + 2 d S + n d^2,
        sum((y_a + d_a)(y_b + d_b)^T) = C + S_a d_b^T + d_a S_b^T + n d_a d_b^T."""
        self._flush()
        assert self.cross is not None
        f64 = torch.float64
        d_a = (self.ref_a - ref_a).to(f64) if self.ref_a is not None else ref_a.to(f64) * 0
        d_b = (self.ref_b - ref_b).to(f64) if self.ref_b is not None else ref_b.to(f64) * 0
        n = float(self.n)
        self.cross.addr_(self.sum_a, d_b).addr_(d_a, self.sum_b).addr_(d_a, d_b, alpha=n)
        self.sq_a.add_(2 * d_a * self.sum_a + n * d_a.square())
        self.sq_b.add_(2 * d_b * self.sum_b + n * d_b.square())
        self.sum_a.add_(n * d_a)
        self.sum_b.add_(n * d_b)
        self.ref_a, self.ref_b = ref_a, ref_b

    def all_reduce(self, fabric) -> None:
        """Sum every rank's moments (all rebased to one reference) into every rank's."""
        self._flush()
        for name in ("sum_a", "sum_b", "sq_a", "sq_b", "cross"):
            setattr(self, name, fabric.all_reduce(getattr(self, name), reduce_op="sum"))
        count = torch.tensor([self.n], dtype=torch.float64, device=self.sum_a.device)
        self.n = int(fabric.all_reduce(count, reduce_op="sum").item())

    def finalize(self) -> PointStats:
        """Pearson correlations; consumes the accumulators."""
        if self.pending or self.cross is None:
            self._flush(last=True)
        assert self.cross is not None
        n = max(self.n, 1)
        mu_a, mu_b = self.sum_a / n, self.sum_b / n
        var_a = (self.sq_a / n - mu_a.square()).clamp(min=0)
        var_b = (self.sq_b / n - mu_b.square()).clamp(min=0)
        std_a, std_b = var_a.sqrt(), var_b.sqrt()
        corr = self.cross.div_(n).addr_(mu_a, mu_b, alpha=-1.0)
        corr.div_(std_a.clamp(min=1e-150)[:, None]).div_(std_b.clamp(min=1e-150)[None, :])
        corr.clamp_(-1.0, 1.0)
        constant_a, constant_b = var_a <= 1e-12, var_b <= 1e-12
        if constant_a.any():  # constant units correlate with nothing
            corr[constant_a] = 0.0
        if constant_b.any():
            corr[:, constant_b] = 0.0
        ref_a = self.ref_a if self.ref_a is not None else 0.0
        ref_b = self.ref_b if self.ref_b is not None else 0.0
        mean_a, mean_b = (mu_a + ref_a).cpu(), (mu_b + ref_b).cpu()  # matching runs on the CPU
        return PointStats(self.n, mean_a, std_a.cpu(), mean_b, std_b.cpu(), corr.float().cpu())


@contextmanager
def _hooks(
    model: torch.nn.Module, points: Sequence[Point], sink: Callable[[Point, torch.Tensor], None]
) -> Iterator[None]:
    handles = []
    for p in points:
        module = model.get_submodule(p.module)
        then = model.get_submodule(p.then) if p.then else (lambda x: x)
        if p.pre:
            handles.append(
                module.register_forward_pre_hook(lambda _m, args, p=p, f=then: sink(p, f(args[0])))
            )
        else:
            handles.append(
                module.register_forward_hook(
                    lambda _m, _i, out, p=p, f=then: sink(
                        p, f(out[0] if isinstance(out, tuple) else out)
                    )
                )
            )
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def frame_steps(config: HubertConfig, sample_rate: int, max_frame_rate: float | None) -> dict:
    """Every how many frames a point of each conv layer (and of the transformer, -1) is read."""
    if max_frame_rate is not None and max_frame_rate <= 0:
        raise ValueError(
            f"calibration.max_frame_rate must be positive or null, got {max_frame_rate}"
        )
    steps, rate = {}, float(sample_rate)
    for i, stride in enumerate(config.conv_stride):
        rate /= stride
        steps[i] = 1 if max_frame_rate is None else max(1, math.ceil(rate / max_frame_rate - 1e-9))
    steps[-1] = steps[len(config.conv_stride) - 1]
    return steps


# What a pass does with each point's activations of one batch: (point, A's, B's, valid frames).
Fold = Callable[[str, torch.Tensor, torch.Tensor, Sequence[int]], None]


def _frames(config: HubertConfig, lengths: torch.Tensor, steps: dict[int, int]) -> dict:
    """Per conv layer (and -1, the transformer), each clip's frames read at its step."""
    frames = dict(enumerate(n.tolist() for n in conv_output_lengths(lengths, config)))
    frames[-1] = frames[len(frames) - 1]
    return {i: [-(-n // steps[i]) for n in lengths] for i, lengths in frames.items()}


def _activations(
    encoder: Encoder,
    points: Sequence[Point],
    wave: torch.Tensor,
    lengths: torch.Tensor,
    steps: dict[int, int],
) -> dict[str, torch.Tensor]:
    """One forward pass; every point's activation, time-major."""
    store: dict[str, torch.Tensor] = {}

    def keep(p: Point, x: torch.Tensor) -> None:
        # kept by reference (the encoder does not write to it again), time-major; a
        # subsampled point as a compact copy, so the full activation is freed at once
        x = x.transpose(1, 2) if p.channels_first else x
        step = steps[p.conv_layer]
        store[p.name] = x if step == 1 else x[:, ::step].contiguous()

    with _hooks(encoder.model, points, keep):
        encode(encoder, wave, lengths)
    return store


def _accumulate_batch(
    a: Encoder,
    b: Encoder,
    points: Sequence[Point],
    waves: Sequence[torch.Tensor],
    fold: Fold,
    steps: dict[int, int],
) -> None:
    """Run A, then B, keeping both's activations, then ``fold`` every point in.

    Folding in after both passes lets the shifts work in place on activations neither encoder
    reads any more, instead of copying each of B's while B still needs it.
    """
    wave, lengths = pad_batch(waves)
    frames = _frames(a.config, lengths, steps)
    from_a = _activations(a, points, wave, lengths, steps)
    from_b = _activations(b, points, wave, lengths, steps)
    for p in points:
        fold(p.name, from_a.pop(p.name), from_b.pop(p.name), frames[p.conv_layer])
        # each point's memory goes back as soon as it is folded in


def calibrate_pool(
    anchor: Encoder,
    members: Mapping[str, Encoder],
    clips: Sequence[Clip],
    batch_size: int = 8,
    progress: bool = True,
    max_frame_rate: float | None = None,
    workers: int | None = None,
) -> dict[str, dict[str, PointStats]]:
    """One pass over the clips for a pool: per batch the anchor runs once and every member
    after it; per member the anchor x member statistics, equal to :func:`calibrate`'s for that
    pair (the same batches and sums; the anchor's activations are copied, not consumed)."""
    desc = f"calibrating {len(members)} members"
    loaded, bar = _batches(clips, batch_size, workers, (0, 1), anchor.sample_rate, progress, desc)
    steps = frame_steps(anchor.config, anchor.sample_rate, max_frame_rate)
    points = anchor.family.points(anchor.config)
    moments: dict[str, dict[str, CrossMoments]] = {name: {} for name in members}
    with loaded.guard():
        for waves in loaded:
            wave, lengths = pad_batch(waves)
            frames = _frames(anchor.config, lengths, steps)
            from_anchor = _activations(anchor, points, wave, lengths, steps)
            for name, member in members.items():
                from_member = _activations(member, points, wave, lengths, steps)
                for p in points:
                    xa, xb = from_anchor[p.name], from_member.pop(p.name)
                    if p.name not in moments[name]:
                        moments[name][p.name] = CrossMoments(xa.shape[-1], xb.shape[-1], xa.device)
                    moments[name][p.name].update(xa, xb, frames[p.conv_layer])
            bar.update()
    bar.close()
    return {n: {k: m.finalize() for k, m in points_of.items()} for n, points_of in moments.items()}


def calibrate(
    a: Encoder,
    b: Encoder,
    clips: Sequence[Clip],
    batch_size: int = 8,
    progress: bool = True,
    max_frame_rate: float | None = None,
    workers: int | None = None,
    trainer: Mapping[str, Any] | None = None,
) -> dict[str, PointStats]:
    """One pass of both encoders over the clips; statistics for every merge point. A
    ``trainer`` naming several devices spreads the pass over them (``merging.ranks``) and
    all-reduces the sums: equal to one device's statistics up to the order of float sums."""
    fabric = spread(trainer)
    if fabric is not None:
        share = gather(
            fabric, _calibrate_share, a, b, clips, batch_size, progress, max_frame_rate, workers
        )[0]
        return {name: PointStats(**fields) for name, fields in share.items()}
    moments = _moments(a, b, clips, batch_size, progress, max_frame_rate, workers)
    return {name: m.finalize() for name, m in moments.items()}


def _moments(
    a: Encoder,
    b: Encoder,
    clips: Sequence[Clip],
    batch_size: int,
    progress: bool,
    max_frame_rate: float | None,
    workers: int | None,
    part: tuple[int, int] = (0, 1),
) -> dict[str, CrossMoments]:
    moments: dict[str, CrossMoments] = {}

    def cross(name: str, xa: torch.Tensor, xb: torch.Tensor, lengths: Sequence[int]) -> None:
        if name not in moments:
            moments[name] = CrossMoments(xa.shape[-1], xb.shape[-1], xa.device)
        moments[name].update(xa, xb, lengths, consume=True)

    points = a.family.points(a.config)
    stream(a, b, points, clips, cross, batch_size, progress, max_frame_rate, workers=workers,
           part=part)  # fmt: skip
    return moments


def _calibrate_share(fabric, a, b, clips, batch_size, progress, max_frame_rate, workers):
    """One rank's share of :func:`calibrate`: its batches' moments, rebased to rank 0's
    references (rank 0 has the first batch, so they are one device's), then summed over ranks;
    rank 0 returns the statistics."""
    rank = fabric.global_rank
    for encoder in (a, b):
        encoder.model.to(fabric.device)
    moments = _moments(
        a, b, clips, batch_size, progress and rank == 0, max_frame_rate, workers,
        (rank, fabric.world_size),
    )  # fmt: skip
    refs = fabric.broadcast({k: (m.ref_a.cpu(), m.ref_b.cpu()) for k, m in moments.items()})
    for name, (ref_a, ref_b) in refs.items():  # one order on every rank: the collectives pair
        if name not in moments:  # a rank left without a batch adds zeros
            moments[name] = CrossMoments(len(ref_a), len(ref_b), fabric.device)
        moments[name].rebase(ref_a.to(fabric.device), ref_b.to(fabric.device))
        moments[name].all_reduce(fabric)
    if rank != 0:
        return None
    return {name: moments[name].finalize().to_dict() for name in refs}


def stream(
    a: Encoder,
    b: Encoder,
    points: Sequence[Point],
    clips: Sequence[Clip],
    fold: Fold,
    batch_size: int = 8,
    progress: bool = True,
    max_frame_rate: float | None = None,
    desc: str = "calibrating",
    workers: int | None = None,
    part: tuple[int, int] = (0, 1),
) -> None:
    """One pass of both encoders over the clips in batches of similar length, handing every
    point's activations to ``fold`` (padded frames included: ``fold`` gets the valid counts).
    Files are decoded a batch at a time by ``workers`` processes (None: one per spare core).
    ``part=(rank, world)``: only that rank's share of the batches."""
    loaded, bar = _batches(clips, batch_size, workers, part, a.sample_rate, progress, desc)
    steps = frame_steps(a.config, a.sample_rate, max_frame_rate)
    with loaded.guard():
        for waves in loaded:  # similar lengths share a batch
            _accumulate_batch(a, b, points, waves, fold, steps)
            bar.update()
    bar.close()


def _batches(
    clips: Sequence[Clip],
    batch_size: int,
    workers: int | None,
    part: tuple[int, int],
    rate: int,
    progress: bool,
    desc: str,
) -> tuple[Stream, tqdm]:
    """The clips' batches of similar length (iterate them inside ``guard()``) and a bar."""
    if batch_size < 1:
        raise ValueError(f"calibration batch size must be >= 1, got {batch_size}")
    seconds = sum(c.samples for c in clips) / rate
    loaded = clip_batches(clips, batch_size, workers, part)
    bar = tqdm(
        total=len(loaded), desc=f"{desc} on {seconds:.0f} s", unit="batch", disable=not progress
    )
    return loaded, bar


def fingerprint_clips(clips: Sequence[Clip]) -> str:
    """The clips' audio: a held clip by its samples, a file by its path, size, mtime and
    decoded length (as the features' keys see files), without decoding it again."""
    h = hashlib.blake2b(digest_size=16)
    for c in clips:
        if c.held is not None:
            h.update(c.held.contiguous().numpy().tobytes())
        else:
            st = os.stat(c.name)
            h.update(f"{c.name}\0{st.st_size}\0{st.st_mtime_ns}\0{c.samples}\n".encode())
    return h.hexdigest()


def family_modules(*encoders: Encoder) -> tuple[str, ...]:
    """The modules of the encoders' family adapters (found at run time, not imported here),
    which decide the calibration points and how each is read."""
    return modules_of(
        *(f for e in encoders for f in (e.family.points, e.family.spec, e.family.remap) if f)
    )


LOAD = {"map_location": "cpu", "weights_only": True}


def _key(
    encoders: Sequence[Encoder], clips: Sequence[Clip], max_frame_rate: float | None, identity: dict
) -> str:
    """A cache key: ``identity`` (the weights), the clips, the settings, the code."""
    first = encoders[0]
    blob = {
        "version": STATS_VERSION,
        "code": source_digest("merging.calibrate", *family_modules(*encoders)),
        "clips": fingerprint_clips(clips),
        "rate": first.sample_rate,
        "normalize": [e.normalize for e in encoders],
        "steps": frame_steps(first.config, first.sample_rate, max_frame_rate),
        **identity,
    }
    return hashlib.blake2b(json.dumps(blob, sort_keys=True).encode(), digest_size=16).hexdigest()


def _dump(stats: Mapping[str, Mapping[str, PointStats]]) -> dict:
    return {n: {k: v.to_dict() for k, v in points.items()} for n, points in stats.items()}


def _load(saved: Mapping[str, Mapping[str, dict]]) -> dict[str, dict[str, PointStats]]:
    return {n: {k: PointStats(**v) for k, v in points.items()} for n, points in saved.items()}


def cached_calibrate(
    a: Encoder,
    b: Encoder,
    clips: Sequence[Clip],
    cache_dir: str | Path | None,
    batch_size: int = 8,
    progress: bool = True,
    max_frame_rate: float | None = None,
    workers: int | None = None,
    trainer: Mapping[str, Any] | None = None,
) -> tuple[dict[str, PointStats], bool]:
    """:func:`calibrate`, reusing a cached result for identical weights, clips and settings.

    Returns the statistics and whether they came from the cache.
    """
    if cache_dir is None:
        return calibrate(a, b, clips, batch_size, progress, max_frame_rate, workers, trainer), False
    identity = {"a": model_digest(a.model), "b": model_digest(b.model)}
    path = Path(cache_dir) / "calibration" / f"{_key([a, b], clips, max_frame_rate, identity)}.pt"
    points = [p.name for p in a.family.points(a.config)]
    cached = read_cache(path, lambda p: _load({"pair": torch.load(p, **LOAD)})["pair"], points)
    if cached is not None:
        return cached, True
    stats = calibrate(a, b, clips, batch_size, progress, max_frame_rate, workers, trainer)
    write_atomically(path, lambda tmp: torch.save(_dump({"pair": stats})["pair"], tmp))
    return stats, False


def cached_calibrate_pool(
    anchor: Encoder,
    members: Mapping[str, Encoder],
    clips: Sequence[Clip],
    cache_dir: str | Path | None,
    batch_size: int = 8,
    progress: bool = True,
    max_frame_rate: float | None = None,
    workers: int | None = None,
    trainer: Mapping[str, Any] | None = None,
) -> tuple[dict[str, dict[str, PointStats]], bool]:
    """The anchor x member statistics of every member, cached under one key over the whole
    pool (one member: :func:`cached_calibrate`'s entry, as a pair has always been). A pass
    spread over devices runs once per member."""
    settings = (batch_size, progress, max_frame_rate, workers)
    if len(members) == 1 or spread(trainer) is not None:
        done = {
            name: cached_calibrate(anchor, m, clips, cache_dir, *settings, trainer)
            for name, m in members.items()
        }
        return {n: stats for n, (stats, _) in done.items()}, all(c for _, c in done.values())
    if cache_dir is None:
        return calibrate_pool(anchor, members, clips, *settings), False
    identity = {
        "anchor": model_digest(anchor.model),
        "members": {n: model_digest(m.model) for n, m in members.items()},
    }
    key = _key([anchor, *members.values()], clips, max_frame_rate, identity)
    path = Path(cache_dir) / "calibration" / f"pool-{key}.pt"
    cached = read_cache(path, lambda p: _load(torch.load(p, **LOAD)), list(members))
    if cached is not None:
        return cached, True
    stats = calibrate_pool(anchor, members, clips, *settings)
    write_atomically(path, lambda tmp: torch.save(_dump(stats), tmp))
    return stats, False
