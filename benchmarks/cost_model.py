"""What the paper's table costs on the real datasets, from numbers measured here.

Measured (on this machine, each time it runs):
- forward FLOPs of a HuBERT-base-size encoder per second of audio, at each task's clip length
  (``torch.utils.flop_counter``: matrix products and convolutions; MERT-v0 has HuBERT-base's
  architecture at 16 kHz, so its FLOPs are the same);
- decoding rate of one worker process (``merging.audio.read_usable``: read, mix down, resample,
  crop) for each source format, in seconds of audio per second;
- this CPU's extraction rate (seconds of audio per second; the FLOP rate it implies);
- seconds per training step of the utterance probes (``eval.probe.fit_probes``: one bank of
  2 learning rates x 3 seeds, batch 32) at a task's class count, on this CPU.

Stated (constants below; change them with the flags): the datasets' sizes as distributed, and
what a GPU sustains on this model in float32 (``--gpu-tflops``).

From those: per task and per upstream the audio the protocol reads, GPU minutes, decoding core
hours and cache disk; then ``make table PAIR=hubert_mert EVAL=paper``: nine upstreams (A, B,
seven merges; IDs 1 and 2 are A and B, whose features every job reuses) plus one calibration.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LAYERS, DIM = 13, 768  # HuBERT-base / MERT-v0: hidden states of the CNN output and 12 layers
FRAME_RATE = 50
UPSTREAMS = 9  # make table: A, B and the merges of IDs 3-9


@dataclass(frozen=True)
class Part:
    """The audio one task's protocol reads: ``clips`` files of ``hours`` in all (as
    distributed), each cropped to ``crop`` s, in ``source`` format (decoding cost)."""

    task: str
    data: str
    clips: int
    hours: float
    crop: float
    source: str
    classes: int = 0  # 0: CTC (frames stored)
    shared_with: str = ""  # same files and crop: the features' key, computed once
    folds: int = 0  # k-fold tasks: one probe per fold, on the other folds

    @property
    def probe_steps(self) -> int:
        """Training steps of the task's probe bank: 40 epochs of batch 32 over the training
        clips (about 80% of a task; (k-1)/k of it per fold, k times)."""
        if not self.classes:
            return 0
        if self.folds:
            return self.folds * 40 * -(-int(self.clips * (self.folds - 1) / self.folds) // 32)
        return 40 * -(-int(0.8 * self.clips) // 32)

    @property
    def read_hours(self) -> float:
        """At most the crop per clip (an upper bound where clips vary around the crop)."""
        return min(self.hours, self.clips * self.crop / 3600)

    @property
    def clip_seconds(self) -> float:
        return self.read_hours * 3600 / self.clips


# Sizes as distributed; the splits and crops the paper suite reads (eval/tasks.py).
PARTS = (
    Part("ASR", "LibriSpeech: 1 h of train-clean-100, dev-clean, test-clean",
         283 + 2703 + 2620, 1.0 + 5.4 + 5.4, 35.0, "flac16"),
    Part("KS", "Speech Commands v0.01 + its test set", 64727 + 3081, 18.8, 1.0, "wav16", 12),
    Part("IC", "Fluent Speech Commands", 30043, 19.0, 10.0, "wav16", 31),
    Part("SID", "VoxCeleb1 identification", 153516, 352.0, 10.0, "wav16", 1251),
    Part("ER", "IEMOCAP, 4 classes", 5531, 7.0, 10.0, "wav16", 4, folds=5),
    Part("SingID", "VocalSet", 3600, 10.1, 10.0, "wav44", 20),
    Part("VocID", "VocalSet", 3600, 10.1, 10.0, "wav44", 17, "SingID"),
    Part("InstCls", "NSynth (train, valid, test)", 305979, 340.0, 4.0, "wav16", 11),
    Part("PitchID", "NSynth", 305979, 340.0, 4.0, "wav16", 112, "InstCls"),
    Part("GenreID", "GTZAN", 1000, 8.3, 30.0, "wav22", 10),
    Part("ESC-50", "ESC-50", 2000, 2.8, 5.0, "wav44", 50, folds=5),
)  # fmt: skip
CALIBRATION = Part("calib", "5000 LibriSpeech + 5000 Music4All clips", 10000, 59.0, 4.0, "flac16")
FULL_ASR_HOURS = 100.6 + 5.4 + 5.4  # ctc.max_train_hours=null
# Calibration costs this many single-encoder passes over its audio (make bench-merge: about
# 1.6 passes of both encoders, the A x B products being the difference).
CALIBRATION_PASSES = 2 * 1.6


def flops_per_second(seconds: float) -> float:
    """Forward FLOPs of a HuBERT-base-size encoder per second of audio, on one clip."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import HubertConfig, HubertModel

    model = _model(HubertModel, HubertConfig)
    wave = torch.randn(1, int(16000 * seconds))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(wave)
    return counter.get_total_flops() / seconds


_MODELS: dict = {}


def _model(cls, config):
    if cls not in _MODELS:
        import torch

        torch.manual_seed(0)
        _MODELS[cls] = cls(config()).eval()
    return _MODELS[cls]


def decode_rate(source: str, work: Path, files: int = 12) -> float:
    """Seconds of 10 s clips decoded to 16 kHz per second, in one process."""
    import numpy as np
    import soundfile as sf

    from merging.audio import read_usable

    rate = {"wav16": 16000, "flac16": 16000, "wav22": 22050, "wav44": 44100}[source]
    ext = "flac" if source.startswith("flac") else "wav"
    rng = np.random.default_rng(0)
    paths = []
    for i in range(files):
        path = work / f"{source}-{i}.{ext}"
        sf.write(path, (0.1 * rng.standard_normal(rate * 10)).astype(np.float32), rate)
        paths.append(path)
    start = time.perf_counter()
    for p in paths:
        read_usable(str(p), 16000, 10.0, 400)
    return files * 10 / (time.perf_counter() - start)


def cpu_rate(batches: int = 2, batch: int = 8) -> float:
    """Seconds of 10 s audio a HuBERT-base-size encoder forwards per second on this CPU."""
    import torch
    from transformers import HubertConfig, HubertModel

    model = _model(HubertModel, HubertConfig)
    wave = torch.randn(batch, 160000)
    with torch.no_grad():
        model(wave[:1, :16000])  # warm-up
        start = time.perf_counter()
        for _ in range(batches):
            model(wave)
    return batches * batch * 10 / (time.perf_counter() - start)


def probe_step(classes: int, steps: int = 60) -> float:
    """Seconds per step of a probe bank at ``classes`` classes on this CPU."""
    import torch

    from eval.data import Example
    from eval.features import PooledFeatures
    from eval.probe import fit_probes

    n = 32 * steps
    gen = torch.Generator().manual_seed(0)
    examples = [Example(f"c{i}", str(i % classes), "train") for i in range(n)]
    examples += [
        Example(f"v{i}", str(i % classes), s) for s in ("valid", "test") for i in range(64)
    ]
    features = torch.randn(len(examples), LAYERS, DIM, generator=gen)
    feats = PooledFeatures(features, examples, [], 0.0, False)
    start = time.perf_counter()
    fit_probes(feats, lrs=(1e-3, 1e-2), epochs=1, seeds=(0, 1, 2))
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--gpu-tflops", type=float, default=12.0,
        help="float32 TFLOP/s a GPU sustains on this encoder (default: an A100 at about 60%% "
        "of its 19.5 without TF32; an H100 SXM: about 40)",
    )  # fmt: skip
    parser.add_argument("--decode-workers", type=int, default=8, help="per GPU (the default cap)")
    args = parser.parse_args()

    import torch

    torch.set_grad_enabled(False)
    crops = sorted({p.clip_seconds for p in PARTS} | {CALIBRATION.clip_seconds})
    flops = {c: flops_per_second(c) for c in crops}
    with tempfile.TemporaryDirectory() as tmp:
        decode = {s: decode_rate(s, Path(tmp)) for s in ("wav16", "flac16", "wav22", "wav44")}
    here = cpu_rate()
    step = {c: probe_step(c) for c in sorted({p.classes for p in PARTS if p.classes})}
    print(
        f"measured: torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"HuBERT-base forward {flops[10.0 if 10.0 in flops else crops[-1]] / 1e9:.1f} GFLOP per "
        f"second of audio at 10 s clips; this CPU {here:.1f} s of audio/s "
        f"({here * flops.get(10.0, flops[crops[-1]]) / 1e9:.0f} GFLOP/s)"
    )
    print(
        "decoding to 16 kHz, one worker: "
        + ", ".join(f"{s} {r:.0f} s/s" for s, r in decode.items())
    )
    print(
        f"assumed: a GPU sustaining {args.gpu_tflops:g} TFLOP/s in float32, "
        f"{args.decode_workers} decoding workers per GPU; {UPSTREAMS} upstreams per table"
    )
    print()
    head = (
        "| task | data | clips | h read | GFLOP/s audio | GPU min | decode core-min | "
        "features GB | probe steps | probe CPU min |"
    )
    print(head)
    print("|" + "---|" * 10)
    total_h = total_gpu = total_core = total_disk = total_probe = 0.0
    for p in PARTS:
        f = flops[p.clip_seconds]
        probe = p.probe_steps * step[p.classes] / 60 if p.classes else 0.0
        total_probe += probe
        if p.shared_with:
            print(
                f"| {p.task} | {p.data} | | | | | | with {p.shared_with} | "
                f"{p.probe_steps:,} | {probe:.0f} |"
            )
            continue
        gpu_min = p.read_hours * 3600 * f / (args.gpu_tflops * 1e12) / 60
        core_h = p.read_hours / decode[p.source]
        disk = (
            p.read_hours * 3600 * FRAME_RATE * LAYERS * DIM * 2  # float16 frame store
            if not p.classes
            else p.clips * LAYERS * DIM * 4  # float32 time means
        ) / 1e9
        total_h, total_gpu, total_core, total_disk = (
            total_h + p.read_hours,
            total_gpu + gpu_min,
            total_core + core_h,
            total_disk + disk,
        )
        print(
            f"| {p.task} | {p.data} | {p.clips:,} | {p.read_hours:.1f} | {f / 1e9:.1f} | "
            f"{gpu_min:.1f} | {60 * core_h:.1f} | {disk:.1f} | {p.probe_steps:,} | {probe:.0f} |"
        )
    print(
        f"| **one upstream** | | | {total_h:.0f} | | {total_gpu:.0f} | {60 * total_core:.0f} | "
        f"{total_disk:.0f} | | {total_probe:.0f} |"
    )
    cal_gpu = (
        CALIBRATION.read_hours * 3600 * flops[CALIBRATION.clip_seconds] * CALIBRATION_PASSES
        / (args.gpu_tflops * 1e12) / 60
    )  # fmt: skip
    cal_core = CALIBRATION.read_hours / decode[CALIBRATION.source]
    print(
        f"| calibration | {CALIBRATION.data} | {CALIBRATION.clips:,} | "
        f"{CALIBRATION.read_hours:.1f} | | {cal_gpu:.1f} | {60 * cal_core:.1f} | 0.3 | | |"
    )
    table_gpu = (UPSTREAMS * total_gpu + cal_gpu) / 60
    wall = max(total_gpu / 60, total_core / args.decode_workers)
    print()
    print(
        f"make table: {UPSTREAMS} x {total_h:.0f} h + calibration = "
        f"{table_gpu:.1f} GPU-hours of forward passes ({UPSTREAMS * total_core + cal_core:.1f} "
        f"decoding core-hours), {UPSTREAMS * total_disk:.0f} GB of features; "
        f"one upstream on one GPU: {wall:.1f} h wall "
        f"({'decoding' if total_core / args.decode_workers > total_gpu / 60 else 'the GPU'}"
        " is the limit)"
    )
    full = (FULL_ASR_HOURS - PARTS[0].read_hours) * 3600 * FRAME_RATE * LAYERS * DIM * 2 / 1e9
    print(
        f"probes: {UPSTREAMS} x {total_probe / 60:.1f} h on this CPU (one thread per bank; "
        f"steps at {', '.join(f'{c} classes {1e3 * t:.1f} ms' for c, t in step.items())})"
    )
    print(
        f"ctc.max_train_hours=null (all of train-clean-100): +{full:.0f} GB of frames per "
        f"upstream; on this CPU one upstream takes {total_h / here:.0f} h"
    )


if __name__ == "__main__":
    main()
