"""WavLM (``WavLMModel``): HuBERT's layout plus a gated relative position bias.

Each layer's gate reads head h's block of the layer input (``gru_rel_pos_linear`` over
``head_dim``) and scales head h's share of one bias that layer 0's ``rel_attn_embed`` computes
for all layers (``gru_rel_pos_const`` per head). Reordering heads is therefore a symmetry only
together with the matching blocks of the residual stream in every layer, so here heads stay in
place, the residual stream is not permuted, and everything else stays free: Q/K and V/O channels
inside each head, FFN units, conv channels. q/k/v are computed in a fused kernel that no hook
sees, so they are read as the attention input and projected.
"""

from __future__ import annotations

from dataclasses import replace

from transformers import WavLMConfig, WavLMModel

from merging.families import ARCH_FIELDS, Family, untouched
from merging.points import Point, merge_points
from merging.spec import PermSpec, build_spec


def spec(config, split_qkv: bool = False, keys=None, vo_point: str = "v") -> PermSpec:
    if vo_point != "v":
        raise ValueError(
            "permute.vo_point: WavLM computes its attention context in a fused kernel that no "
            "hook sees; only vo_point=v is available"
        )
    groups = []
    for g in build_spec(config, split_qkv=split_qkv, keys=keys).groups:
        if g.kind == "res":
            continue
        if g.kind == "attn" and g.blocks > 1:
            g = replace(g, fixed_blocks=True)
        groups.append(g)
    return PermSpec(tuple(groups))


def points(config) -> list:
    out = []
    for p in merge_points(config):
        kind, _, layer = p.name.partition(".")
        if kind == "ctx":  # out_proj runs inside the fused kernel: never called as a module
            continue
        if kind in ("q", "k", "v"):
            attention = f"encoder.layers.{layer}.attention"
            p = Point(p.name, attention, pre=True, then=f"{attention}.{kind}_proj")
        out.append(p)
    return out


POSITION_BIAS = ("gru_rel_pos_const", "gru_rel_pos_linear.weight", "gru_rel_pos_linear.bias")


def invariant_keys(config, keys) -> set[str]:
    """What WavLM's spec leaves alone: the position-bias tensors, and the tensors whose every
    permutable axis is the residual stream's (layer norms, the positional conv, biases of
    projections into the stream)."""
    layout = build_spec(config, keys=keys).groups
    stream = {a.key for g in layout if g.kind == "res" for a in g.axes}
    elsewhere = {a.key for g in layout if g.kind != "res" for a in g.axes}
    bias = {k for k in keys if k.endswith(POSITION_BIAS) or k.endswith("rel_attn_embed.weight")}
    return untouched(config, keys) | bias | (stream - elsewhere)


FAMILY = Family(
    "wavlm",
    WavLMModel,
    WavLMConfig,
    s3prl_upstream="",  # s3prl's WavLM upstreams read fairseq checkpoints, not HF folders
    arch_fields=(*ARCH_FIELDS, "num_buckets", "max_bucket_distance"),
    spec=spec,
    points=points,
    invariant_keys=invariant_keys,
)
