"""Frame-level features on disk: every layer's frames of every clip in float16 shards, read
through memory maps a clip at a time, so that a task's frames never have to fit in memory.

A store is a folder: ``index.json`` (layers, width, the shard files, and per clip its shard,
element offset and frame count, in the order of the examples it was built from) and shards
``[PREFIX]shard-NNNNN.f16``, raw float16 (layers, frames, dim) arrays one after another. The
ranks of a pass spread over devices each write their own shards (a prefix per rank) into one
folder; ``write_index`` joins what they wrote. Disk cost: layers x dim x 2 bytes per
frame, e.g. 13 x 768 x 2 x 50 frames/s = 3.6 GB per hour of audio for a HuBERT-base upstream.
Probes that train on frames (CTC, a learned interface over layers) read it per batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

INDEX = "index.json"
SHARD_BYTES = 1 << 30


class FrameStoreWriter:
    """Append clips' (layers, frames, dim) frames in any order, then ``close`` with the order
    the store presents them in (or ``finish``, for ``write_index`` to join several writers)."""

    def __init__(self, root: Path, shard_bytes: int = SHARD_BYTES, prefix: str = ""):
        self.root, self.shard_bytes, self.prefix = Path(root), shard_bytes, prefix
        self.root.mkdir(parents=True, exist_ok=True)
        self.entries: dict[int, tuple[str, int, int]] = {}
        self.shape: tuple[int, int] | None = None
        self.shard, self.offset, self.file = -1, 0, None

    def add(self, key: int, frames: torch.Tensor) -> None:
        layers, count, dim = frames.shape
        if self.shape is None:
            self.shape = (layers, dim)
        elif self.shape != (layers, dim):
            raise ValueError(f"frames of shape {tuple(frames.shape)} in a {self.shape} store")
        data = frames.detach().cpu().to(torch.float16).contiguous().numpy()
        if self.file is None or (
            self.offset and (self.offset * 2 + data.nbytes > self.shard_bytes)
        ):
            self._next_shard()
        self.file.write(data.tobytes())
        self.entries[key] = (self.file_name, self.offset, count)
        self.offset += data.size

    def _next_shard(self) -> None:
        if self.file is not None:
            self.file.close()
        self.shard, self.offset = self.shard + 1, 0
        self.file_name = f"{self.prefix}shard-{self.shard:05d}.f16"
        self.file = (self.root / self.file_name).open("wb")

    def finish(self) -> dict[str, Any]:
        """Close the last shard; what ``write_index`` needs of this writer."""
        if self.file is not None:
            self.file.close()
        return {"shape": self.shape, "entries": self.entries}

    def close(self, order: Sequence[int], **meta: Any) -> None:
        """Finish the store, presenting the clips added under ``order``'s keys in that order;
        ``meta`` is kept in the index (``FrameStore.meta``)."""
        write_index(self.root, [self.finish()], order, **meta)


def write_index(
    root: Path, parts: Sequence[Mapping[str, Any]], order: Sequence[int], **meta: Any
) -> None:
    """Join writers' ``finish()`` results (one per rank) into the store at ``root``, whose
    shards they wrote, presenting the clips under ``order``'s keys in that order."""
    shapes = {tuple(p["shape"]) for p in parts if p["shape"] is not None}
    if len(shapes) > 1:
        raise ValueError(f"frame stores of different shapes cannot be joined: {sorted(shapes)}")
    layers, dim = shapes.pop() if shapes else (0, 0)
    entries = {k: v for p in parts for k, v in p["entries"].items()}
    shards = sorted({entries[k][0] for k in order})
    number = {name: i for i, name in enumerate(shards)}
    clips = [[number[entries[k][0]], *entries[k][1:]] for k in order]
    index = {"layers": layers, "dim": dim, "shards": shards, "clips": clips, "meta": meta}
    (Path(root) / INDEX).write_text(json.dumps(index))


class FrameStore(Sequence):
    """The clips' frames as a sequence of (layers, frames, dim) float16 tensors, each read from
    its memory-mapped shard when asked for. ``select`` gives a view of some of them."""

    def __init__(self, root: Path, positions: Sequence[int] | None = None, keep: object = None):
        self.root = Path(root)
        index = json.loads((self.root / INDEX).read_text())
        self.layers, self.dim = int(index["layers"]), int(index["dim"])
        self.shards = list(index["shards"])
        self.clips = [tuple(int(v) for v in c) for c in index["clips"]]
        self.meta: dict[str, Any] = index.get("meta") or {}
        self.positions = list(range(len(self.clips))) if positions is None else list(positions)
        self._maps: dict[int, np.memmap] = {}
        self._keep = keep  # e.g. the temporary dir the store lives in, for as long as it is used

    @classmethod
    def check(cls, root: Path) -> FrameStore:
        """Open a store, raising if its index or shards are incomplete: the loader of a cached
        store (``merging.files.read_cache`` removes a damaged one)."""
        store = cls(root)
        need: dict[int, int] = {}
        for shard, offset, count in store.clips:
            need[shard] = max(need.get(shard, 0), offset + store.layers * count * store.dim)
        for shard, elements in need.items():
            size = (store.root / store.shards[shard]).stat().st_size
            if size < 2 * elements:
                raise ValueError(f"shard {shard} holds {size} bytes, {2 * elements} expected")
        return store

    def __len__(self) -> int:
        return len(self.positions)

    def _read(self, position: int) -> torch.Tensor:
        shard, offset, count = self.clips[position]
        if shard not in self._maps:
            path = self.root / self.shards[shard]
            self._maps[shard] = np.memmap(path, dtype=np.float16, mode="r")
        size = self.layers * count * self.dim
        part = self._maps[shard][offset : offset + size]
        return torch.from_numpy(np.array(part).reshape(self.layers, count, self.dim))

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._read(p) for p in self.positions[i]]
        return self._read(self.positions[i])

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self._read(p) for p in self.positions)

    def select(self, indices: Sequence[int]) -> FrameStore:
        view = FrameStore.__new__(FrameStore)
        view.__dict__.update(self.__dict__)
        view.positions = [self.positions[i] for i in indices]
        view._maps = {}
        return view
