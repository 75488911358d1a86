"""Writing results and caches so that an interrupted job never leaves a half-written file."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("merging.cache")


@functools.cache
def source_digest(*modules: str) -> str:
    """A digest of the named modules' source files: part of every cache key and of a job's
    resume identity, so that a change to the code computing a value recomputes it instead of
    serving the old one."""
    digest = hashlib.blake2b(digest_size=8)
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"no source for module {name!r}")
        digest.update(name.encode() + b"\0" + Path(spec.origin).read_bytes())
    return digest.hexdigest()


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write`` on a temporary sibling of ``path``, then move it into place."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(f"could not write {path}: {err.strerror or err}") from err
    return path


def replace_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write`` on a temporary sibling dir of ``path``, then swap it into place: a
    reader finds the old dir whole or the new one whole, never a mix of both."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    old = path.with_name(f"{path.name}.old{os.getpid()}")
    for stale in path.parent.glob(f"{path.name}.tmp*"):  # left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)
    write(tmp)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def read_cache(path: str | Path, load: Callable[[Path], T]) -> T | None:
    """``load(path)`` if the cache entry is there and readable; a damaged entry (truncated,
    not the expected format) is named in a warning, removed and reported as missing, so
    that it is recomputed instead of failing every job that uses it."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load(path)
    except Exception as err:  # noqa: BLE001 - whatever the loader raises, the entry is bad
        log.warning(
            "damaged cache entry %s (%s: %s): removed, recomputing", path, type(err).__name__, err
        )
        path.unlink(missing_ok=True)
        return None
