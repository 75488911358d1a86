"""``${repo:PATH}``: PATH under the repository root, wherever a command is started from. The
one config resolver every entry point (run.py, python -m distill, python -m search) shares."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def repo_path(path: str) -> str:
    return os.path.normpath(ROOT / path)


def register_repo() -> None:
    OmegaConf.register_new_resolver("repo", repo_path, replace=True)
