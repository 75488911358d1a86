"""Writing results and caches so that an interrupted job never leaves a half-written file."""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import importlib.util
import logging
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("merging.cache")
HOST = socket.gethostname()


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


def _sibling(path: Path, kind: str) -> Path:
    """A temporary sibling of ``path`` that names its writer (host and pid)."""
    return path.with_name(f"{path.name}.{kind}-{HOST}-{os.getpid()}")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(path: Path) -> None:
    """Remove what killed writers of ``path`` left beside it: temporary files and dirs of this
    host's processes that no longer run (a live writer's, or another host's, stay)."""
    for kind in ("tmp", "old"):
        for stale in path.parent.glob(f"{glob.escape(path.name)}.{kind}-{glob.escape(HOST)}-*"):
            pid = stale.name.rsplit("-", 1)[1]
            if pid.isdigit() and not _running(int(pid)):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write`` on a temporary sibling of ``path``, then move it into place."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(path)
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
    tmp, old = _sibling(path, "tmp"), _sibling(path, "old")
    remove_stale(path)
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
