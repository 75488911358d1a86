"""Utterance probes that learn an interface over layers on frame features (``eval.interface``).

The pooled probe (``eval.probe``) sums layers after pooling, which a weighted sum allows; a
non-linear interface (HConv, CHConv) has to see every frame: clips come from one frame store
per upstream (``eval.framestore``, read per batch), each upstream standardised per layer and
dimension on the training frames, matched (layer counts, frame rates) clip by clip, so padding
never enters a clip's frames; then the interface, a mean over the clip's valid frames and a
linear (or one-hidden-layer) classifier. Learning rate chosen on validation, as every probe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from eval import interface as interfaces
from eval.ctc import FrameFeatures, layer_moments, select_clips
from eval.data import Example
from eval.probe import ProbeResult, best_on_validation, fit_quietly, one_thread
from merging.forward import frame_mask


class Clips(Dataset):
    """Each clip's matched, standardised frames (layers', frames, dim') and its class."""

    def __init__(self, parts, moments, name: str, labels: Sequence[int]):
        self.parts, self.moments, self.name, self.labels = parts, moments, name, list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        hidden = [
            ((part[i].float() - mean[:, None]) / std[:, None]).unsqueeze(1)
            for part, (mean, std) in zip(self.parts, self.moments, strict=True)
        ]  # each (layers, 1, frames, dim)
        return interfaces.combine(self.name, hidden).squeeze(1), self.labels[i]


def collate(items):
    x, y = zip(*items, strict=True)
    frames = torch.tensor([t.shape[1] for t in x])
    padded = pad_sequence([t.transpose(0, 1) for t in x], batch_first=True)  # (b, t, l, d)
    return padded.permute(2, 0, 1, 3), frames, torch.tensor(y)


class FrameProbe(L.LightningModule):
    """Interface -> mean over valid frames -> classifier. ``layer_dropout``: each training
    clip loses each input layer with this probability (the rest rescaled), so the interface
    cannot lean on a few layers of one upstream. Given validation batches, it keeps the
    weights of its best validation epoch (the first of equals) and ends with them."""

    def __init__(
        self,
        module: nn.Module,
        classes: int,
        hidden: int,
        lr: float,
        decay: float,
        layer_dropout: float = 0.0,
    ):
        super().__init__()
        self.interface, self.lr, self.decay = module, lr, decay
        self.layer_dropout = layer_dropout
        dim = module.out_dim
        self.head = (
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))
            if hidden
            else nn.Linear(dim, classes)
        )
        self.best: tuple[float, int, dict] | None = None  # (accuracy, epoch, weights)
        self.correct, self.seen = 0, 0

    def forward(self, x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        if self.training and self.layer_dropout > 0:
            keep = torch.rand(x.shape[0], x.shape[1], 1, 1, device=x.device)
            x = x * (keep >= self.layer_dropout).to(x.dtype) / (1 - self.layer_dropout)
        h = self.interface(x)  # (batch, frames, out_dim)
        mask = frame_mask(frames, h.shape[1]).to(h.dtype).unsqueeze(-1)
        pooled = (h * mask).sum(1) / frames.clamp(min=1).unsqueeze(-1).to(h.dtype)
        return self.head(pooled)

    def training_step(self, batch, _idx):
        x, frames, y = batch
        return nn.functional.cross_entropy(self(x, frames), y)

    def on_validation_epoch_start(self) -> None:
        self.correct, self.seen = 0, 0

    def validation_step(self, batch, _idx):
        x, frames, y = batch
        self.correct += int((self(x, frames).argmax(1) == y).sum())
        self.seen += len(y)

    def on_validation_epoch_end(self) -> None:
        accuracy = self.correct / max(self.seen, 1)
        self.log("valid_accuracy", accuracy)
        if self.best is None or accuracy > self.best[0]:
            weights = {k: v.detach().clone() for k, v in self.state_dict().items()}
            self.best = (accuracy, self.current_epoch, weights)

    def on_fit_end(self) -> None:
        if self.best is not None:
            self.load_state_dict(self.best[2])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.decay)


def logits(model: FrameProbe, data: Clips, batch_size: int = 32) -> torch.Tensor:
    model.cpu().float().eval()  # whatever device and precision it was trained in
    with torch.no_grad():
        return torch.cat(
            [model(x, frames) for x, frames, _ in DataLoader(data, batch_size, collate_fn=collate)]
        )


def predict(model: FrameProbe, data: Clips) -> torch.Tensor:
    if len(data) == 0:  # a validation-only evaluation's test split
        return torch.zeros(0, dtype=torch.long)
    return logits(model, data).argmax(1)


@dataclass
class FrameParts:
    """Several upstreams' frame features of the same clips (one upstream: one part):
    ``examples`` are the clips every part holds, ``positions[k][i]`` where part k holds
    example i."""

    parts: list[FrameFeatures]
    examples: list[Example]
    positions: list[list[int]]
    seconds: float = 0.0  # the parts' extraction (or cache reading) time
    cached: bool = True  # every part's store came from the cache

    @classmethod
    def join(cls, parts: Sequence[FrameFeatures]) -> FrameParts:
        """The clips every part could read, in the first part's order."""
        where = [{e.path: i for i, e in enumerate(p.examples)} for p in parts]
        examples = [e for e in parts[0].examples if all(e.path in w for w in where)]
        positions = [[w[e.path] for e in examples] for w in where]
        seconds = sum(p.seconds for p in parts)
        return cls(list(parts), examples, positions, seconds, all(p.cached for p in parts))

    @property
    def skipped(self) -> list[str]:
        kept = {e.path for e in self.examples}
        every = {e.path for p in self.parts for e in p.examples}
        return sorted({s for p in self.parts for s in p.skipped} | (every - kept))

    def frames(self, k: int, idx: Sequence[int]) -> Sequence[torch.Tensor]:
        return select_clips(self.parts[k].frames, [self.positions[k][i] for i in idx])


@dataclass
class FrameProbeSettings:
    interface: str = "hconv"
    lrs: Sequence[float] = (1e-3, 1e-2)
    hidden: int = 0
    epochs: int = 40
    batch_size: int = 32
    weight_decay: float = 0.0
    patience: int | None = None  # epochs without a better validation accuracy before stopping
    layer_dropout: float = 0.0


def fit_frame_probes(
    feats: FrameParts,
    settings: FrameProbeSettings,
    seeds: Sequence[int] = (0,),
    trainer: Mapping[str, Any] | None = None,
    test: bool = True,
) -> list[ProbeResult]:
    """Per seed: one probe per learning rate over the parts' frames, the best on validation
    scored on test (``test=False``: on the test clips there are, none in a validation-only
    evaluation)."""
    examples = feats.examples
    classes = sorted({e.label for e in examples})
    index = {c: i for i, c in enumerate(classes)}
    split = {
        s: [i for i, e in enumerate(examples) if e.split == s] for s in ("train", "valid", "test")
    }
    if not split["train"] or (test and not split["test"]):
        raise ValueError("a probe needs non-empty train and test splits")
    if not split["valid"]:
        split["valid"] = split["train"]
    count = range(len(feats.parts))
    moments = [layer_moments(feats.frames(k, split["train"])) for k in count]
    data = {
        s: Clips(
            [feats.frames(k, idx) for k in count],
            moments,
            settings.interface,
            [index[examples[i].label] for i in idx],
        )
        for s, idx in split.items()
    }
    layers = [int(m.shape[0]) for m, _ in moments]
    dims = [int(m.shape[1]) for m, _ in moments]
    results = []
    for seed in seeds:

        def trained(seed: int = seed):
            for lr in settings.lrs:
                L.seed_everything(seed, workers=True, verbose=False)
                module = interfaces.build(settings.interface, layers, dims)
                model = FrameProbe(
                    module,
                    len(classes),
                    settings.hidden,
                    lr,
                    settings.weight_decay,
                    settings.layer_dropout,
                )
                loader = DataLoader(
                    data["train"],
                    batch_size=settings.batch_size,
                    shuffle=True,
                    collate_fn=collate,
                    generator=torch.Generator().manual_seed(seed),
                )
                stopping = settings.patience is not None
                valid = (
                    DataLoader(data["valid"], settings.batch_size, collate_fn=collate)
                    if stopping
                    else None
                )
                callbacks = (
                    [EarlyStopping("valid_accuracy", patience=settings.patience, mode="max")]
                    if stopping
                    else []
                )
                with one_thread():
                    fit_quietly(model, loader, settings.epochs, trainer, valid, callbacks=callbacks)
                yield lr, model

        valid, lr, model = best_on_validation(
            trained(),
            lambda m: float((predict(m, data["valid"]) == torch.tensor(data["valid"].labels))
                            .double().mean()),
        )  # fmt: skip
        predicted = predict(model, data["test"])
        truth = torch.tensor(data["test"].labels)
        weights = (
            model.interface.weights().tolist()
            if isinstance(model.interface, interfaces.WeightedSum)
            else []
        )
        results.append(
            ProbeResult(
                float((predicted == truth).double().mean()),
                valid,
                lr,
                weights,
                classes,
                [examples[i].path for i in split["test"]],
                [classes[k] for k in predicted.tolist()],
            )
        )
    return results
