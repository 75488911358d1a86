"""Config resolvers of the distillation config: ``${repo:PATH}`` (under the repository root)
and ``${demo_corpus:speech|music}`` (the demo suite's pretraining corpus, built on first use)."""

from __future__ import annotations

from omegaconf import OmegaConf

from report.resolvers import register_repo


def _demo_corpus(domain: str) -> str:
    from demo.suite import build_suite, default_root

    return str(build_suite(default_root()) / "pretrain" / domain)


def register_resolvers() -> None:
    register_repo()
    OmegaConf.register_new_resolver("demo_corpus", _demo_corpus, replace=True)
