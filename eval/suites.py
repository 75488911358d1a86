"""Evaluation suites: which tasks a job is scored on, with their examples.

A suite is any callable returning ``[(Task, [Example, ...]), ...]``, named by the ``suite``
node of ``conf/eval/*.yaml`` (``_target_``, its arguments usually interpolated from the eval
node: ``root: ${..root}``). ``folder`` and ``paper`` are built in; the demo world brings its own
(``demo.plugin.suite``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from eval.data import Example, labelled_folder
from eval.datasets import speech_commands
from eval.tasks import PAPER_TASKS, Task
from merging.plugins import build

DOMAINS = ("speech", "music")
FLOORS = ("majority", "paper")  # the Speech score's floor: majority class, or the paper's FBANK
SuiteRows = list[tuple[Task, list[Example]]]


def suite_of(cfg: DictConfig) -> SuiteRows:
    """The suite the eval config names (``eval.suite``), built."""
    if cfg.get("floor", "majority") not in FLOORS:
        raise ValueError(f"eval.floor must be one of {FLOORS}, got {cfg.floor!r}")
    node = cfg.get("suite")
    if node is None:
        raise ValueError(f"eval={cfg.get('name')!r} names no suite (eval.suite._target_)")
    suite = build(node, "eval.suite")
    if not isinstance(suite, list) or not all(
        isinstance(t, Task) and isinstance(rows, list) for t, rows in suite
    ):
        raise TypeError(f"{node.get('_target_')} must return [(Task, [Example, ...]), ...]")
    return suite


def folder(root: str, domain: str = "speech", max_seconds: float = 10.0) -> SuiteRows:
    """One labelled folder (a sub-folder per class), as one utterance task."""
    if domain not in DOMAINS:
        raise ValueError(f"eval.domain must be one of {DOMAINS}, got {domain!r}")
    name = Path(root).name
    task = Task(name, name, domain, "utterance", "accuracy", labelled_folder, max_seconds)
    return [(task, labelled_folder(root))]


def paper(roots: Mapping[str, str | None], speech_commands_test: str | None = None) -> SuiteRows:
    """The paper's tasks whose benchmark root is given, each read by its dataset adapter."""
    suite = []
    for name, root in roots.items():
        if not root:
            continue
        if name not in PAPER_TASKS:
            raise ValueError(f"eval.roots.{name}: not a paper task ({', '.join(PAPER_TASKS)})")
        task = PAPER_TASKS[name]
        if name == "ks":  # SUPERB tests KS on the separate v0.01 test set
            rows = speech_commands(root, speech_commands_test or None)
        else:
            rows = task.adapter(root)
        suite.append((task, rows))
    if not suite:
        raise ValueError("eval=paper needs at least one of eval.roots.<task>=DIR")
    return suite
