"""Bridge to s3prl's own recipes: the installed package (``make s3prl``) or a checkout.

The exported merged checkpoint (``save_pretrained`` + preprocessor config) is what s3prl's
``hf_hubert_custom`` upstream loads, so every SUPERB task runs unchanged with
``-u hf_hubert_custom -k DIR``. From the installed package the recipes run through
:mod:`eval.s3prl.launch` (compatibility shims) with the recipe configs kept in ``recipes/``
(the wheels ship none); a checkout (``eval.s3prl.root``) runs its own ``run_downstream.py`` with
its own configs. The music tasks are not s3prl recipes: give their downstream names
(MARBLE-style recipes registered in your checkout) in ``eval.s3prl.downstreams``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.datasets import SPEECH_COMMANDS_WORDS

RECIPES = Path(__file__).parent / "recipes"  # one config per s3prl downstream: NAME.yaml
REPO = Path(__file__).resolve().parents[2]

_DATARC = "config.downstream_expert.datarc"
# paper task -> (s3prl downstream, the datarc keys its data root goes into)
SUPERB_RECIPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "asr_wer": ("asr", ("libri_root",)),
    "ks": ("speech_commands", ("speech_commands_root",)),
    "ic": ("fluent_commands", ("file_path",)),
    "sid": ("voxceleb1", ("file_path",)),
    "er": ("emotion", ("root",)),
}
IEMOCAP_FOLDS = tuple(f"fold{k}" for k in range(1, 6))


@dataclass(frozen=True)
class S3prlCommand:
    task: str
    name: str  # the experiment name (-n), unique per task and fold
    train: list[str]
    evaluate: list[str]

    def shell(self) -> str:
        return f"{shlex.join(self.train)} && \\\n  {shlex.join(self.evaluate)}"


def _flat(config: Mapping[str, Any], prefix: str = "config") -> list[str]:
    out = []
    for key, value in config.items():
        if isinstance(value, Mapping):
            out += _flat(value, f"{prefix}.{key}")
        else:
            out.append(f"{prefix}.{key}={value!r}")  # s3prl evaluates each value
    return out


def _override(pairs: Mapping[str, str], config: Mapping[str, Any]) -> str:
    """s3prl's ``-o``: data roots into the datarc, then ``config``, a nested mapping of the
    recipe config's keys (``{runner: {total_steps: 6}}``)."""
    return ",,".join([f"{_DATARC}.{k}='{v}'" for k, v in pairs.items()] + _flat(config))


def listed_test_set(root: str | Path, out: str | Path) -> Path:
    """A Speech Commands test folder s3prl's KS expert reads, made of symlinks to the files of
    ``root/testing_list.txt``: the fallback when SUPERB's separate v0.01 test set is not given
    (words outside the ten keywords go to ``_unknown_``; the list holds no ``_silence_``)."""
    root, out = Path(root), Path(out)
    listed = root / "testing_list.txt"
    if not listed.is_file():
        raise FileNotFoundError(
            f"{listed} is missing; give SUPERB's test set in eval.speech_commands_test"
        )
    for rel in listed.read_text().split():
        word, name = rel.split("/")
        label = word if word in SPEECH_COMMANDS_WORDS else "_unknown_"
        link = out / label / f"{word}_{name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to((root / rel).resolve())
    return out


def installed() -> bool:
    """Whether the ``s3prl`` extra is installed (``make s3prl``)."""
    return importlib.util.find_spec("s3prl") is not None


def s3prl_commands(
    checkpoint: str | Path,
    roots: Mapping[str, str | None],
    prefix: str = "merged",
    speech_commands_test: str | None = None,
    downstreams: Mapping[str, str | None] | None = None,
    python: str = "python3",
    upstream: str = "hf_hubert_custom",
    package: bool = False,
    config: Mapping[str, Any] | None = None,
) -> tuple[list[S3prlCommand], dict[str, str]]:
    """Train + test commands per task with a root; returns them and, per skipped task, why.

    ``package``: run the installed s3prl through the launcher with the recipe configs in
    ``recipes/`` (a task without one there is skipped); otherwise a checkout's
    ``run_downstream.py``. ``config``: overrides of the recipe config, a nested mapping."""
    commands, skipped = [], {}
    program = [python, "-m", "eval.s3prl.launch"] if package else [python, "run_downstream.py"]
    ckpt = str(Path(checkpoint).resolve())
    for task, root in roots.items():
        if not root:
            continue
        if task in SUPERB_RECIPES:
            downstream, keys = SUPERB_RECIPES[task]
            pairs = {keys[0]: str(root)}
        elif (downstreams or {}).get(task):
            downstream, pairs = str(downstreams[task]), {"file_path": str(root)}
        else:
            skipped[task] = "no s3prl recipe: set eval.s3prl.downstreams." + task
            continue
        recipe = RECIPES / f"{downstream}.yaml"
        if package and not recipe.is_file():
            skipped[task] = (
                f"no {downstream} recipe config in {RECIPES} (the s3prl wheels ship none): "
                "add one, or run from an s3prl checkout (eval.s3prl.root)"
            )
            continue
        if task == "ks":
            if not speech_commands_test:
                skipped[task] = "SUPERB's KS needs eval.speech_commands_test (the v0.01 test set)"
                continue
            pairs["speech_commands_test_root"] = speech_commands_test
        folds = IEMOCAP_FOLDS if task == "er" else (None,)
        for fold in folds:
            name = f"{prefix}_{task}_{fold}" if fold else f"{prefix}_{task}"
            extra = {**pairs, "test_fold": fold} if fold else pairs
            train = [
                *program,
                "-m",
                "train",
                "-n",
                name,
                "-u",
                upstream,
                "-k",
                ckpt,
                "-d",
                downstream,
                *(["-c", str(recipe)] if package else []),
                "-o",
                _override(extra, config or {}),
            ]
            best = "dev-clean-best.ckpt" if task == "asr_wer" else "dev-best.ckpt"
            evaluate = [
                *program,
                "-m",
                "evaluate",
                "-e",
                f"result/downstream/{name}/{best}",
            ]
            if task == "asr_wer":
                evaluate[-2:-2] = ["-t", "test-clean"]
            commands.append(S3prlCommand(task, name, train, evaluate))
    return commands, skipped


def write_script(
    commands: list[S3prlCommand], path: str | Path, workdir: str | Path | None
) -> Path:
    """A shell script a user can run (or edit), in ``workdir`` when given."""
    cd = f"cd {shlex.quote(str(workdir))}\n" if workdir else ""
    body = "\n\n".join(f"# {c.task}\n{c.shell()}" for c in commands)
    path = Path(path)
    path.write_text(
        f"#!/usr/bin/env bash\n# s3prl recipes for this merge\nset -euo pipefail\n{cd}\n{body}\n"
    )
    path.chmod(0o755)
    return path


# What s3prl's experts print after evaluating a split: "test acc: 0.97" (a fraction) for the
# classification recipes, "test-clean wer: 6.4" (already in %) for ASR.
_RESULT = re.compile(r"^(test\S*) (acc|wer): ([-+0-9.eE]+)\s*$", re.MULTILINE)


def parse_result(log: str) -> tuple[str, float] | None:
    """The last test metric an s3prl evaluate run printed, as (metric, value in %)."""
    found = _RESULT.findall(log)
    if not found:
        return None
    _, metric, value = found[-1]
    return ("accuracy", 100 * float(value)) if metric == "acc" else ("wer", float(value))


def checkout(root: str | Path) -> Path:
    """The folder of an s3prl checkout that holds ``run_downstream.py``."""
    workdir = Path(root).expanduser() / "s3prl"
    if not (workdir / "run_downstream.py").is_file():
        raise FileNotFoundError(
            f"{workdir} has no run_downstream.py; is eval.s3prl.root an s3prl checkout?"
        )
    return workdir


def run_commands(commands: list[S3prlCommand], workdir: str | Path, log_dir: str | Path) -> dict:
    """Run each recipe in ``workdir`` (a checkout's ``s3prl/``, or any folder for the
    installed package: experiments go to ``workdir/result/downstream/NAME``), one log each.

    Returns per experiment its status, its folder, its seconds and, parsed from the evaluate
    run's output, its test metric; failures are recorded, not raised.
    """
    workdir, log_dir = Path(workdir), Path(log_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = os.environ.get("PYTHONPATH")  # the launcher is importable, installed or not
    env = {**os.environ, "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}
    runs = {}
    for c in commands:
        log_path = log_dir / f"{c.name}.log"
        rc, evaluated = 0, ""
        start = time.perf_counter()
        with open(log_path, "w") as log:
            for argv in (c.train, c.evaluate):
                log.write(f"$ {shlex.join(argv)}\n")
                log.flush()
                done = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, env=env)
                log.write(done.stdout + done.stderr)
                rc = done.returncode
                if rc:
                    break
            else:
                evaluated = done.stdout
        seconds = time.perf_counter() - start
        run: dict = {
            "task": c.task,
            "status": "ok",
            "log": str(log_path),
            "dir": str(workdir / "result" / "downstream" / c.name),
            "seconds": round(seconds, 2),
        }
        parsed = parse_result(evaluated) if rc == 0 else None
        if rc:
            run["status"] = f"failed (exit {rc}, see {log_path})"
        elif parsed is None:
            run["status"] = f"no test metric in the evaluate output (see {log_path})"
        else:
            run["metric"], run["value"] = parsed
        runs[c.name] = run
    return runs


def task_metrics(runs: Mapping[str, dict]) -> dict[str, dict]:
    """Per paper task, the test metric; ER's five folds are averaged, as SUPERB reports it."""
    per_task: dict[str, list[dict]] = {}
    for run in runs.values():
        per_task.setdefault(run["task"], []).append(run)
    out = {}
    for task, task_runs in per_task.items():
        values = [r["value"] for r in task_runs if "value" in r]
        if len(values) == len(task_runs):
            out[task] = {
                "metric": task_runs[0]["metric"],
                "value": sum(values) / len(values),
                "runs": len(values),
            }
    return out
