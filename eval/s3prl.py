"""Bridge to s3prl's own recipes, for users with an s3prl checkout and the real datasets.

The exported merged checkpoint (``save_pretrained`` + preprocessor config) is what s3prl's
``hf_hubert_custom`` upstream loads, so every SUPERB task runs unchanged with
``-u hf_hubert_custom -k DIR``. The music tasks are not s3prl recipes: give their downstream
names (MARBLE-style recipes registered in your checkout) in ``eval.s3prl.downstreams``.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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


def _override(pairs: Mapping[str, str]) -> str:
    return ",,".join(f"{_DATARC}.{k}='{v}'" for k, v in pairs.items())


def s3prl_commands(
    checkpoint: str | Path,
    roots: Mapping[str, str | None],
    prefix: str = "merged",
    speech_commands_test: str | None = None,
    downstreams: Mapping[str, str | None] | None = None,
    python: str = "python3",
) -> tuple[list[S3prlCommand], dict[str, str]]:
    """Train + test commands per task with a root; returns them and, per skipped task, why."""
    commands, skipped = [], {}
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
                python,
                "run_downstream.py",
                "-m",
                "train",
                "-n",
                name,
                "-u",
                "hf_hubert_custom",
                "-k",
                ckpt,
                "-d",
                downstream,
                "-o",
                _override(extra),
            ]
            best = "dev-clean-best.ckpt" if task == "asr_wer" else "dev-best.ckpt"
            evaluate = [
                python,
                "run_downstream.py",
                "-m",
                "evaluate",
                "-e",
                f"result/downstream/{name}/{best}",
            ]
            if task == "asr_wer":
                evaluate[3:3] = ["-t", "test-clean"]
            commands.append(S3prlCommand(task, name, train, evaluate))
    return commands, skipped


def write_script(commands: list[S3prlCommand], path: str | Path, s3prl_root: str | None) -> Path:
    """A shell script a user can run (or edit) from their s3prl checkout."""
    cd = f"cd {shlex.quote(str(Path(s3prl_root) / 's3prl'))}\n" if s3prl_root else ""
    body = "\n\n".join(f"# {c.task}\n{c.shell()}" for c in commands)
    path = Path(path)
    path.write_text(
        f"#!/usr/bin/env bash\n# s3prl recipes for this merge\nset -euo pipefail\n{cd}\n{body}\n"
    )
    path.chmod(0o755)
    return path


def run_commands(commands: list[S3prlCommand], s3prl_root: str | Path, log_dir: str | Path) -> dict:
    """Run each recipe in ``<s3prl_root>/s3prl``; logs per experiment; failures are recorded."""
    workdir = Path(s3prl_root).expanduser() / "s3prl"
    if not (workdir / "run_downstream.py").is_file():
        raise FileNotFoundError(
            f"{workdir} has no run_downstream.py; is eval.s3prl.root an s3prl checkout?"
        )
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    status = {}
    for c in commands:
        with open(log_dir / f"{c.name}.log", "w") as log:
            rc = 0
            for argv in (c.train, c.evaluate):
                rc = subprocess.run(
                    argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
                ).returncode
                if rc:
                    break
        status[c.name] = (
            "ok" if rc == 0 else f"failed (exit {rc}, see {log_dir / (c.name + '.log')})"
        )
    return status
