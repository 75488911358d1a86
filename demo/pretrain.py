"""Self-supervised pretraining of the demo encoders the HuBERT way, sized for a laptop CPU.

Targets are k-means cluster ids of spectral frames aligned one-to-one with the encoder's 20 ms
frames (MFCC + deltas for speech; for music 64 log-mel bands plus 12 chroma bins, so that the
clusters keep pitch, which MFCCs drop and coarse mel bands blur).
The encoder predicts them on masked spans, as HuBERT does, and with equal weight on unmasked
frames: at this scale the masked-only loss trains weakly and collapses at higher learning rates.

python -m demo.pretrain --domain speech --out checkpoints/demo-speech --seed 1
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from transformers import HubertConfig, HubertModel
from transformers.models.hubert.modeling_hubert import _compute_mask_indices

from eval.features import deltas, mel_bank
from merging.audio import list_audio, read_audio
from merging.load import Encoder, load_encoder
from merging.merge import export
from report.training import write_history as write_curves

RATE = 16000
HOP = 320  # the conv stack's total stride: one encoder frame every 20 ms
WIN = 400  # its receptive field; frame t sees samples [HOP * t, HOP * t + WIN)
N_FFT = 512
CHROMA_FFT = 2048  # 128 ms: 7.8 Hz bins, enough to tell semitones apart from ~130 Hz up
SEMITONES = range(36, 120)  # C2..B8 in MIDI keys: 84 bands, 12 per octave, like MERT's CQT
FEATURES = {
    "mfcc": "MFCC + delta + delta-delta (39-dim)",
    "logmel": "64-band log-mel",
    "chroma": "64-band log-mel + 12-bin log chroma (as in MERT's k-means teacher)",
    "cqt": "84-band semitone spectrum (CQT-like, C2-B8)",
}


def demo_config(**overrides) -> HubertConfig:
    """4 layers, width 256, 4 heads, 7 conv layers of 128 channels: about 4 M parameters."""
    kwargs = dict(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        conv_dim=(128,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=64,
        num_conv_pos_embedding_groups=8,
        feat_extract_norm="group",
        mask_time_prob=0.05,  # > 0 so that masked_spec_embed exists; masks are drawn here
        mask_time_length=10,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
        layerdrop=0.0,
    )
    kwargs.update(overrides)
    return HubertConfig(**kwargs)


def _frame_power(wave: torch.Tensor, frames: int, n_fft: int, win: int) -> torch.Tensor:
    """(frames, n_fft // 2 + 1) power spectra of ``win``-sample Hann windows, window t centred
    on encoder frame t's samples [HOP * t, HOP * t + WIN)."""
    left = n_fft // 2 - WIN // 2  # stft centres the window in its n_fft-sample segment
    right = max(0, (frames - 1) * HOP + n_fft - left - wave.numel())
    spec = torch.stft(
        F.pad(wave.float()[None], (left, right))[0],
        n_fft,
        HOP,
        win,
        torch.hann_window(win),
        center=False,
        return_complex=True,
    )
    return spec[:, :frames].abs().square().T


def chroma(wave: torch.Tensor, frames: int) -> torch.Tensor:
    """(frames, 12) log pitch-class energy relative to each frame's strongest class.

    A 128 ms window centred on each encoder frame resolves semitones that 64 mel bands blur
    below ~600 Hz; bins from 55 Hz to 5 kHz go to their nearest equal-tempered pitch class.
    """
    freqs = torch.arange(CHROMA_FFT // 2 + 1) * RATE / CHROMA_FFT
    used = (freqs >= 55.0) & (freqs <= 5000.0)
    pitch_class = torch.round(12 * torch.log2(freqs[used] / 440.0)).long() % 12
    to_class = F.one_hot(pitch_class, 12).float()
    power = _frame_power(wave, frames, CHROMA_FFT, CHROMA_FFT)[:, used]
    energy = torch.log(power @ to_class + 1e-6)
    return energy - energy.max(1, keepdim=True).values


def semitone_spectrum(wave: torch.Tensor, frames: int) -> torch.Tensor:
    """(frames, 84) log energy in one-semitone triangular bands from C2 (65 Hz) up, 128 ms
    windows centred on each encoder frame: a CQT-like spectrum that keeps octave and pitch."""
    return torch.log(
        _frame_power(wave, frames, 2 * CHROMA_FFT, CHROMA_FFT) @ _semitone_bank() + 1e-6
    )


@functools.lru_cache(maxsize=1)
def _semitone_bank() -> torch.Tensor:
    # zero-padded to 2 * CHROMA_FFT: 3.9 Hz bins, so even C2's band (+-1 semitone) holds one
    freqs = torch.arange(CHROMA_FFT + 1) * RATE / (2 * CHROMA_FFT)
    key = 69 + 12 * torch.log2(freqs.clamp(min=1e-3) / 440.0)
    centres = torch.tensor(list(SEMITONES), dtype=torch.float32)
    return (1 - (key[:, None] - centres[None]).abs()).clamp(min=0)


def frame_features(wave: torch.Tensor, kind: str = "mfcc") -> torch.Tensor:
    """(frames, dims) spectral features, frame t covering the encoder frame t's samples."""
    if kind not in FEATURES:
        raise ValueError(f"frame features {kind!r} are not known (choose: {', '.join(FEATURES)})")
    mels = 40 if kind == "mfcc" else 64  # music: finer bands, so that clusters keep pitch
    if wave.numel() < WIN:
        dims = {"mfcc": 39, "logmel": mels, "chroma": mels + 12, "cqt": len(SEMITONES)}
        return torch.zeros(0, dims[kind])
    frames = (wave.numel() - WIN) // HOP + 1
    if kind == "cqt":
        return semitone_spectrum(wave, frames)
    power = _frame_power(wave, frames, N_FFT, WIN)
    logmel = torch.log(power @ mel_bank(N_FFT, mels, RATE) + 1e-6)
    if kind == "logmel":
        # no deltas: on sustained notes they are mostly noise, and clusters of noise are
        # targets nothing can predict (a music encoder trained on them did not learn)
        return logmel
    if kind == "chroma":
        return torch.cat([logmel, chroma(wave, frames)], dim=1)
    k = torch.arange(13, dtype=torch.float32)[:, None]
    m = torch.arange(mels, dtype=torch.float32)[None]
    dct = torch.cos(math.pi / mels * (m + 0.5) * k) * math.sqrt(2.0 / mels)
    base = logmel @ dct.T
    d1 = deltas(base)
    return torch.cat([base, d1, deltas(d1)], dim=1)


def kmeans(
    x: torch.Tensor, k: int, seed: int, iters: int = 25, sample: int = 60000
) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding on a seeded subsample; returns the centroids."""
    gen = torch.Generator().manual_seed(seed)
    if len(x) > sample:
        x = x[torch.randperm(len(x), generator=gen)[:sample]]
    if len(x) < k:
        raise ValueError(f"k-means needs at least {k} frames, got {len(x)}")
    centroids = x[torch.randint(len(x), (1,), generator=gen)]
    nearest = torch.cdist(x, centroids).squeeze(1).square()
    for _ in range(1, k):
        pick = torch.multinomial(nearest + 1e-12, 1, generator=gen)
        centroids = torch.cat([centroids, x[pick]])
        nearest = torch.minimum(nearest, (x - x[pick]).square().sum(1))
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()[:, None]
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


@dataclass
class Corpus:
    """Waves, their standardised frame features and per-frame cluster ids, held in memory."""

    waves: list[torch.Tensor]
    targets: list[torch.Tensor]
    spectra: list[torch.Tensor]  # standardised semitone spectra (regression targets) or empty
    seconds: float
    fingerprint: str  # of the audio read, so a model card says exactly what it was trained on


def _standardise(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    allf = torch.cat(feats)
    mean, std = allf.mean(0), allf.std(0).clamp(min=1e-5)
    return [(f - mean) / std for f in feats]


def load_corpus(
    directory: str | Path,
    kind: str,
    clusters: int,
    seed: int,
    progress: bool = True,
    spectra: bool = False,
) -> Corpus:
    from tqdm.auto import tqdm

    files = list_audio(directory)
    if not files:
        raise FileNotFoundError(f"no audio files in {directory}; build the demo suite first")
    waves = []
    digest = hashlib.blake2b(digest_size=16)
    for f in tqdm(files, desc=f"reading {Path(directory).name}", disable=not progress):
        wave = read_audio(f, RATE)
        if wave is not None and len(wave) >= WIN:
            waves.append(torch.from_numpy(wave))
            digest.update(wave.tobytes())
    feats = _standardise([frame_features(w, kind) for w in waves])
    if kind == "chroma":  # once standardised, the 12 chroma columns weigh as much as 64 mels
        weight = torch.ones(feats[0].shape[1])
        weight[-12:] = math.sqrt((len(weight) - 12) / 12)
        feats = [f * weight for f in feats]
    centroids = kmeans(torch.cat(feats), clusters, seed)
    targets = [torch.cdist(f, centroids).argmin(1) for f in feats]
    spec = (
        _standardise([semitone_spectrum(w, len(t)) for w, t in zip(waves, targets, strict=True)])
        if spectra
        else []
    )
    return Corpus(waves, targets, spec, sum(len(w) for w in waves) / RATE, digest.hexdigest())


class Crops(Dataset):
    """A fixed, seeded list of frame-aligned crops, so a rerun sees the same batches."""

    def __init__(self, corpus: Corpus, frames: int, count: int, seed: int):
        self.corpus, self.frames = corpus, frames
        self.samples = (frames - 1) * HOP + WIN
        usable = [i for i, t in enumerate(corpus.targets) if len(t) >= frames]
        if not usable:
            raise ValueError(f"no clip is long enough for {self.samples / RATE:.2f} s crops")
        weight = torch.tensor(
            [len(corpus.targets[i]) - frames + 1 for i in usable], dtype=torch.float
        )
        gen = torch.Generator().manual_seed(seed)
        picks = torch.multinomial(weight, count, replacement=True, generator=gen)
        self.items = []
        for p in picks.tolist():
            i = usable[p]
            start = int(torch.randint(len(corpus.targets[i]) - frames + 1, (1,), generator=gen))
            self.items.append((i, start))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, f = self.items[j]
        wave = self.corpus.waves[i][f * HOP : f * HOP + self.samples]
        frames = slice(f, f + self.frames)
        spectra = self.corpus.spectra[i][frames] if self.corpus.spectra else torch.zeros(0)
        return wave, self.corpus.targets[i][frames], spectra


class MaskedPrediction(L.LightningModule):
    def __init__(
        self,
        config: HubertConfig,
        clusters: int,
        lr: float,
        steps: int,
        warmup: float = 0.08,
        mask_prob: float = 0.8,
        mask_length: int = 10,
        unmasked_weight: float = 1.0,
        report_every: int = 0,
        reconstruct: float = 0.0,
        init: HubertModel | None = None,
    ):
        super().__init__()
        self.encoder = HubertModel(config) if init is None else init
        self.head = nn.Linear(config.hidden_size, clusters)
        # MERT-style auxiliary loss: regress the frames' semitone spectra, so that what the
        # clusters blur (pitch, octave, fine spectral shape) has to survive in the encoder.
        # Unmasked frames count too: a probe never masks, and a head trained on masked frames
        # alone leaves the unmasked frames' pitch unconstrained.
        self.reconstruct = reconstruct
        self.spectrum = nn.Linear(config.hidden_size, len(SEMITONES)) if reconstruct else None
        self.lr, self.steps, self.warmup = lr, steps, warmup
        self.mask_prob, self.mask_length = mask_prob, mask_length
        self.unmasked_weight = unmasked_weight
        self.report_every = report_every
        self.history: list[dict[str, float]] = []

    def training_step(self, batch: tuple[torch.Tensor, ...], _idx: int) -> torch.Tensor:
        wave, target, spectra = batch
        mask = torch.from_numpy(
            _compute_mask_indices(
                tuple(target.shape), self.mask_prob, self.mask_length, min_masks=2
            )
        ).to(target.device)
        hidden = self.encoder(wave, mask_time_indices=mask).last_hidden_state
        logits = self.head(hidden).float()
        masked = F.cross_entropy(logits[mask], target[mask])
        unmasked = F.cross_entropy(logits[~mask], target[~mask])
        loss = masked + self.unmasked_weight * unmasked
        recon = torch.zeros(())
        if self.spectrum is not None:
            error = (self.spectrum(hidden).float() - spectra).square().mean(-1)
            recon = error[mask].mean() + self.unmasked_weight * error[~mask].mean()
            loss = loss + self.reconstruct * recon
        accuracy = (logits[mask].argmax(-1) == target[mask]).float().mean()
        self.history.append(
            {
                "step": self.global_step,
                "loss": float(loss.detach()),
                "masked_loss": float(masked.detach()),
                "masked_accuracy": float(accuracy),
                "masked_share": float(mask.float().mean()),
                "reconstruction_loss": float(recon.detach()),
            }
        )
        if self.report_every and self.global_step % self.report_every == 0:
            print(  # one line now and then, for logs where a progress bar does not show
                f"step {self.global_step}/{self.steps}: loss {loss.item():.3f}, "
                f"masked accuracy {accuracy.item():.3f}",
                flush=True,
            )
        self.log("loss", loss, prog_bar=True)
        self.log("acc", accuracy, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.01)
        warm = max(1, int(self.warmup * self.steps))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (
                1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, self.steps - warm)))
            )

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return [opt], [{"scheduler": sched, "interval": "step"}]


@dataclass
class PretrainSettings:
    domain: str  # speech | music: only used in the model card
    seed: int
    features: str = "mfcc"
    clusters: int = 100
    steps: int = 1000
    batch_size: int = 8
    crop_seconds: float = 3.0
    lr: float = 1e-3
    precision: str = "32-true"
    accelerator: str = "cpu"  # the committed checkpoints are CPU runs
    threads: int = 0  # 0: torch's default
    reconstruct: float = 0.0  # weight of the semitone-spectrum regression loss (0: none)
    architecture: dict = field(default_factory=dict)  # overrides of demo_config (tests: tiny)
    init: str | None = None  # continue from this checkpoint (its architecture) instead of random


def pretrain(
    corpus_dir: str | Path, out: str | Path, s: PretrainSettings, progress: bool = True
) -> dict:
    """Train one encoder and write it, its loss curve and a model card to ``out``."""
    if s.threads:
        torch.set_num_threads(s.threads)
    L.seed_everything(s.seed, workers=True, verbose=False)
    t0 = time.perf_counter()
    corpus = load_corpus(
        corpus_dir, s.features, s.clusters, s.seed, progress, spectra=s.reconstruct > 0
    )
    prep = time.perf_counter() - t0
    frames = int((s.crop_seconds * RATE - WIN) // HOP) + 1
    data = Crops(corpus, frames, s.steps * s.batch_size, s.seed)
    loader = DataLoader(data, batch_size=s.batch_size, shuffle=False, num_workers=0)
    torch.manual_seed(s.seed)  # the initialisation: different seeds, different encoders
    start = _start(s.init) if s.init else None
    module = MaskedPrediction(
        demo_config(**s.architecture) if start is None else start.config,
        s.clusters,
        s.lr,
        s.steps,
        report_every=100 if progress else 0,
        reconstruct=s.reconstruct,
        init=start,
    )
    trainer = L.Trainer(
        max_steps=s.steps,
        accelerator=s.accelerator,
        devices=1,
        precision=s.precision,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
    )
    t1 = time.perf_counter()
    trainer.fit(module, loader)
    train_seconds = time.perf_counter() - t1
    out = Path(out)
    model = module.encoder.eval()
    # fp16 on disk keeps the committed checkpoints small; loading casts back to fp32.
    export(Encoder(model.half(), out.name, RATE, False), out)
    model.float()
    tail = module.history[-50:]
    summary = {
        "out": str(out),
        "settings": asdict(s),
        "corpus": {
            "dir": str(corpus_dir),
            "clips": len(corpus.waves),
            "seconds": corpus.seconds,
            "fingerprint": corpus.fingerprint,
        },
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": (
            f"{model.config.num_hidden_layers} layers, width {model.config.hidden_size}, "
            f"{model.config.num_attention_heads} heads, FFN {model.config.intermediate_size}, "
            f"{len(model.config.conv_dim)} conv layers of {model.config.conv_dim[0]} channels"
        ),
        "steps": len(module.history),
        "audio_seconds_seen": len(module.history) * s.batch_size * s.crop_seconds,
        "final_loss": float(np.mean([h["loss"] for h in tail])),
        "final_masked_accuracy": float(np.mean([h["masked_accuracy"] for h in tail])),
        "masked_share": float(np.mean([h["masked_share"] for h in module.history])),
        "prepare_seconds": prep,
        "train_seconds": train_seconds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    write_history(module.history, out)
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    write_card(summary, out)
    return summary


def _start(init: str | Path) -> HubertModel:
    """A trained demo encoder to continue from (its prediction head is not saved: a new one
    is trained on the new targets), trainable, in float32."""
    model = load_encoder(init).model
    if not isinstance(model, HubertModel):
        raise ValueError(f"--init {init}: a HuBERT-family checkpoint, got {type(model).__name__}")
    return model.train().requires_grad_(True)


def write_history(history: list[dict[str, float]], out: Path) -> None:
    recon = any(h.get("reconstruction_loss") for h in history)
    write_curves(
        history,
        out,
        [
            ("loss", f"loss (masked + unmasked CE{' + spectrum MSE' if recon else ''})"),
            ("masked_accuracy", "masked-frame accuracy"),
        ],
    )


def write_card(summary: dict, out: Path) -> None:
    s = summary["settings"]
    c = summary["corpus"]
    hardware = (
        f"{summary['threads']} CPU thread(s)"
        if s.get("accelerator", "cpu") == "cpu"
        else s["accelerator"]
    )
    recon = (
        f"; plus {s['reconstruct']:g} x the mean squared error of every frame's standardised"
        f" {len(SEMITONES)}-band semitone spectrum regressed from the last layer (MERT's CQT"
        " reconstruction loss)"
        if s.get("reconstruct")
        else ""
    )
    origin = (
        f"""continued from `{Path(s["init"]).name}` (its base: every weight starts there, a new
prediction head is trained) on the demo suite's {s["domain"]}-only pretraining corpus. With its
sibling continued from the same base on the other domain it forms the demo's shared-base pair
(`make shared-base-demo`), whose task vectors (this encoder minus the base) task arithmetic,
TIES and DARE merge."""
        if s.get("init")
        else f"""trained self-supervised on the demo suite's
{s["domain"]}-only pretraining corpus. It is one half of the built-in demo pair (`pair=demo`);
the other half has the same architecture, another seed and the other domain."""
    )
    text = f"""# {Path(summary["out"]).name}

A small HuBERT-family encoder ({summary["parameters"] / 1e6:.2f} M parameters:
{summary["architecture"]}) {origin}

- Data: {c["clips"]} clips, {c["seconds"] / 60:.1f} minutes of synthetic {s["domain"]}
  (`demo/suite.py`, `pretrain/{s["domain"]}`; audio fingerprint `{c["fingerprint"]}`),
  disjoint from every probe split.
- Objective: masked prediction of k-means ({s["clusters"]} clusters) ids of
  {FEATURES[s["features"]]} frames, loss on masked and unmasked frames,
  {summary["masked_share"]:.0%} of frames masked in spans of 10{recon}.
- Training: seed {s["seed"]}, {summary["steps"]} steps of {s["batch_size"]} x
  {s["crop_seconds"]:g} s crops, AdamW lr {s["lr"]:g} with warm-up and cosine decay,
  {s["precision"]}, {hardware}, {summary["train_seconds"] / 60:.1f} min.
- Final loss {summary["final_loss"]:.3f}, masked-frame accuracy
  {summary["final_masked_accuracy"]:.1%} (chance {1 / s["clusters"]:.0%}), averaged over the
  last 50 steps.
- Weights stored in float16; `merging.load.load_encoder` loads them as float32.

Rebuild with `make {"shared-base-demo" if s.get("init") else "pretrain-demo"}`. Loss curve:

![loss](loss.png)
"""
    (out / "README.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", choices=("speech", "music"), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--corpus", help="folder of audio (default: the demo suite's corpus)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, default=PretrainSettings.steps)
    parser.add_argument("--features", choices=tuple(FEATURES))
    parser.add_argument("--lr", type=float, default=PretrainSettings.lr)
    parser.add_argument("--precision", default=PretrainSettings.precision)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--accelerator",
        default=PretrainSettings.accelerator,
        help="Lightning's accelerator (cpu, gpu, ...): more steps in the same time on a GPU",
    )
    parser.add_argument(
        "--reconstruct",
        type=float,
        default=0.0,
        help="weight of a loss regressing every frame's semitone spectrum (MERT's CQT loss)",
    )
    parser.add_argument(
        "--conv-norm",
        choices=("group", "layer"),
        help="normalisation of the conv stack (default: demo_config's); both encoders must match",
    )
    parser.add_argument(
        "--init", help="continue from this demo checkpoint (its architecture) instead of random"
    )
    args = parser.parse_args()
    corpus = args.corpus
    if corpus is None:
        from demo.suite import build_suite, default_root

        corpus = build_suite(default_root()) / "pretrain" / args.domain
    features = args.features or ("mfcc" if args.domain == "speech" else "chroma")
    settings = PretrainSettings(
        args.domain,
        args.seed,
        features,
        steps=args.steps,
        lr=args.lr,
        precision=args.precision,
        threads=args.threads,
        accelerator=args.accelerator,
        reconstruct=args.reconstruct,
        architecture={"feat_extract_norm": args.conv_norm} if args.conv_norm else {},
        init=args.init,
    )
    summary = pretrain(corpus, args.out, settings)
    print(json.dumps({k: summary[k] for k in ("steps", "final_loss", "train_seconds")}, indent=2))


if __name__ == "__main__":
    main()
