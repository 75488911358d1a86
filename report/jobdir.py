"""A job's output dir: one live job at a time, and a finished result that nothing later loses.

- ``hold``: an exclusive ``fcntl`` lock on ``DIR/.lock`` for the job's life. The OS releases
  it when the process ends however it ends (SIGKILL included), so a stale lock never blocks a
  restart; a second live job in the same dir is refused with the holder's pid, host and start.
- ``record_rejection``: a job refused before any work (a missing dataset root, a bad value)
  writes ``results.failed.json`` beside an ok ``results.json``, which stays as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from report.record import JobRecord

LOCK = ".lock"
RECORD = "results.json"
REJECTED = "results.failed.json"


class JobDirBusy(RuntimeError):
    """Another live job holds the output dir."""


@contextlib.contextmanager
def hold(out: Path) -> Iterator[None]:
    """Hold ``out`` for this job (see the module docstring); ``JobDirBusy`` if a live job does."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise JobDirBusy(
            f"output dir {out} is in use by another running job ({holder}); wait for it to end, "
            "or give this job its own dir (hydra.run.dir=..., or another hydra.sweep.dir)"
        ) from None
    try:
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def record_rejection(out: Path, record: JobRecord) -> Path:
    """Write a job refused before any work: ``results.json`` unless that holds an ok result,
    which is kept (with its outputs); then ``results.failed.json`` beside it."""
    try:
        previous = json.loads((out / RECORD).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        previous = None
    return record.write(out / (REJECTED if previous == "ok" else RECORD))


def clear_rejection(out: Path) -> None:
    """A job that starts its work makes an earlier rejection beside it moot."""
    (out / REJECTED).unlink(missing_ok=True)


class OutputDirCheck(Callback):
    """Hydra callback: an output dir that is a file is named before Hydra tries to create it
    (which would end in a traceback)."""

    @staticmethod
    def _check(path: str) -> None:
        if Path(path).is_file():
            sys.stderr.write(
                f"error: the output dir {path} is a file; choose another dir "
                "(hydra.run.dir=... or hydra.sweep.dir=...)\n"
            )
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(str(config.hydra.sweep.dir))
