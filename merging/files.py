"""Writing results and caches so that an interrupted job never leaves a half-written file."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("merging.cache")
HOST = socket.gethostname()


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


def read_cache(
    path: str | Path, load: Callable[[Path], T], fields: Collection[str] = ()
) -> T | None:
    """``load(path)`` if the cache entry (a file, or a folder written by ``replace_dir``) is
    there and readable and (a mapping) holds every one of ``fields``; a damaged entry
    (truncated, not the expected format, parts missing) is named in a warning, removed and
    reported as missing, so that it is recomputed instead of failing every job that uses it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        value = load(path)
        if fields:
            if not isinstance(value, Mapping):
                raise ValueError(f"a {type(value).__name__}, not a mapping")
            missing = sorted(set(fields) - set(value))
            if missing:
                raise ValueError(f"lacks {', '.join(missing)}")
        return value
    except Exception as err:  # noqa: BLE001 - whatever the loader raises, the entry is bad
        log.warning(
            "damaged cache entry %s (%s: %s): removed, recomputing", path, type(err).__name__, err
        )
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return None
