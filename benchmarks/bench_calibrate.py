"""Calibration's memory against the size of the calibration set, audio streamed from files.

Two randomly initialised HuBERT-base-size encoders; a generated folder of 4 s clips (16 and
22.05 kHz WAV); ``merging.calibrate.calibrate`` over the first N of them as ``run.py`` draws
them (``calibration_clips``, a batch decoded at a time in worker processes), each size in its
own process, freed memory kept as ``run.py`` does. Prints peak resident memory and seconds per
size (goal: the largest within 10% of the smallest), and the audio rate.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 4.0


def measure(a: str, b: str, folder: str, clips: int, batch: int) -> dict:
    """One size, in this process (``--run``)."""
    from merging.audio import calibration_clips
    from merging.calibrate import calibrate
    from merging.forward import min_samples
    from merging.load import load_encoder
    from merging.runtime import keep_freed_memory

    keep_freed_memory()
    ea, eb = load_encoder(a), load_encoder(b)
    chosen, skipped = calibration_clips(
        [folder], clips, ea.sample_rate, SECONDS, 0, min_samples(ea.config)
    )
    start = time.perf_counter()
    stats = calibrate(ea, eb, chosen, batch, progress=False)
    wall = time.perf_counter() - start
    return {
        "clips": len(chosen),
        "skipped": len(skipped),
        "audio": sum(c.samples for c in chosen) / ea.sample_rate,
        "wall": wall,
        "points": len(stats),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--run", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        a, b, folder, clips = args.run
        print(json.dumps(measure(a, b, folder, int(clips), args.batch_size)))
        return

    import torch

    from benchmarks.bench_extract import make_folder
    from benchmarks.bench_merge import export_pair

    work = Path(tempfile.mkdtemp(prefix="bench-calibrate-"))
    atexit.register(shutil.rmtree, work, True)  # generated audio and encoders: GBs
    a, b = export_pair(work)
    folder = work / "audio"
    make_folder(folder, max(args.sizes), SECONDS)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; two HuBERT-base-size "
        f"encoders; clips of {SECONDS:g} s (16 / 22.05 kHz WAV) read from disk, batch "
        f"{args.batch_size}"
    )
    rows = []
    for n in args.sizes:
        argv = [sys.executable, __file__, "--run", str(a), str(b), str(folder), str(n)]
        argv += ["--batch-size", str(args.batch_size)]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{n} clips failed:\n{done.stderr[-3000:]}")
        m = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(m)
        change = m["rss_mb"] / rows[0]["rss_mb"] - 1
        print(
            f"  {m['clips']:5d} clips ({m['audio']:6.0f} s): {m['wall']:7.1f} s "
            f"({m['audio'] / m['wall']:.1f} s of audio/s), peak {m['rss_mb']:6.0f} MiB "
            f"(workers {m['worker_rss_mb']:.0f} MiB)"
            + (f"; {change:+.1%} (target within 10%)" if len(rows) > 1 else "")
        )


if __name__ == "__main__":
    main()
