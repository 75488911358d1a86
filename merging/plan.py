"""Alignment plans: the permutations matching found, cached by everything that decides them.

A job that changes only how the aligned members are combined (``merge.alpha``, per-part
weights, the merge method) reuses the plan instead of matching again: the key is the
calibration statistics themselves, the scope, the matcher's settings, the members' weights
(data-free matchers read them) and the code that matches. Plans live in
``<cache>/plans/<key>.safetensors`` as ``member/group`` permutations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from merging.calibrate import PointStats
from merging.files import read_cache, write_atomically
from merging.identity import model_digest, source_digest
from merging.match import Scope
from merging.pool import Pool

PLANS_VERSION = 1
Perms = dict[str, dict[str, torch.Tensor]]


def stats_digest(stats: Mapping[str, Mapping[str, PointStats]]) -> str:
    """A digest of every member's statistics at every merge point (names, counts, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for member in sorted(stats):
        for point in sorted(stats[member]):
            h.update(f"{member}/{point}\0{stats[member][point].n}".encode())
            for name, value in sorted(stats[member][point].to_dict().items()):
                if isinstance(value, torch.Tensor):
                    h.update(name.encode())
                    h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def plan_key(
    pool: Pool,
    stats: Mapping[str, Mapping[str, PointStats]],
    scope: Scope,
    match: Mapping[str, Any],
    matcher_modules: tuple[str, ...] = (),
) -> str:
    blob = {
        "version": PLANS_VERSION,
        "stats": stats_digest(stats),
        "scope": dataclasses.asdict(scope),
        "match": match,
        "anchor": pool.anchor,
        "weights": {name: model_digest(encoder.model) for name, encoder in pool},
        "code": source_digest("merging.match", "merging.spec", *matcher_modules),
    }
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def plan_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / "plans" / f"{key}.safetensors"


def load_plan(cache_dir: str | Path | None, key: str) -> Perms | None:
    """The cached plan under ``key``; None if there is none (or it is damaged)."""
    if cache_dir is None:
        return None
    flat = read_cache(plan_path(cache_dir, key), lambda p: load_file(str(p)))
    if flat is None:
        return None
    perms: Perms = {}
    for name, index in flat.items():
        member, group = name.split("/", 1)
        perms.setdefault(member, {})[group] = index
    return perms


def save_plan(cache_dir: str | Path | None, key: str, perms: Perms) -> None:
    if cache_dir is None:
        return
    flat = {f"{m}/{g}": p.contiguous() for m, groups in perms.items() for g, p in groups.items()}
    path = plan_path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: save_file(flat, str(tmp)))
