"""The merge: align B to A (match -> permute), interpolate, export."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HubertModel, Wav2Vec2FeatureExtractor

from merging.analysis import alignment_table
from merging.calibrate import PointStats
from merging.combine import interpolate
from merging.files import replace_dir
from merging.load import Encoder, check_mergeable
from merging.match import Scope, match
from merging.spec import PermSpec, apply_permutations, build_spec


@dataclass
class MergeResult:
    encoder: Encoder
    spec: PermSpec
    perms: dict[str, torch.Tensor]
    alignment: list[dict]
    seconds: dict[str, float] = field(default_factory=dict)


def spec_for(model: HubertModel, scope: Scope) -> PermSpec:
    return build_spec(model.config, split_qkv=scope.split_qkv, keys=model.state_dict().keys())


def merge(
    a: Encoder, b: Encoder, stats: Mapping[str, PointStats], scope: Scope, alpha: float
) -> MergeResult:
    """Permute B's units onto A's (only B moves), then ``alpha * A + (1 - alpha) * B``."""
    check_mergeable(a, b)
    spec = spec_for(a.model, scope)
    t0 = time.perf_counter()
    perms = match(spec, stats, scope)
    t1 = time.perf_counter()
    state_b = apply_permutations(b.model.state_dict(), spec, perms)
    merged_state = interpolate(a.model.state_dict(), state_b, alpha)
    model = copy.deepcopy(a.model)
    model.load_state_dict(merged_state)
    t2 = time.perf_counter()
    merged = Encoder(model, f"merge({a.source}, {b.source})", a.sample_rate, a.normalize)
    return MergeResult(
        merged,
        spec,
        perms,
        alignment_table(spec, stats, perms),
        {"matching": t1 - t0, "applying": t2 - t1},
    )


def export(encoder: Encoder, directory: str | Path, card: Mapping | None = None) -> Path:
    """Write an HF checkpoint that transformers and s3prl's ``hf_hubert_custom`` load offline.

    It is written beside ``directory`` and swapped into place whole, so a job killed while
    exporting leaves the previous checkpoint (or none), never half of each."""
    return replace_dir(directory, lambda tmp: _export(encoder, tmp, card))


def _export(encoder: Encoder, directory: Path, card: Mapping | None) -> None:
    directory.mkdir(parents=True)
    encoder.model.save_pretrained(directory)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=encoder.sample_rate,
        padding_value=0.0,
        do_normalize=encoder.normalize,
        return_attention_mask=encoder.config.feat_extract_norm == "layer",
    ).save_pretrained(directory)
    if card is not None:
        (directory / "merge.json").write_text(json.dumps(card, indent=2, default=str))
