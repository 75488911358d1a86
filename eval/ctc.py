"""ASR probing in SUPERB's manner: a CTC head on a learned softmax-weighted sum of every layer.

Unlike utterance tasks, CTC needs every frame, so frame features go to an on-disk store
(``eval.framestore``: float16 shards read per batch; one per upstream and dataset, cached):
hours x 3600 x frame rate x layers x dim x 2 bytes, i.e. 3.6 GB per hour of audio for a
HuBERT-base upstream. ``max_train_hours`` draws a fixed,
seeded subset of the training split for that reason; the full LibriSpeech-100 protocol is what
``eval.backend=s3prl`` runs.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import soundfile as sf
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from eval.data import Example
from eval.features import Upstream, Usable, dataset_key, layer_batches, on_device
from eval.framestore import FrameStore, FrameStoreWriter, write_index
from eval.probe import best_on_validation, fit_quietly
from merging.files import read_cache, replace_dir
from merging.forward import frame_mask
from merging.identity import source_digest
from merging.ranks import gather, spread

BLANK = "<blank>"
SPACE = "|"


def normalise_text(text: str) -> str:
    return " ".join(text.upper().split())


@dataclass
class FrameFeatures:
    frames: Sequence[torch.Tensor]  # per clip (layers, frames, dim), float16: a FrameStore
    examples: list[Example]  # usable examples, aligned with ``frames``
    skipped: list[str]
    seconds: float
    cached: bool


@torch.no_grad()
def frame_features(
    upstream: Upstream,
    examples: Sequence[Example],
    cache_dir: str | Path | None,
    max_seconds: float = 35.0,
    batch_size: int = 8,
    progress: bool = True,
    workers: int | None = None,
    trainer: Mapping[str, Any] | None = None,
) -> FrameFeatures:
    """Every layer's frames of every readable example, in an on-disk store (``eval.framestore``):
    the cache's, or a temporary one without a cache. Memory holds a batch, never the task.
    A ``trainer`` naming several devices spreads the pass over them (``merging.ranks``), each
    rank writing its own shards."""
    t0 = time.perf_counter()
    fabric = spread(trainer)

    def build(root: Path) -> None:
        args = (upstream, examples, max_seconds, batch_size, progress, workers, str(root))
        shares = (
            [_frames_share(None, *args)] if fabric is None else gather(fabric, _frames_share, *args)
        )
        usable = Usable.union([s["usable"] for s in shares], examples)
        parts = [s["store"] for s in shares]
        write_index(root, parts, usable.index, index=usable.index, skipped=usable.skipped)

    if cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="frames-")
        build(Path(tmp.name) / "store")
        store, cached = FrameStore(Path(tmp.name) / "store", keep=tmp), False
    else:
        key = dataset_key(upstream, examples, max_seconds)
        layout = source_digest("eval.framestore")[:12]  # a new store format is a new store
        path = Path(cache_dir) / "features" / f"{key}-frames-{layout}"
        store, cached = read_cache(path, FrameStore.check), True
        if store is None:
            replace_dir(path, build)
            store, cached = FrameStore(path), False
    kept = [examples[i] for i in store.meta["index"]]
    return FrameFeatures(store, kept, store.meta["skipped"], time.perf_counter() - t0, cached)


@torch.no_grad()
def _frames_share(fabric, upstream, examples, max_seconds, batch_size, progress, workers, root):
    """The frames of one rank's share of the batches (all of them without ``fabric``), written
    as that rank's shards of the store at ``root``."""
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)
    if fabric is not None:
        upstream = on_device(upstream, fabric.device)
    writer = FrameStoreWriter(Path(root), prefix=f"rank{rank}-" if world > 1 else "")
    usable = Usable()
    for positions, layers, valid in layer_batches(
        upstream, examples, max_seconds, batch_size, usable, progress and rank == 0, workers,
        "frame features", (rank, world),
    ):  # fmt: skip
        stacked = torch.stack(layers, 1)  # (batch, layers, frames, dim)
        for j, i in enumerate(positions):
            writer.add(i, stacked[j, :, : int(valid[j])])
    return {"store": writer.finish(), "usable": usable.share()}


def _duration(path: str) -> float:
    try:
        return float(sf.info(path).duration)
    except Exception:  # noqa: BLE001 - unreadable files are counted as skipped later
        return 0.0


def train_subset(examples: Sequence[Example], hours: float | None) -> list[Example]:
    """A seeded subset of the training split of at most ``hours``; other splits kept whole."""
    if not hours:
        return list(examples)
    train = [e for e in examples if e.split == "train"]
    random.Random(0).shuffle(train)
    budget, chosen = hours * 3600, set()
    for e in train:
        seconds = _duration(e.path)
        if seconds <= budget:
            budget -= seconds
            chosen.add(e.path)
    return [e for e in examples if e.split != "train" or e.path in chosen]


class Vocabulary:
    """Characters of the training transcripts; index 0 is CTC's blank, words joined by ``|``."""

    def __init__(self, texts: Sequence[str]):
        chars = sorted({c for t in texts for c in normalise_text(t).replace(" ", SPACE)})
        self.symbols = [BLANK, *chars]
        self.index = {c: i for i, c in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> torch.Tensor:
        """Unknown characters (absent from training) are dropped: a probe cannot emit them."""
        chars = normalise_text(text).replace(" ", SPACE)
        return torch.tensor([self.index[c] for c in chars if c in self.index], dtype=torch.long)

    def decode_greedy(self, best: Sequence[int]) -> str:
        out, prev = [], 0
        for i in best:
            if i != prev and i != 0:
                out.append(self.symbols[i])
            prev = i
        return " ".join("".join(out).replace(SPACE, " ").split())


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(word-level edit distance, reference words)."""
    r, h = ref.split(), hyp.split()
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[-1], len(r)


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate: total edits over total reference words."""
    edits = words = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        e, n = word_errors(normalise_text(ref), normalise_text(hyp))
        edits, words = edits + e, words + n
    return edits / max(words, 1)


class CTCProbe(L.LightningModule):
    """Softmax layer weights -> optional BiLSTM -> linear -> CTC over characters."""

    def __init__(
        self,
        layers: int,
        dim: int,
        vocab: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        hidden: int = 0,
        lr: float = 1e-3,
    ):
        super().__init__()
        self.lr = lr
        self.register_buffer("mean", mean)  # (layers, dim): each layer standardised on train
        self.register_buffer("std", std)
        self.layer_logits = nn.Parameter(torch.zeros(layers))
        self.rnn = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True) if hidden else None
        self.out = nn.Linear(2 * hidden if hidden else dim, vocab)
        self.ctc = nn.CTCLoss(blank=0, zero_infinity=True)

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, layers, frames, dim) -> (batch, frames, vocab) log-probabilities."""
        x = (x.float() - self.mean[:, None]) / self.std[:, None]
        h = torch.einsum("l,bltd->btd", self.layer_weights(), x)
        if self.rnn is not None:
            h = self.rnn(h)[0]
        return self.out(h).log_softmax(-1)

    def training_step(self, batch, _idx):
        x, frames, y, y_len = batch
        logp = self(x).transpose(0, 1)  # (frames, batch, vocab) for CTCLoss
        return self.ctc(logp, y, frames, y_len)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def _collate(items):
    x, y = zip(*items, strict=True)
    frames = torch.tensor([t.shape[1] for t in x])
    padded = pad_sequence([t.transpose(0, 1) for t in x], batch_first=True).transpose(1, 2)
    y_len = torch.tensor([len(t) for t in y])
    return padded, frames, torch.cat(y), y_len


def _transcribe(model: CTCProbe, clips: Sequence[torch.Tensor], vocab: Vocabulary) -> list[str]:
    model.cpu().float().eval()
    hyps = []
    with torch.no_grad():
        for start in range(0, len(clips), 16):
            x, frames, _, _ = _collate([(c, torch.zeros(0)) for c in clips[start : start + 16]])
            best = model(x).argmax(-1)
            valid = frame_mask(frames, best.shape[1])
            hyps += [vocab.decode_greedy(b[m].tolist()) for b, m in zip(best, valid, strict=True)]
    return hyps


@dataclass
class CTCResult:
    test_wer: float
    valid_wer: float
    lr: float
    layer_weights: list[float]
    examples: list[tuple[str, str]]  # a few (reference, hypothesis) pairs from the test split
    test_paths: list[str]  # every test utterance, in the order of the two lists below
    test_errors: list[int]  # word edits of each test utterance's greedy transcript
    test_words: list[int]  # words in each test utterance's reference


def select_clips(frames: Sequence[torch.Tensor], idx: list[int]) -> Sequence[torch.Tensor]:
    """Some clips' frames: a view of a store (read when used), or a list."""
    return frames.select(idx) if isinstance(frames, FrameStore) else [frames[i] for i in idx]


class _Pairs(Dataset):
    """(frames, target) per training clip, the frames read from the store per batch."""

    def __init__(self, frames: Sequence[torch.Tensor], targets: list[torch.Tensor]):
        self.frames, self.targets = frames, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frames[i], self.targets[i]


def layer_moments(clips: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (layer, dim) mean and standard deviation over every frame, clip by clip: an hour of
    HuBERT-base frames concatenated in float32 would be ~7 GB."""
    n = sum(c.shape[1] for c in clips)
    total = sum(c.double().sum(1) for c in clips)
    squares = sum(c.double().square().sum(1) for c in clips)
    mean = total / n
    var = (squares - n * mean.square()) / max(n - 1, 1)
    return mean.float(), var.clamp(min=0).sqrt().float().clamp(min=1e-5)


def fit_ctc(
    feats: FrameFeatures,
    lrs: Sequence[float] = (1e-3, 1e-2),
    hidden: int = 0,
    epochs: int = 40,
    batch_size: int = 32,
    seed: int = 0,
    trainer: Mapping[str, Any] | None = None,
    test: bool = True,
) -> CTCResult:
    """One CTC probe per learning rate; the lowest validation WER picks the one scored on test
    (``test=False``: on the test utterances there are, none in a validation-only evaluation)."""
    split = {
        s: [i for i, e in enumerate(feats.examples) if e.split == s]
        for s in ("train", "valid", "test")
    }
    if not split["train"] or (test and not split["test"]):
        raise ValueError("a CTC probe needs non-empty train and test splits")
    if not split["valid"]:
        split["valid"] = split["train"]
    texts = {s: [feats.examples[i].label for i in idx] for s, idx in split.items()}
    clips = {s: select_clips(feats.frames, idx) for s, idx in split.items()}
    vocab = Vocabulary(texts["train"])
    train = _Pairs(clips["train"], [vocab.encode(t) for t in texts["train"]])

    mean, std = layer_moments(clips["train"])

    def trained():
        for lr in lrs:
            L.seed_everything(seed, workers=True, verbose=False)
            model = CTCProbe(*mean.shape, len(vocab), mean, std, hidden, lr)
            loader = DataLoader(
                train,
                batch_size=batch_size,
                shuffle=True,
                collate_fn=_collate,
                generator=torch.Generator().manual_seed(seed),
            )
            fit_quietly(model, loader, epochs, trainer, gradient_clip_val=1.0)
            yield lr, model

    valid, lr, model = best_on_validation(
        trained(),
        lambda m: wer(texts["valid"], _transcribe(m, clips["valid"], vocab)),
        lower_is_better=True,
    )
    hyps = _transcribe(model, clips["test"], vocab)
    edits = [
        word_errors(normalise_text(r), normalise_text(h))
        for r, h in zip(texts["test"], hyps, strict=True)
    ]
    return CTCResult(
        wer(texts["test"], hyps),
        valid,
        lr,
        model.layer_weights().tolist(),
        list(zip(texts["test"][:5], hyps[:5], strict=True)),
        [feats.examples[i].path for i in split["test"]],
        [e for e, _ in edits],
        [n for _, n in edits],
    )
