"""The two evaluation protocols side by side: s3prl's own runner against the project's probe.

Same checkpoint (default: the demo speech encoder, exported in float32 as merges are), same
task: the demo world's keyword spotting clips laid out as Speech Commands v0.01 (word folders,
``_background_noise_``, the separate test set). s3prl trains its recipe (weighted layer sum,
projector, mean pooling, linear; Adam 1e-4) for ``--steps`` steps with the encoder forwarded at
every step, and keeps the best dev checkpoint; the project extracts every layer's pooled
features once and fits its probe grid (learning rates x seeds) on them. Prints each protocol's
wall seconds and test accuracy. The train/dev split differs: s3prl hashes file names, the
project reads validation_list.txt. Needs the s3prl extra (make s3prl).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from demo.suite import build_suite, default_root
from eval.evaluate import evaluate
from eval.s3prl import installed, run_commands, s3prl_commands, task_metrics
from merging.load import load_encoder
from merging.merge import export

ROOT = Path(__file__).resolve().parents[1]


def speech_commands_layout(ks: Path, out: Path) -> tuple[Path, Path]:
    """Symlinks of the demo KS clips in Speech Commands v0.01's layout: (train root, test root)."""
    train, test = out / "train", out / "test"
    valid = []
    with open(ks / "manifest.csv") as f:
        for i, row in enumerate(csv.DictReader(f)):
            label, split = row["label"], row["split"]
            if split == "test":
                link = test / label / f"{i:05d}.wav"
            elif label == "_silence_":
                link = train / "_background_noise_" / f"{i:05d}.wav"
            else:
                link = train / label / f"{row['group']}{i:05d}_nohash_0.wav"
                if split == "valid":
                    valid.append(link.relative_to(train).as_posix())
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((ks / row["path"]).resolve())
    (train / "validation_list.txt").write_text("\n".join(valid) + "\n")
    (train / "testing_list.txt").write_text("")
    return train, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "demo-speech"))
    parser.add_argument("--steps", type=int, default=1000, help="s3prl's training steps")
    args = parser.parse_args()
    if not installed():
        sys.exit("s3prl is not installed: make s3prl")
    os.environ.setdefault("WANDB_MODE", "disabled")
    work = Path(tempfile.mkdtemp(prefix="s3prl-vs-probes-"))
    train, test = speech_commands_layout(build_suite(default_root()) / "ks", work / "sc")
    print(
        f"task: {sum(1 for _ in train.rglob('*.wav'))} train+dev clips, "
        f"{sum(1 for _ in test.rglob('*.wav'))} test clips; work dir {work}"
    )

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose(
            "config",
            ["eval=paper", f"eval.roots.ks={train}", f"eval.speech_commands_test={test}"],
        )
    encoder = load_encoder(args.checkpoint)  # float32, as a merged checkpoint is exported
    checkpoint = str(export(encoder, work / "checkpoint"))
    start = time.perf_counter()
    probes = evaluate(
        encoder,
        cfg.eval,
        work / "cache",
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
        progress=False,
    )
    probe_seconds = time.perf_counter() - start
    probe_acc = probes["tasks"]["ks"]["value"]

    every = max(args.steps // 4, 1)
    config = {
        "runner": {"total_steps": args.steps, "eval_step": every, "save_step": every},
        "downstream_expert": {"datarc": {"num_workers": 0}},
    }
    commands, skipped = s3prl_commands(
        checkpoint, {"ks": str(train)}, "bench", str(test), python=sys.executable,
        package=True, config=config,
    )  # fmt: skip
    if skipped:
        sys.exit(f"s3prl recipe skipped: {skipped}")
    runs = run_commands(commands, work / "s3prl", work / "logs")
    (run,) = runs.values()
    if "value" not in run:
        sys.exit(f"s3prl run failed: {run['status']}")
    s3prl_acc = task_metrics(runs)["ks"]["value"]

    print("| protocol | wall (s) | test accuracy (%) |\n|---|---|---|")
    print(f"| s3prl run_downstream, {args.steps} steps | {run['seconds']:.1f} | {s3prl_acc:.2f} |")
    print(
        f"| project probe (features once, {len(cfg.eval.probe.lrs)} lrs x "
        f"{len(cfg.eval.probe.seeds)} seeds) | {probe_seconds:.1f} | {probe_acc:.2f} |"
    )
    print(f"ratio s3prl / probe wall time: {run['seconds'] / probe_seconds:.1f}")


if __name__ == "__main__":
    main()
