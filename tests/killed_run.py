"""``run.py`` (or ``python -m KILLED_MODULE``), killed with SIGKILL at a chosen point, as an
OOM killer or a lost node would.

    python tests/killed_run.py MODULE:NAME:N:WHEN[:PATH_PART] run.py-args...

kills the job at the N-th call of ``MODULE.NAME`` (``NAME`` may be ``Class.method``; only
calls whose first argument contains PATH_PART, if given), ``before`` or ``after`` the call.
``KILL_SIGNAL=SIGTERM`` (or SIGINT) sends that signal instead, as a scheduler or Ctrl-C would.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run.py's own imports
# Ctrl-C raises KeyboardInterrupt here even if the process that started this one ignored
# SIGINT (a child inherits an ignored signal, and Python then installs no handler for it).
signal.signal(signal.SIGINT, signal.default_int_handler)


def kill_at(point: str) -> None:
    module, name, n, when, *part = point.split(":")
    owner = importlib.import_module(module)
    *path, name = name.split(".")
    for attr in path:
        owner = getattr(owner, attr)
    real = getattr(owner, name)
    calls = 0
    sig = getattr(signal, os.environ.get("KILL_SIGNAL", "SIGKILL"))

    @functools.wraps(real)
    def wrapped(*args, **kwargs):
        nonlocal calls
        matched = not part or bool(args and part[0] in str(args[0]))
        calls += matched
        hit = matched and calls == int(n)
        if hit and when == "before":
            os.kill(os.getpid(), sig)
        out = real(*args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), sig)
        return out

    setattr(owner, name, wrapped)


if __name__ == "__main__":
    import runpy

    kill_at(sys.argv[1])  # before run.py imports the name, so that it imports the wrapper
    module = os.environ.get("KILLED_MODULE")
    if module:
        sys.argv = [module, *sys.argv[2:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script = Path(__file__).resolve().parents[1] / "run.py"
        sys.argv = [str(script), *sys.argv[2:]]
        runpy.run_path(str(script), run_name="__main__")
