"""Make torchaudio importable beside a CPU-only torch (``make s3prl`` runs this).

PyPI's torchaudio wheels ship a compiled extension (``torchaudio/lib/*.so``) linked against
CUDA libraries. Beside a CPU build of torch it cannot load, so ``import torchaudio`` fails, and
so does ``from transformers import HubertModel`` (transformers imports torchaudio whenever it is
installed). torchaudio loads its extension only if the files are there and otherwise runs its
pure-torch parts (``compliance.kaldi``, ``transforms``, ``functional``), which are all s3prl and
this project need. So, only when the import fails on a CPU build, the extension files are moved
into ``lib/unloadable-on-cpu/`` (out of the loader's sight, kept for reference); with a CUDA
build, or when the import works, nothing is touched.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

ASIDE = "unloadable-on-cpu"


def imports() -> tuple[bool, str]:
    """Whether ``import torchaudio`` works, tried in a fresh interpreter; and its error."""
    done = subprocess.run(
        [sys.executable, "-c", "import torchaudio"], capture_output=True, text=True
    )
    return done.returncode == 0, done.stderr.strip().splitlines()[-1] if done.stderr else ""


def main() -> int:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.origin is None:
        print("torchaudio is not installed", file=sys.stderr)
        return 1
    ok, error = imports()
    if ok:
        print("torchaudio imports as installed: nothing to do")
        return 0
    lib = Path(spec.origin).parent / "lib"
    if torch.version.cuda is not None or "Could not load this library" not in error:
        print(f"torchaudio does not import, and not for the known reason:\n{error}")
        return 1
    aside = lib / ASIDE
    aside.mkdir(exist_ok=True)
    for so in sorted(lib.glob("*.so")):
        so.rename(aside / so.name)
        print(f"moved {so.name} aside: CUDA-linked, cannot load beside torch {torch.__version__}")
    ok, error = imports()
    if not ok:
        print(f"torchaudio still does not import:\n{error}", file=sys.stderr)
        return 1
    print("torchaudio imports (pure-torch parts only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
