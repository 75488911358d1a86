"""Cost of a merge relative to a plain forward pass of both encoders over the same clips.

Two randomly initialised HuBERT-base-size encoders, 32 calibration clips of 4 s. Prints the
seconds of each stage and ratio = (calibration + matching + applying) / (forward A + B).
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--scope", choices=sorted(SCOPES), default="fnn_attn")
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
        f"allocator tuned: {tuned}"
    )

    def forward_both() -> float:
        t = time.perf_counter()
        for batch in batches:
            wave, lengths = pad_batch([c.wave for c in batch])
            encode(a, wave, lengths)
            encode(b, wave, lengths)
        return time.perf_counter() - t

    # the plain pass is timed before and after the merge, so drift on a shared machine
    # weighs on both sides of the ratio alike
    before = forward_both()
    t = time.perf_counter()
    stats = calibrate(a, b, clips, args.batch_size, progress=False)
    calibration = time.perf_counter() - t
    result = merge(a, b, stats, SCOPES[args.scope], alpha=0.9)
    matching, applying = result.seconds["matching"], result.seconds["applying"]
    forward = (before + forward_both()) / 2

    total = calibration + matching + applying
    print(f"forward A+B   {forward:8.2f} s (mean of a pass before and after the merge)")
    print(f"calibration   {calibration:8.2f} s")
    print(f"matching      {matching:8.2f} s")
    print(f"applying      {applying:8.2f} s")
    print(f"merge total   {total:8.2f} s")
    print(f"calibration / forward = {calibration / forward:.2f} (the part that grows with clips)")
    print(f"ratio merge / forward = {total / forward:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
