"""The merge: align B to A (match -> permute), interpolate, export."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Wav2Vec2FeatureExtractor

from merging.analysis import alignment_table
from merging.calibrate import PointStats
from merging.card import model_card
from merging.combine import Linear, Merger
from merging.files import replace_dir
from merging.load import Encoder, check_mergeable
from merging.match import Exact, Matcher, MatchProblem, Scope
from merging.spec import PermSpec, apply_permutations


@dataclass
class MergeResult:
    encoder: Encoder
    spec: PermSpec
    perms: dict[str, torch.Tensor]
    alignment: list[dict]
    seconds: dict[str, float] = field(default_factory=dict)
    refined: dict = field(default_factory=dict)  # what the merger's pass over the clips did


def spec_for(encoder: Encoder, scope: Scope) -> PermSpec:
    """The encoder's family's permutation spec; a scope that asks for a group the family does
    not have (WavLM's residual stream) is an error, not a silent no-op."""
    family, model = encoder.family, encoder.model
    spec = family.build_spec(
        model.config, scope.split_qkv, model.state_dict().keys(), scope.vo_point
    )
    kinds = {g.kind for g in spec.groups}
    if scope.res and "res" not in kinds:
        raise ValueError(
            f"permute.res: reordering the residual stream is not a symmetry of "
            f"{family.model_type} encoders (choose a scope without res)"
        )
    return spec


def merge(
    a: Encoder,
    b: Encoder,
    stats: Mapping[str, PointStats],
    scope: Scope,
    merger: Merger | float = 0.9,
    matcher: Matcher | None = None,
    clips: Sequence = (),
) -> MergeResult:
    """Permute B's units onto A's (only B moves; ``matcher``, default ``Exact``), then combine
    (``merger``; a number is ``Linear``'s alpha: ``alpha * A + (1 - alpha) * B``) and, for a
    merger that needs them, refine on the calibration ``clips``."""
    check_mergeable(a, b)
    merger = Linear(merger) if isinstance(merger, int | float) else merger
    spec = spec_for(a, scope)
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    t0 = time.perf_counter()
    perms = (matcher or Exact())(MatchProblem(spec, scope, stats, state_a, state_b))
    t1 = time.perf_counter()
    aligned = apply_permutations(state_b, spec, perms)
    model = copy.deepcopy(a.model)
    model.load_state_dict(merger.combine(state_a, aligned))
    t2 = time.perf_counter()
    merged = Encoder(model, f"merge({a.source}, {b.source})", a.sample_rate, a.normalize, a.family)
    seconds = {"matching": t1 - t0, "applying": t2 - t1}
    refined = {}
    if merger.needs_clips:
        if not clips:
            raise ValueError(f"merge={merger.name} needs calibration clips (calibration.size >= 1)")
        b_aligned = copy.deepcopy(b)
        b_aligned.model.load_state_dict(aligned)
        refined = merger.refine(merged, a, b_aligned, clips)
        seconds["refining"] = time.perf_counter() - t2
    return MergeResult(merged, spec, perms, alignment_table(spec, stats, perms), seconds, refined)


def export(encoder: Encoder, directory: str | Path, card: Mapping | None = None) -> Path:
    """Write an HF checkpoint that transformers and s3prl's ``hf_hubert_custom`` load offline.

    It is written beside ``directory`` and swapped into place whole, so a job killed while
    exporting leaves the previous checkpoint (or none), never half of each."""
    return replace_dir(directory, lambda tmp: _export(encoder, tmp, card))


def _export(encoder: Encoder, directory: Path, card: Mapping | None) -> None:
    directory.mkdir(parents=True)
    encoder.model.save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    if config.get("model_type") != encoder.family.model_type:  # a family sharing a class
        config["model_type"] = encoder.family.model_type
        (directory / "config.json").write_text(json.dumps(config, indent=2))
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=encoder.sample_rate,
        padding_value=0.0,
        do_normalize=encoder.normalize,
        return_attention_mask=encoder.config.feat_extract_norm == "layer",
    ).save_pretrained(directory)
    if card is not None:
        (directory / "merge.json").write_text(json.dumps(card, indent=2, default=str))
        model_class = type(encoder.model).__name__
        (directory / "README.md").write_text(model_card(card, model_class))
