"""Config resolvers of the distillation config: ``${repo:PATH}`` (under the repository root)
and ``${demo_corpus:speech|music}`` (the demo suite's pretraining corpus, built on first use)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def _repo(path: str) -> str:
    return os.path.normpath(ROOT / path)


def _demo_corpus(domain: str) -> str:
    from demo.suite import build_suite, default_root

    return str(build_suite(default_root()) / "pretrain" / domain)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("repo", _repo, replace=True)
    OmegaConf.register_new_resolver("demo_corpus", _demo_corpus, replace=True)
