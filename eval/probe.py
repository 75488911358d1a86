"""s3prl-style utterance probes on cached pooled features, trained with Lightning.

The probe learns softmax weights over all layers, sums the (standardised) layers with them and
classifies with a linear or one-hidden-layer head. A small learning-rate grid is chosen on the
validation split; the test split is scored once, with the chosen setting.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eval.data import Example, hash_split
from eval.features import PooledFeatures


class UtteranceProbe(nn.Module):
    """s3prl's utterance head: softmax weights over layers, then a linear or MLP classifier."""

    def __init__(self, layers: int, dim: int, classes: int, hidden: int = 0):
        super().__init__()
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
    valid: DataLoader | None = None,
    **settings: Any,
) -> None:
    """Train a probe with no logger, checkpoints or bars, deterministically (``valid``: a
    validation pass after every epoch, for the model's own early stopping)."""
    fitter = L.Trainer(
        **trainer_settings(trainer),
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        num_sanity_val_steps=0,
        **settings,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*LeafSpec.*")  # lightning's, under torch >= 2.10
        warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")  # validation is optional
        fitter.fit(model, loader, valid)


@contextmanager
def one_thread():
    """Probe-sized ops run fastest on one CPU thread (10x and more when the cores are busy,
    measured), and one thread also makes their float sums independent of the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.cpu().float().eval()  # whatever device and precision it was trained in
    with torch.no_grad():
        return model(x).argmax(1)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((_predict(model, x) == y).double().mean()) if len(y) else float("nan")


def _split(feats: PooledFeatures, name: str, labels: dict[str, int]):
    idx = [i for i, e in enumerate(feats.examples) if e.split == name]
    y = torch.tensor([labels[feats.examples[i].label] for i in idx], dtype=torch.long)
    return feats.features[idx], y, idx


class ProbeBank(L.LightningModule):
    """Several independent probes (one per (seed, learning rate)) trained in one Lightning
    fit: each has its own seed's initialisation, its own seed's shuffle of the training clips
    every epoch and its own learning rate, so each is the probe a fit of its own would train;
    one fit instead of many saves Lightning's per-step overhead, which dominates probes this
    small."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        classes: int,
        hidden: int,
        runs: Sequence[tuple[int, float]],
    ):
        super().__init__()
        self.x, self.y, self.runs = x, y, list(runs)
        probes = []
        for seed, _ in self.runs:
            torch.manual_seed(seed)
            probes.append(UtteranceProbe(x.shape[1], x.shape[2], classes, hidden))
        self.probes = nn.ModuleList(probes)
        self.shuffles = [torch.Generator().manual_seed(seed) for seed, _ in self.runs]
        self.orders: list[torch.Tensor] = []

    def on_train_epoch_start(self) -> None:
        self.orders = [torch.randperm(len(self.y), generator=g) for g in self.shuffles]

    def training_step(self, batch, _idx):
        (positions,) = batch
        loss = 0.0
        for probe, order in zip(self.probes, self.orders, strict=True):
            idx = order[positions.cpu()]
            x, y = self.x[idx].to(self.device), self.y[idx].to(self.device)
            loss = loss + nn.functional.cross_entropy(probe(x), y)  # gradients stay separate
        return loss

    def configure_optimizers(self):
        groups = [
            {"params": p.parameters(), "lr": lr}
            for p, (_, lr) in zip(self.probes, self.runs, strict=True)
        ]
        return torch.optim.Adam(groups)


M = TypeVar("M")


def best_on_validation(
    candidates: Iterable[tuple[float, M]], score: Callable[[M], float], lower_is_better=False
) -> tuple[float, float, M]:
    """(validation score, lr, probe) of the best of the (lr, probe) candidates; the first of
    equals wins. The one selection rule of every probe kind (utterance, k-fold, CTC)."""
    best: tuple[float, float, M] | None = None
    for lr, model in candidates:
        value = score(model)
        if best is None or (value < best[0] if lower_is_better else value > best[0]):
            best = (value, lr, model)
    if best is None:
        raise ValueError("no probe to choose from: eval.probe.lrs is empty")
    return best


def fit_probes(
    feats: PooledFeatures,
    lrs: Sequence[float] = (1e-3, 1e-2),
    hidden: int = 0,
    epochs: int = 40,
    batch_size: int = 32,
    seeds: Sequence[int] = (0,),
    trainer: Mapping[str, Any] | None = None,
    test: bool = True,
) -> list[ProbeResult]:
    """Per seed: one probe per learning rate, the best on validation scored on test (with
    ``test=False``, on the clips there are: none for a validation-only evaluation).

    ``trainer`` holds Lightning's hardware settings (accelerator, devices, strategy, precision)
    only, so that where a probe is trained never changes what it is keyed by in the cache.
    """
    classes = sorted({e.label for e in feats.examples})
    labels = {c: i for i, c in enumerate(classes)}
    (xtr, ytr, _), (xva, yva, _), (xte, yte, test) = (
        _split(feats, s, labels) for s in ("train", "valid", "test")
    )
    if len(ytr) == 0 or (test and len(yte) == 0):
        raise ValueError("a probe needs non-empty train and test splits")
    if len(yva) == 0:  # tiny datasets: select on train rather than fail
        xva, yva = xtr, ytr
    mean, std = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp(min=1e-6)
    xtr, xva, xte = ((x - mean) / std for x in (xtr, xva, xte))

    runs = [(seed, lr) for seed in seeds for lr in lrs]
    L.seed_everything(0, workers=True, verbose=False)
    bank = ProbeBank(xtr, ytr, len(classes), hidden, runs)
    positions = DataLoader(TensorDataset(torch.arange(len(ytr))), batch_size=batch_size)
    with one_thread():
        fit_quietly(bank, positions, epochs, trainer)
    results = []
    for seed in seeds:
        valid, lr, model = best_on_validation(
            ((lr, m) for (s, lr), m in zip(runs, bank.probes, strict=True) if s == seed),
            lambda m: _accuracy(m, xva, yva),
        )
        predicted = _predict(model, xte)
        results.append(
            ProbeResult(
                float((predicted == yte).double().mean()),
                valid,
                lr,
                model.layer_weights().tolist(),
                classes,
                [feats.examples[i].path for i in test],
                [classes[k] for k in predicted.tolist()],
            )
        )
    return results


def fit_probe(feats: PooledFeatures, seed: int = 0, **kwargs) -> ProbeResult:
    """One seed's probe (``fit_probes`` with a single seed)."""
    return fit_probes(feats, seeds=(seed,), **kwargs)[0]


def clip_key(e: Example) -> str:
    """A clip's name for hashing that survives moving the dataset: its folder and file name."""
    return "/".join(Path(e.path).parts[-2:])


def fit_kfold(
    feats: Any,
    seeds: Sequence[int] = (0,),
    fit: Callable[..., list[ProbeResult]] | None = None,
    **kwargs,
) -> list[dict]:
    """Leave-one-fold-out over the ``fold<k>`` splits; validation is a hashed 10% of the rest.
    One result per seed: fold accuracies, their mean and std, and every clip's prediction by
    the probe that held it out. ``feats``: a dataclass with ``examples`` (pooled features, or
    frame features for ``fit=eval.frameprobe.fit_frame_probes``)."""
    fit = fit or fit_probes
    folds = sorted({e.split for e in feats.examples})
    if len(folds) < 2 or not all(f.startswith("fold") for f in folds):
        raise ValueError(f"k-fold probing needs fold<k> splits, got {folds}")
    per_fold: list[dict[str, float]] = [{} for _ in seeds]
    valid: list[dict[str, float]] = [{} for _ in seeds]
    floors: dict[str, float] = {}
    predictions: list[dict[str, str]] = [{} for _ in seeds]
    for fold in folds:
        examples = [
            Example(
                e.path, e.label, "test" if e.split == fold else hash_split(clip_key(e), 0.1, 0.0)
            )
            for e in feats.examples
        ]
        held_out = dataclasses.replace(feats, examples=examples)
        floors[fold] = majority_share(examples)
        for k, result in enumerate(fit(held_out, seeds=seeds, **kwargs)):
            per_fold[k][fold] = result.test_accuracy
            valid[k][fold] = result.valid_accuracy
            predictions[k].update(zip(result.test_paths, result.test_predictions, strict=True))
    out = []
    for accs, chosen, preds in zip(per_fold, valid, predictions, strict=True):
        values = torch.tensor(list(accs.values()), dtype=torch.float64)
        out.append(
            {
                "mean": float(values.mean()),
                "std": float(values.std(unbiased=False)),
                "folds": accs,
                "valid": sum(chosen.values()) / len(chosen),
                "valid_floor": sum(floors.values()) / len(floors),
                "predictions": preds,
            }
        )
    return out


def majority_share(examples: Sequence[Example]) -> float:
    """The validation split's majority-class share (the training split's where there is no
    validation split, as the probes then select on it): the floor of a validation score."""
    chosen = [e.label for e in examples if e.split == "valid"] or [
        e.label for e in examples if e.split == "train"
    ]
    if not chosen:
        return float("nan")
    return max(chosen.count(label) for label in set(chosen)) / len(chosen)


logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
logging.getLogger("lightning.fabric").setLevel(logging.WARNING)  # a word per rank per fit
