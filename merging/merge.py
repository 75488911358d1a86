"""The merge: align every member to the anchor (match -> permute), combine, export; a pair is
the pool ``{a: A, b: B}``."""

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
from merging.load import Encoder
from merging.match import Exact, Matcher, MatchProblem, Scope
from merging.pool import Pool
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
    merger that needs them, refine on the calibration ``clips``: the pool ``{a: A, b: B}``."""
    merger = Linear(merger) if isinstance(merger, int | float) else merger
    done = merge_pool(Pool.pair(a, b), {"b": stats}, scope, merger, matcher, clips)
    return MergeResult(
        done.encoder, done.spec, done.perms["b"], done.alignment["b"], done.seconds, done.refined
    )


@dataclass
class PoolMergeResult:
    encoder: Encoder
    spec: PermSpec
    perms: dict[str, dict[str, torch.Tensor]]  # per aligned member: its groups' permutations
    alignment: dict[str, list[dict]]  # per aligned member: Table II's rows
    seconds: dict[str, float] = field(default_factory=dict)
    refined: dict = field(default_factory=dict)


def merge_pool(
    pool: Pool,
    stats: Mapping[str, Mapping[str, PointStats]],
    scope: Scope,
    merger: Merger,
    matcher: Matcher | None = None,
    clips: Sequence = (),
    plan: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> PoolMergeResult:
    """Permute every other member's units onto the anchor's (``stats[member]``: the anchor x
    member statistics; only the other members move), combine every member (and the base, for
    a task-vector method) and, for a merger that needs them, refine on the ``clips``. A
    ``plan`` (``merging.plan``: the permutations an earlier match found) skips matching."""
    pool.check()
    merger.check_pool(list(pool.members), pool.base is not None)
    anchor = pool.members[pool.anchor]
    spec = spec_for(anchor, scope)
    states = {name: encoder.model.state_dict() for name, encoder in pool}
    t0 = time.perf_counter()
    match = matcher or Exact()
    perms = {
        n: dict(plan.get(n, {}))
        if plan is not None
        else match(MatchProblem(spec, scope, stats.get(n, {}), states[pool.anchor], states[n]))
        for n in pool.others
    }
    t1 = time.perf_counter()
    aligned = {
        n: states[n] if n == pool.anchor else apply_permutations(states[n], spec, perms[n])
        for n in pool.members
    }
    base = pool.base.model.state_dict() if pool.base is not None else None
    model = copy.deepcopy(anchor.model)
    model.load_state_dict(merger.combine_pool(aligned, pool.anchor, base, anchor.family.parts))
    t2 = time.perf_counter()
    sources = ", ".join(encoder.source for _, encoder in pool)
    merged = Encoder(
        model, f"merge({sources})", anchor.sample_rate, anchor.normalize, anchor.family
    )
    seconds = {"matching": t1 - t0, "applying": t2 - t1}
    refined = {}
    if merger.needs_clips:  # a pairs-only method: the anchor and one other member
        if not clips:
            raise ValueError(f"merge={merger.name} needs calibration clips (calibration.size >= 1)")
        (other,) = pool.others
        other_aligned = copy.deepcopy(pool.members[other])
        other_aligned.model.load_state_dict(aligned[other])
        refined = merger.refine(merged, anchor, other_aligned, clips)
        seconds["refining"] = time.perf_counter() - t2
    alignment = {n: alignment_table(spec, stats.get(n, {}), perms[n]) for n in pool.others}
    return PoolMergeResult(merged, spec, perms, alignment, seconds, refined)


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
