"""Feature extraction as the probes run it, streamed from disk, against a plain forward loop.

A folder of ten-second clips (16 and 22.05 kHz WAV, so that some are resampled) is generated
once; a randomly initialised HuBERT-base-size encoder is the upstream. Each measurement runs in
its own process:

- ``stream``: ``eval.features.pooled_features`` end to end (headers, decoding and resampling in
  worker processes, forward passes, pooling), timed from the first file read;
- ``plain``: the same clips decoded first (not timed), then a loop that forwards them in the
  same batches: the encoder's own cost, the goal the stream should reach (>= 0.9x);
- peak resident memory of the process (and of its decoding workers) at two dataset sizes 4x
  apart: memory must not follow the number of clips (goal: within 10%); and, within the larger
  run, the resident memory once a quarter of its clips are done against the whole run: the
  allocator's placement in the first batches moves a run's peak by itself, so two runs' peaks
  differ by more than any growth with the clips;
- ``--workers`` 0 against 2 decoding processes.
"""

from __future__ import annotations

import argparse
import atexit
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_folder(root: Path, clips: int, seconds: float) -> list[str]:
    import numpy as np
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(clips):
        path = root / f"clip{i:05d}.wav"
        rate = (16000, 22050)[i % 2]
        if not path.exists():
            t = np.arange(int(rate * seconds)) / rate
            wave = 0.2 * np.sin(2 * np.pi * rng.uniform(80, 800) * t) + 0.05 * rng.standard_normal(
                t.size
            )
            sf.write(path, wave.astype(np.float32), rate)
        paths.append(str(path))
    return paths


def measure(
    mode: str, model: str, paths: list[str], workers: int, batch: int, keep: bool = True
) -> dict:
    """One measurement, in this process (``--run``)."""
    import torch

    from eval.data import Example
    from eval.features import EncoderUpstream, pooled_features
    from merging.audio import read_audio
    from merging.forward import pad_batch
    from merging.load import load_encoder
    from merging.loader import length_batches
    from merging.runtime import keep_freed_memory

    if keep:  # as run.py does; off, glibc returns large freed blocks to the OS
        keep_freed_memory()
    upstream = EncoderUpstream(load_encoder(model))
    rows = [Example(p, str(i % 2), "train") for i, p in enumerate(paths)]
    seconds = 10.0
    samples: list[tuple[float, float]] = []  # resident memory during the stream
    if mode == "plain":
        waves = [torch.from_numpy(read_audio(p, 16000, seconds)) for p in paths]
        start = time.perf_counter()
        with torch.no_grad():
            for b in length_batches([w.numel() for w in waves], batch):
                upstream.layers(*pad_batch([waves[k] for k in b]))
        wall = time.perf_counter() - start
        audio = sum(w.numel() for w in waves) / 16000
    else:
        done = threading.Event()
        start = time.perf_counter()
        threading.Thread(target=sample_rss, args=(samples, start, done), daemon=True).start()
        feats = pooled_features(upstream, rows, None, seconds, batch, False, workers)
        wall = time.perf_counter() - start
        done.set()
        audio = len(feats.examples) * seconds
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {"wall": wall, "audio": audio, "rss_mb": own, "worker_rss_mb": children}
    quarter = [rss for t, rss in samples if t <= wall / 4]
    if quarter:
        result |= {"quarter_rss_mb": max(quarter), "run_rss_mb": max(r for _, r in samples)}
    return result


def sample_rss(samples: list, start: float, done: threading.Event, every: float = 0.5) -> None:
    """(seconds since ``start``, resident MiB) of this process until ``done`` (Linux)."""
    status = Path("/proc/self/status")
    while status.exists() and not done.wait(every):
        kib = status.read_text().split("VmRSS:")[1].split()[0]
        samples.append((time.perf_counter() - start, int(kib) / 1024))


def run(
    mode: str, model: str, paths: list[str], workers: int, batch: int, work: Path, keep: bool
) -> dict:
    listing = work / f"paths-{len(paths)}.json"
    listing.write_text(json.dumps(paths))
    argv = [sys.executable, __file__, "--run", mode, model, str(listing), str(workers), str(batch)]
    argv += [] if keep else ["--glibc-default"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=0.5, help="the smaller dataset")
    parser.add_argument("--scale", type=int, default=4, help="the larger one, in multiples")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--glibc-default", action="store_true", help="do not keep freed memory (run.py does)"
    )
    parser.add_argument("--memory-only", action="store_true", help="only the two sizes' memory")
    parser.add_argument("--run", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    keep = not args.glibc_default
    if args.run:
        mode, model, listing, workers, batch = args.run
        paths = json.loads(Path(listing).read_text())
        print(json.dumps(measure(mode, model, paths, int(workers), int(batch), keep)))
        return

    import torch
    from transformers import HubertConfig, HubertModel

    from merging.load import Encoder
    from merging.merge import export

    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    atexit.register(shutil.rmtree, work, True)  # generated audio and encoders: GBs
    torch.manual_seed(0)
    model = HubertModel(HubertConfig()).eval().requires_grad_(False)
    model_dir = export(Encoder(model, "hubert-base-random"), work / "encoder")
    n = round(args.hours * 360)
    paths = make_folder(work / "audio", n * args.scale, 10.0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; HuBERT-base-size encoder;"
        f" {n} and {n * args.scale} clips of 10 s (16 / 22.05 kHz WAV), batch {args.batch_size}"
    )
    small = paths[:n]
    rows = {}
    for workers in (args.workers,) if args.memory_only else (args.workers, 0):
        rows[workers] = run("stream", str(model_dir), small, workers, args.batch_size, work, keep)
    big = run("stream", str(model_dir), paths, args.workers, args.batch_size, work, keep)

    def rate(m: dict) -> float:
        return m["audio"] / m["wall"]

    if not args.memory_only:
        plain = run("plain", str(model_dir), small, 0, args.batch_size, work, keep)
        print(f"plain loop over pre-decoded clips: {rate(plain):7.1f} s of audio per s")
        for workers, m in rows.items():
            print(
                f"streamed, {workers} decoding workers: {rate(m):7.1f} s/s "
                f"({rate(m) / rate(plain):.2f}x the plain loop)"
            )
    small_h, big_h = n * 10 / 3600, n * args.scale * 10 / 3600
    base = rows[args.workers]
    change = big["rss_mb"] / base["rss_mb"] - 1
    malloc = "glibc's default" if args.glibc_default else "freed memory kept, as run.py does"
    print(f"peak resident memory ({malloc}; main process, decoding workers beside it):")
    print(f"  {small_h:4.2f} h: {base['rss_mb']:7.0f} MiB ({base['worker_rss_mb']:.0f} MiB)")
    print(
        f"  {big_h:4.2f} h: {big['rss_mb']:7.0f} MiB ({big['worker_rss_mb']:.0f} MiB); "
        f"{change:+.1%} (target within 10%)"
    )
    if "quarter_rss_mb" in big:
        growth = big["run_rss_mb"] / big["quarter_rss_mb"] - 1
        print(
            f"  within the {big_h:.2f} h run: {big['quarter_rss_mb']:.0f} MiB after a quarter of"
            f" its clips, {big['run_rss_mb']:.0f} MiB over the whole run ({growth:+.1%})"
        )


if __name__ == "__main__":
    main()
