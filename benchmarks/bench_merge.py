"""The merge as users run it, against plain forward passes of both encoders.

Two randomly initialised HuBERT-base-size encoders are exported once; then, alternating, a
``run.py`` job merges them with its defaults (fnn_attn, 32 calibration clips of at most 4 s
from the built-in synthetic set, a fresh cache, W&B offline; ``eval=none``, the merge alone)
and a plain process loads both encoders and runs them over the same clips. Both are timed
from process start to exit, so imports and loading weigh on both sides. Prints every stage's
seconds from ``results.json`` (``start`` is what precedes the job: interpreter, imports,
Hydra), the ratio merge / forward as a median over repeats, and each job's peak memory;
``--memory-clips`` runs the merge at other calibration sizes for the memory comparison.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def forward_process(a: str, b: str, clips: int, seconds: float, batch_size: int) -> None:
    """The baseline, in its own process: load both encoders, run them over the clips."""
    from merging.audio import calibration_clips
    from merging.forward import encode, min_samples, pad_batch
    from merging.load import load_encoder
    from merging.runtime import keep_freed_memory

    keep_freed_memory()
    ea, eb = load_encoder(a), load_encoder(b)
    chosen, _ = calibration_clips([], clips, ea.sample_rate, seconds, 0, min_samples(ea.config))
    order = sorted(chosen, key=lambda c: -c.wave.numel())
    for i in range(0, len(order), batch_size):
        wave, lengths = pad_batch([c.wave for c in order[i : i + batch_size]])
        encode(ea, wave, lengths)
        encode(eb, wave, lengths)


def export_pair(work: Path) -> tuple[Path, Path]:
    import torch
    from transformers import HubertConfig, HubertModel

    from merging.load import Encoder
    from merging.merge import export

    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = HubertModel(HubertConfig()).eval().requires_grad_(False)
        dirs.append(export(Encoder(model, f"hubert-base-random-{seed}"), work / f"enc{seed}"))
    return dirs[0], dirs[1]


def timed(argv: list[str]) -> float:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(argv[:3])} failed:\n{done.stderr[-3000:]}")
    return wall


def merge_job(a: Path, b: Path, work: Path, name: str, clips: int, args) -> dict:
    out = work / name
    wall = timed(
        [
            sys.executable,
            "run.py",
            "pair=local",
            f"pair.a={a}",
            f"pair.b={b}",
            "calibration=synthetic",  # the forward process's clips
            f"calibration.size={clips}",
            f"calibration.max_seconds={args.seconds}",
            f"calibration.batch_size={args.batch_size}",
            "eval=none",
            f"logger={args.logger}",
            "progress=false",
            f"paths.cache={work / name / 'cache'}",  # fresh: nothing reused between repeats
            f"hydra.run.dir={out}",
        ]
    )
    record = json.loads((out / "results.json").read_text())
    if record["status"] != "ok":
        sys.exit(f"merge job failed: {record['error']}")
    stages = {"start": wall - record["total_seconds"], **record["seconds"]}
    stages["rest"] = wall - sum(stages.values())  # results, W&B, interpreter exit
    audio = record["calibration"]["audio_seconds"]
    return {"wall": wall, "stages": stages, "rss_mb": record["peak_rss_mb"], "audio": audio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="merges timed; medians printed")
    parser.add_argument("--logger", default="wandb", help="run.py's logger (wandb: offline)")
    parser.add_argument(
        "--memory-clips", type=int, nargs="*", default=[128], help="more calibration sizes"
    )
    parser.add_argument("--forward", nargs=2, metavar=("A", "B"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.forward:
        forward_process(*args.forward, args.clips, args.seconds, args.batch_size)
        return

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-merge-"))
    atexit.register(shutil.rmtree, work, True)  # generated audio and encoders: GBs
    a, b = export_pair(work)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.clips} clips x "
        f"{args.seconds:g} s, batch {args.batch_size}, run.py defaults (fnn_attn, heatmaps, "
        f"export), logger {args.logger}, eval=none"
    )
    baseline = [sys.executable, __file__, "--forward", str(a), str(b), "--clips", str(args.clips)]
    baseline += ["--seconds", str(args.seconds), "--batch-size", str(args.batch_size)]
    # Forward processes and merge jobs alternate (F M F M ... F) and each merge is divided by
    # the mean of the two beside it, so drift on a shared machine weighs on both alike.
    forwards, merges = [timed(baseline)], []
    for i in range(args.repeats):
        merges.append(merge_job(a, b, work, f"job{i}", args.clips, args))
        forwards.append(timed(baseline))
    ratios = []
    for i, m in enumerate(merges):
        forward = (forwards[i] + forwards[i + 1]) / 2
        ratios.append(m["wall"] / forward)
        stages = ", ".join(f"{k} {v:.2f}" for k, v in m["stages"].items())
        print(
            f"repeat {i + 1}: forward process {forward:.2f} s; merge job {m['wall']:.2f} s "
            f"({stages}); ratio {ratios[-1]:.2f}"
        )
    med = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
    print(f"calibration audio: {merges[med]['audio']:.0f} s in {args.clips} clips")
    print(f"median ratio merge job / forward process = {ratios[med]:.2f} (target <= 1.5)")
    print("peak memory of the merge job:")
    print(f"  {args.clips:4d} clips: {merges[med]['rss_mb']:8.0f} MiB")
    for n in args.memory_clips:
        m = merge_job(a, b, work, f"mem{n}", n, args)
        change = m["rss_mb"] / merges[med]["rss_mb"] - 1
        print(f"  {n:4d} clips: {m['rss_mb']:8.0f} MiB ({change:+.1%}; target within 10%)")


if __name__ == "__main__":
    main()
