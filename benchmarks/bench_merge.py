"""Cost of a merge relative to a plain forward pass of both encoders over the same clips.

Two randomly initialised HuBERT-base-size encoders, 32 calibration clips of 4 s. Prints the
seconds of each stage and ratio = (calibration + matching + applying) / (forward A + B), as
medians over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import HubertConfig, HubertModel

from merging.audio import synthetic_clips
from merging.calibrate import calibrate
from merging.forward import encode, pad_batch
from merging.load import Encoder
from merging.match import Scope
from merging.merge import merge
from merging.runtime import keep_freed_memory

SCOPES = {"fnn_attn": Scope(True, True, "heads"), "full": Scope(True, True, "heads", True)}


def base_encoder(seed: int) -> Encoder:
    torch.manual_seed(seed)
    model = HubertModel(HubertConfig()).eval().requires_grad_(False)
    return Encoder(model, f"hubert-base-random-{seed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="merges timed; medians printed")
    parser.add_argument("--scope", choices=sorted(SCOPES), default="fnn_attn")
    parser.add_argument(
        "--max-frame-rate",
        type=float,
        default=400.0,
        help="calibration.max_frame_rate (the default config's); 0 reads every frame",
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's allocator as it is (see merging/runtime.py)",
    )
    args = parser.parse_args()
    tuned = False if args.default_malloc else keep_freed_memory()

    a, b = base_encoder(0), base_encoder(1)
    clips = synthetic_clips(args.clips, 16000, args.seconds, seed=0)
    batches = [clips[i : i + args.batch_size] for i in range(0, len(clips), args.batch_size)]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{args.clips} clips x {args.seconds:g} s, batch {args.batch_size}, scope {args.scope}, "
        f"max frame rate {args.max_frame_rate or 'every frame'}, allocator tuned: {tuned}"
    )

    def forward_both() -> float:
        t = time.perf_counter()
        for batch in batches:
            wave, lengths = pad_batch([c.wave for c in batch])
            encode(a, wave, lengths)
            encode(b, wave, lengths)
        return time.perf_counter() - t

    def merge_once() -> dict[str, float]:
        t = time.perf_counter()
        stats = calibrate(
            a, b, clips, args.batch_size, False, max_frame_rate=args.max_frame_rate or None
        )
        seconds = {"calibration": time.perf_counter() - t}
        seconds.update(merge(a, b, stats, SCOPES[args.scope], alpha=0.9).seconds)
        return seconds

    # Plain passes and merges alternate (F M F M ... F) and each merge is compared with the
    # mean of the passes beside it, so drift on a shared machine weighs on both sides alike;
    # the median over repeats damps the rest.
    forwards, merges = [forward_both()], []
    for _ in range(args.repeats):
        merges.append(merge_once())
        forwards.append(forward_both())
    rows = []
    for i, m in enumerate(merges):
        forward = (forwards[i] + forwards[i + 1]) / 2
        total = m["calibration"] + m["matching"] + m["applying"]
        rows.append({"forward": forward, **m, "total": total, "ratio": total / forward})
        print(f"repeat {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items()))
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"median of {len(rows)}:")
    print(f"forward A+B   {med['forward']:8.2f} s")
    for stage in ("calibration", "matching", "applying", "total"):
        print(f"{'merge total' if stage == 'total' else stage:<13} {med[stage]:8.2f} s")
    print(f"calibration / forward = {med['calibration'] / med['forward']:.2f} (grows with clips)")
    print(f"ratio merge / forward = {med['ratio']:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
