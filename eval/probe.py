"""s3prl-style utterance probes on cached pooled features, trained with Lightning.

The probe learns softmax weights over all layers, sums the (standardised) layers with them and
classifies with a linear or one-hidden-layer head. A small learning-rate grid is chosen on the
validation split; the test split is scored once, with the chosen setting.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eval.data import Example, hash_split
from eval.features import PooledFeatures


class UtteranceProbe(L.LightningModule):
    def __init__(self, layers: int, dim: int, classes: int, hidden: int = 0, lr: float = 1e-3):
        super().__init__()
        self.lr = lr
        self.layer_logits = nn.Parameter(torch.zeros(layers))
        self.head = (
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))
            if hidden
            else nn.Linear(dim, classes)
        )

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.einsum("l,bld->bd", self.layer_weights(), x))

    def training_step(self, batch, _idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


@dataclass
class ProbeResult:
    test_accuracy: float
    valid_accuracy: float
    lr: float
    layer_weights: list[float]
    classes: list[str]
    test_paths: list[str]  # the test clips, in the order of ``test_predictions``
    test_predictions: list[str]  # the predicted class of each test clip


# The Lightning settings a run may choose (conf/trainer/); the rest are fixed by the protocol.
TRAINER_KEYS = ("accelerator", "devices", "strategy", "precision")


def trainer_settings(trainer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The hardware part of a Lightning Trainer's arguments: one CPU process by default."""
    settings: dict[str, Any] = {"accelerator": "cpu", "devices": 1}
    settings.update({k: v for k, v in (trainer or {}).items() if k in TRAINER_KEYS})
    return settings


def fit_quietly(
    model: L.LightningModule,
    loader: DataLoader,
    epochs: int,
    trainer: Mapping[str, Any] | None = None,
    **settings: Any,
) -> None:
    """Train a probe with no logger, checkpoints or bars, deterministically."""
    fitter = L.Trainer(
        **trainer_settings(trainer),
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        **settings,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")  # lightning's, under torch >= 2.10
        fitter.fit(model, loader)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.cpu().float().eval()  # whatever device and precision it was trained in
    with torch.no_grad():
        return model(x).argmax(1)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((_predict(model, x) == y).float().mean()) if len(y) else float("nan")


def _split(feats: PooledFeatures, name: str, labels: dict[str, int]):
    idx = [i for i, e in enumerate(feats.examples) if e.split == name]
    y = torch.tensor([labels[feats.examples[i].label] for i in idx], dtype=torch.long)
    return feats.features[idx], y, idx


def fit_probe(
    feats: PooledFeatures,
    lrs: Sequence[float] = (1e-3, 1e-2),
    hidden: int = 0,
    epochs: int = 40,
    batch_size: int = 32,
    seed: int = 0,
    trainer: Mapping[str, Any] | None = None,
) -> ProbeResult:
    """Train one probe per learning rate; keep the best on validation; score test.

    ``trainer`` holds Lightning's hardware settings (accelerator, devices, strategy, precision)
    only, so that where a probe is trained never changes what it is keyed by in the cache.
    """
    classes = sorted({e.label for e in feats.examples})
    labels = {c: i for i, c in enumerate(classes)}
    (xtr, ytr, _), (xva, yva, _), (xte, yte, test) = (
        _split(feats, s, labels) for s in ("train", "valid", "test")
    )
    if len(ytr) == 0 or len(yte) == 0:
        raise ValueError("a probe needs non-empty train and test splits")
    if len(yva) == 0:  # tiny datasets: select on train rather than fail
        xva, yva = xtr, ytr
    mean, std = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp(min=1e-6)
    xtr, xva, xte = ((x - mean) / std for x in (xtr, xva, xte))

    best: tuple[float, float, nn.Module] | None = None
    for lr in lrs:
        L.seed_everything(seed, workers=True, verbose=False)
        model = UtteranceProbe(xtr.shape[1], xtr.shape[2], len(classes), hidden, lr)
        loader = DataLoader(
            TensorDataset(xtr, ytr),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        fit_quietly(model, loader, epochs, trainer)
        score = _accuracy(model, xva, yva)
        if best is None or score > best[0]:
            best = (score, lr, copy.deepcopy(model))
    assert best is not None
    valid, lr, model = best
    predicted = _predict(model, xte)
    return ProbeResult(
        float((predicted == yte).float().mean()),
        valid,
        lr,
        model.layer_weights().tolist(),
        classes,
        [feats.examples[i].path for i in test],
        [classes[k] for k in predicted.tolist()],
    )


def clip_key(e: Example) -> str:
    """A clip's name for hashing that survives moving the dataset: its folder and file name."""
    return "/".join(Path(e.path).parts[-2:])


def fit_kfold(feats: PooledFeatures, **kwargs) -> dict:
    """Leave-one-fold-out over the ``fold<k>`` splits; validation is a hashed 10% of the rest."""
    folds = sorted({e.split for e in feats.examples})
    if len(folds) < 2 or not all(f.startswith("fold") for f in folds):
        raise ValueError(f"k-fold probing needs fold<k> splits, got {folds}")
    per_fold, predictions = {}, {}
    for fold in folds:
        examples = [
            Example(
                e.path, e.label, "test" if e.split == fold else hash_split(clip_key(e), 0.1, 0.0)
            )
            for e in feats.examples
        ]
        held_out = PooledFeatures(feats.features, examples, feats.skipped, 0.0, feats.cached)
        result = fit_probe(held_out, **kwargs)
        per_fold[fold] = result.test_accuracy
        predictions.update(zip(result.test_paths, result.test_predictions, strict=True))
    accs = torch.tensor(list(per_fold.values()))
    return {
        "mean": float(accs.mean()),
        "std": float(accs.std(unbiased=False)),
        "folds": per_fold,
        "predictions": predictions,  # every clip, predicted by the probe that held it out
    }


logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
