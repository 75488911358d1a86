"""Which layer holds what? Probe every layer of an encoder alone, and every conv layer's pooled
channel statistics, on demo tasks: where an encoder keeps or loses pitch, for example.

python -m demo.layerwise checkpoints/demo-music random --tasks pitchid singid
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from demo.compare import ROOT, random_init
from eval.evaluate import build_suite
from eval.features import EncoderUpstream, pooled_features
from eval.probe import fit_kfold, fit_probe
from merging.forward import prepare_input
from merging.identity import model_digest
from merging.load import Encoder, load_encoder


@dataclass
class ConvStackUpstream(EncoderUpstream):
    """The conv stack's layers as an upstream: per layer, one 'frame' holding each channel's
    time mean and mean square over the clip (the energy a filterbank would pool)."""

    name: str = "conv stack"

    def fingerprint(self) -> str:
        return "conv-stack-" + model_digest(self.encoder.model)

    @torch.no_grad()
    def layers(self, wave, lengths):
        # one clip at a time: group norm's statistics must not see another clip's padding
        convs = self.encoder.model.feature_extractor.conv_layers
        per_clip = []
        for w, n in zip(wave, lengths, strict=True):
            x = prepare_input(self.encoder, w[None, : int(n)], n[None])[:, None]
            stats = []
            for conv in convs:
                x = conv(x)
                stats.append(torch.cat([x[0].mean(1), x[0].square().mean(1)]))
            per_clip.append(stats)
        layers = [torch.stack(s)[:, None] for s in zip(*per_clip, strict=True)]
        return layers, torch.ones(len(wave), dtype=torch.long)


def layer_accuracies(upstream, task, rows, cfg: DictConfig, cache: str | Path | None) -> list:
    """Test accuracy (%) of the demo's probe trained on each layer alone."""
    feats = pooled_features(upstream, rows, cache, task.max_seconds, cfg.batch_size, False)
    kwargs = {k: cfg.probe[k] for k in ("lrs", "hidden", "epochs", "batch_size")}
    out = []
    for layer in range(feats.features.shape[1]):
        one = replace(feats, features=feats.features[:, layer : layer + 1])
        if task.kind == "kfold":
            out.append(100 * fit_kfold(one, **kwargs)[0]["mean"])
        else:
            out.append(100 * fit_probe(one, **kwargs).test_accuracy)
    return out


def table(encoder: Encoder, tasks: list[str], cfg: DictConfig, cache: str | None) -> str:
    suite = [(t, rows) for t, rows in build_suite(cfg) if t.name in tasks]
    columns = {
        t.name: layer_accuracies(ConvStackUpstream(encoder), t, rows, cfg, cache)
        + layer_accuracies(EncoderUpstream(encoder), t, rows, cfg, cache)
        for t, rows in suite
    }
    convs = len(encoder.config.conv_dim)
    names = [f"conv {i + 1}" for i in range(convs)]
    names += [f"layer {i}" for i in range(encoder.config.num_hidden_layers + 1)]
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for i, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(f"{v[i]:.1f}" for v in columns.values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "encoders", nargs="+", help="checkpoint dirs; 'random': a random init of the first's"
    )
    parser.add_argument("--tasks", nargs="+", default=["pitchid", "singid"])
    parser.add_argument("--cache", default=str(ROOT / ".cache"))
    args = parser.parse_args()
    cfg = OmegaConf.load(ROOT / "conf" / "eval" / "demo.yaml")
    cfg.tasks = args.tasks
    first = None
    for name in args.encoders:
        if name == "random":
            if first is None:
                parser.error("'random' needs a checkpoint before it, for the architecture")
            encoder = random_init(first, 0)
        else:
            encoder = load_encoder(name)
            first = first or encoder
        print(f"{name}: accuracy (%) of the demo probe on each layer alone\n")
        print(table(encoder, args.tasks, cfg, args.cache))


if __name__ == "__main__":
    main()
