"""Tiny random encoders for tests: every parameter random, so no symmetry holds by accident."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import torch
from transformers import HubertConfig

from merging.families import families
from merging.load import Encoder
from merging.spec import apply_permutations, random_exact_perms


def tiny_config(family: str = "hubert", **overrides) -> HubertConfig:
    kwargs = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 3, 3),
        conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
        mask_time_prob=0.05,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
    )
    kwargs.update(overrides)
    return families()[family].config_class(**kwargs)


def random_encoder(config: HubertConfig, seed: int, rate: int = 16000) -> Encoder:
    torch.manual_seed(seed)
    model = families()[config.model_type].model_class(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    model.requires_grad_(False)
    return Encoder(model, f"random-{seed}", rate, False)


def hidden_permuted_copy(
    family: str = "hubert", seed: int = 0, kinds: tuple[str, ...] = ("conv", "ffn", "attn")
):
    """A random tiny encoder A and a copy B with the units of every group of ``kinds``
    shuffled by exact symmetries (the same function); returns A, B, the spec, the shuffles."""
    a = random_encoder(tiny_config(family), seed)
    spec = a.family.build_spec(a.config, keys=a.model.state_dict().keys())
    names = [g.name for g in spec.groups if g.kind in kinds]
    perms = random_exact_perms(spec, torch.Generator().manual_seed(seed + 11), names)
    b = copy.deepcopy(a)
    b.model.load_state_dict(apply_permutations(a.model.state_dict(), spec, perms))
    return a, b, spec, perms


ROOT = Path(__file__).resolve().parents[1]


def local_job(root: Path, out: Path, *overrides: str) -> list[str]:
    """run.py's overrides for a quiet job merging ``root/A`` and ``root/B``, calibrated on three
    clips of ``root/calib``, caching under ``root/cache``; ``overrides`` come last and win."""
    return [
        "pair=local",
        f"pair.a={root / 'A'}",
        f"pair.b={root / 'B'}",
        "calibration=default",
        f"calibration.dirs=[{root / 'calib'}]",
        "calibration.size=3",
        "logger=none",
        "progress=false",
        f"paths.cache={root / 'cache'}",
        f"hydra.run.dir={out}",
        *overrides,
    ]


def run_py(*args: str, before: tuple[str, ...] = (), **kwargs) -> subprocess.CompletedProcess:
    """``python [before...] run.py args...`` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, *before, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )
