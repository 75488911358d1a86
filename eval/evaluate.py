"""eval's entry point for the runner: probe an encoder on the configured tasks."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from eval.data import labelled_folder
from eval.features import EncoderUpstream, pooled_features
from eval.probe import fit_probe
from merging.load import Encoder

DOMAINS = ("speech", "music")


def evaluate(
    encoder: Encoder,
    cfg: DictConfig,
    cache_dir: str | Path | None,
    accelerator: str = "cpu",
    progress: bool = True,
) -> dict:
    """Per-task metrics of a frozen encoder (``eval=folder``: one labelled folder)."""
    if cfg.name != "folder":
        raise ValueError(f"eval={cfg.name!r} is not available yet (choose: none, folder)")
    if cfg.domain not in DOMAINS:
        raise ValueError(f"eval.domain must be one of {DOMAINS}, got {cfg.domain!r}")
    rows = labelled_folder(cfg.root)
    feats = pooled_features(
        EncoderUpstream(encoder), rows, cache_dir, cfg.max_seconds, cfg.batch_size, progress
    )
    p = cfg.probe
    result = fit_probe(
        feats, list(p.lrs), p.hidden, p.epochs, p.batch_size, accelerator=accelerator
    )
    task = Path(cfg.root).name
    return {
        "tasks": {
            task: {
                "domain": cfg.domain,
                "metric": "accuracy",
                "test": 100 * result.test_accuracy,
                "valid": 100 * result.valid_accuracy,
                "lr": result.lr,
                "layer_weights": result.layer_weights,
                "clips": len(feats.examples),
                "skipped": len(feats.skipped),
                "feature_seconds": feats.seconds,
                "features_cached": feats.cached,
            }
        }
    }
