"""Is the demo pair a faithful miniature? Probe both encoders, the FBANK floor (s3prl's), a
random-init encoder of the same architecture and the unaligned 50/50 average on the demo suite,
and, for reference, plain time-averaged log-mel, which s3prl's CMVN takes away.

Each encoder should win in its own domain, beat FBANK and random init there, and the unaligned
average should be clearly worse than either parent (the paper's ID 3): only then is merging the
pair a real alignment problem.

python -m demo.compare --out checkpoints/COMPARISON.md
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import HubertModel

from eval.evaluate import build_suite
from eval.features import EncoderUpstream, FbankUpstream, Upstream
from eval.probing import probe_task
from eval.stats import interval, outcome, samples
from merging.combine import interpolate
from merging.load import Encoder, load_encoder

ROOT = Path(__file__).resolve().parents[1]


def random_init(like: Encoder, seed: int) -> Encoder:
    torch.manual_seed(seed)
    model = HubertModel(copy.deepcopy(like.config)).eval().requires_grad_(False)
    return Encoder(model, f"random-init-{seed}", like.sample_rate, like.normalize)


def average(a: Encoder, b: Encoder, alpha: float = 0.5) -> Encoder:
    model = copy.deepcopy(a.model)
    model.load_state_dict(interpolate(a.model.state_dict(), b.model.state_dict(), alpha))
    return Encoder(model, f"average-{alpha:g}", a.sample_rate, a.normalize)


def compare(
    speech: str | Path, music: str | Path, cfg: DictConfig, cache: str | Path, progress: bool
) -> dict[str, dict[str, float]]:
    """Per upstream, per task accuracy (%), probed exactly as every merge is."""
    a, b = load_encoder(speech), load_encoder(music)
    upstreams: dict[str, Upstream] = {
        "speech encoder": EncoderUpstream(a, "speech encoder"),
        "music encoder": EncoderUpstream(b, "music encoder"),
        "unaligned average (ID 3)": EncoderUpstream(average(a, b), "average"),
        "random init": EncoderUpstream(random_init(a, 0), "random init"),
        "FBANK": FbankUpstream(a.sample_rate),
        "log-mel, no CMVN": FbankUpstream(a.sample_rate, delta_order=0, cmvn=False),
    }
    suite = build_suite(cfg)
    probed = {
        name: {t.name: probe_task(up, t, rows, cfg, cache, progress=progress) for t, rows in suite}
        for name, up in upstreams.items()
    }
    results: dict = {n: {t: r["value"] for t, r in row.items()} for n, row in probed.items()}
    domains = {t.name: t.domain for t, _ in suite}
    # 95% paired-bootstrap interval of each domain mean: every upstream on the same resamples
    draws = {
        t: samples({n: outcome(row[t]["test"]) for n, row in probed.items()}, t) for t in domains
    }
    for name in probed:
        for d in ("speech", "music"):
            tasks = [t for t in domains if domains[t] == d]
            if tasks:
                mean = np.mean([draws[t][name] for t in tasks], axis=0)
                results[name][f"{d}_interval"] = list(interval(mean))
    return results | {"_domains": domains}


def markdown(results: dict[str, dict[str, float]]) -> str:
    domains = results["_domains"]
    tasks = list(domains)
    head = ["upstream", *tasks, "speech mean", "music mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in results.items():
        if name.startswith("_"):
            continue
        means = []
        for d in ("speech", "music"):
            values = [row[t] for t in tasks if domains[t] == d]
            means.append(sum(values) / len(values) if values else float("nan"))
        spans = [row.get(f"{d}_interval") for d in ("speech", "music")]
        cells = [f"{row[t]:.1f}" for t in tasks] + [
            f"**{m:.1f}**" + (f" [{s[0]:.1f}, {s[1]:.1f}]" if s else "")
            for m, s in zip(means, spans, strict=True)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speech", default=str(ROOT / "checkpoints" / "demo-speech"))
    parser.add_argument("--music", default=str(ROOT / "checkpoints" / "demo-music"))
    parser.add_argument("--cache", default=str(ROOT / ".cache"))
    parser.add_argument("--out", help="also write the Markdown table and a JSON file here")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--probe-hidden", type=int, help="hidden units of the probe (default: 0)")
    args = parser.parse_args()
    cfg = OmegaConf.load(ROOT / "conf" / "eval" / "demo.yaml")
    if args.probe_hidden is not None:  # 512: MARBLE's MLP probe instead of s3prl's linear one
        cfg.probe.hidden = args.probe_hidden
    results = compare(args.speech, args.music, cfg, args.cache, not args.no_progress)
    table = markdown(results)
    print(table)
    if args.out:
        out = Path(args.out)
        out.write_text(
            "Demo suite, accuracy (%) of a linear probe on time-pooled, softmax-weighted layers, "
            "mean of the probe seeds; the domain means with 95% paired-bootstrap intervals "
            "(`python -m demo.compare`):\n\n" + table
        )
        out.with_suffix(".json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
