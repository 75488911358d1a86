"""The permutation spec of a HuBERT-layout encoder: one table, one generic apply function.

Every unit that can be reordered belongs to one *permutation group*. A group names the
parameter axes that must move together and the calibration points whose activations score
its matching. Matching fills groups with index tensors; :func:`apply_permutations` applies
them to any state dict. Nothing else in the project knows which layer has which axis.

Index convention: ``perm[i] = j`` means unit ``i`` of the permuted model is unit ``j`` of the
original, i.e. every listed axis is gathered with ``index_select(dim, perm)``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from transformers import HubertConfig

ENC = "encoder"
CONV = "feature_extractor.conv_layers"


@dataclass(frozen=True)
class Axis:
    """One axis of one parameter.

    ``conv_groups > 0`` marks the input-channel axis of a grouped convolution (the positional
    conv): its dim-1 holds per-group offsets, so it is reordered row by row with the offsets
    that the group's permutation induces inside each block.
    """

    key: str
    dim: int
    conv_groups: int = 0


@dataclass(frozen=True)
class PermGroup:
    """A set of axes sharing one permutation of ``size`` units.

    ``blocks > 1`` means the permutation is only a symmetry if it maps whole blocks of
    ``size // blocks`` units onto whole blocks (attention heads, positional-conv groups).
    Groups with the same ``tie`` must use the same block permutation (Q/K and V/O of one
    layer share the head order). ``fixed_blocks``: the blocks must stay where they are, only
    units inside each block move (WavLM's heads, which its position gates tie to the residual
    stream). ``exact=False`` marks reorderings that change the function.
    """

    name: str
    kind: str
    size: int
    axes: tuple[Axis, ...]
    points: tuple[str, ...]
    blocks: int = 1
    tie: str | None = None
    exact: bool = True
    fixed_blocks: bool = False

    @property
    def block_size(self) -> int:
        return self.size // self.blocks


@dataclass(frozen=True)
class PermSpec:
    groups: tuple[PermGroup, ...] = field(default_factory=tuple)

    def __getitem__(self, name: str) -> PermGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def keys(self) -> set[str]:
        return {a.key for g in self.groups for a in g.axes}


def _wb(prefix: str, dim: int = 0, bias: bool = True) -> list[Axis]:
    axes = [Axis(f"{prefix}.weight", dim)]
    if bias:
        axes.append(Axis(f"{prefix}.bias", 0))
    return axes


# The direction tensor of the weight-normed positional conv, in the layouts transformers has
# used (parametrizations, legacy weight_v, or no weight norm). Its norm ``g`` is over the kernel
# axis and is unchanged by any channel permutation.
POS_CONV_WEIGHTS = tuple(
    f"{ENC}.pos_conv_embed.conv.{name}"
    for name in ("parametrizations.weight.original1", "weight_v", "weight")
)


VO_POINTS = {"v": "v", "context": "ctx"}  # permute.vo_point -> calibration point prefix


def build_spec(
    config: HubertConfig,
    split_qkv: bool = False,
    keys: Collection[str] | None = None,
    vo_point: str = "v",
) -> PermSpec:
    """Derive every permutation group from the config.

    With ``split_qkv`` the attention groups are the paper's "all" variant: Q, K and V/O are
    reordered independently and across heads, which is *not* a symmetry. With ``keys`` (a
    state dict's names) axes of absent optional parameters are dropped, so the spec names
    exactly the model's own parameters. ``vo_point``: where V/O is scored, on ``v_proj``'s
    output (``v``) or on the attention context that ``out_proj`` reads (``context``, the
    paper's point); both see the same channel order, so both are exact.
    """
    if vo_point not in VO_POINTS:
        raise ValueError(f"permute.vo_point must be one of {tuple(VO_POINTS)}, got {vo_point!r}")
    vo_at = VO_POINTS[vo_point]
    groups: list[PermGroup] = []
    n_conv = len(config.conv_dim)
    layer_norm_convs = config.feat_extract_norm == "layer"
    for i in range(n_conv):
        axes = _wb(f"{CONV}.{i}.conv", 0, bias=config.conv_bias)
        if layer_norm_convs or i == 0:
            axes += _wb(f"{CONV}.{i}.layer_norm", 0)
        if i + 1 < n_conv:
            axes.append(Axis(f"{CONV}.{i + 1}.conv.weight", 1))
        else:
            if getattr(config, "feat_proj_layer_norm", True):
                axes += _wb("feature_projection.layer_norm", 0)
            axes.append(Axis("feature_projection.projection.weight", 1))
        groups.append(
            PermGroup(f"conv.{i}", "conv", config.conv_dim[i], tuple(axes), (f"conv.{i}",))
        )

    hidden, heads = config.hidden_size, config.num_attention_heads
    for l in range(config.num_hidden_layers):  # noqa: E741
        layer = f"{ENC}.layers.{l}"
        att = f"{layer}.attention"
        ff = f"{layer}.feed_forward"
        groups.append(
            PermGroup(
                f"ffn.{l}",
                "ffn",
                config.intermediate_size,
                (*_wb(f"{ff}.intermediate_dense"), Axis(f"{ff}.output_dense.weight", 1)),
                (f"ffn.{l}",),
            )
        )
        vo = (*_wb(f"{att}.v_proj"), Axis(f"{att}.out_proj.weight", 1))
        if split_qkv:
            groups += [
                PermGroup(
                    f"attn_q.{l}",
                    "attn",
                    hidden,
                    tuple(_wb(f"{att}.q_proj")),
                    (f"q.{l}",),
                    exact=False,
                ),
                PermGroup(
                    f"attn_k.{l}",
                    "attn",
                    hidden,
                    tuple(_wb(f"{att}.k_proj")),
                    (f"k.{l}",),
                    exact=False,
                ),
                PermGroup(f"attn_vo.{l}", "attn", hidden, vo, (f"{vo_at}.{l}",), exact=False),
            ]
        else:
            qk = (*_wb(f"{att}.q_proj"), *_wb(f"{att}.k_proj"))
            tie = f"heads.{l}"
            groups += [
                PermGroup(f"attn_qk.{l}", "attn", hidden, qk, (f"q.{l}", f"k.{l}"), heads, tie),
                PermGroup(f"attn_vo.{l}", "attn", hidden, vo, (f"{vo_at}.{l}",), heads, tie),
            ]

    groups.append(_residual_group(config, keys))
    if keys is not None:
        groups = [
            PermGroup(**{**g.__dict__, "axes": tuple(a for a in g.axes if a.key in keys)})
            for g in groups
        ]
    return PermSpec(tuple(groups))


def _residual_group(config: HubertConfig, keys: Collection[str] | None) -> PermGroup:
    axes: list[Axis] = [*_wb("feature_projection.projection"), Axis("masked_spec_embed", 0)]
    axes += _wb(f"{ENC}.layer_norm")
    g = config.num_conv_pos_embedding_groups
    pos_keys = POS_CONV_WEIGHTS[:1] if keys is None else [k for k in POS_CONV_WEIGHTS if k in keys]
    for key in pos_keys:
        axes += [Axis(key, 0), Axis(key, 1, conv_groups=g)]
    axes.append(Axis(f"{ENC}.pos_conv_embed.conv.bias", 0))
    for l in range(config.num_hidden_layers):  # noqa: E741
        layer = f"{ENC}.layers.{l}"
        att = f"{layer}.attention"
        ff = f"{layer}.feed_forward"
        axes += [Axis(f"{att}.{p}_proj.weight", 1) for p in "qkv"]
        axes += _wb(f"{att}.out_proj")
        axes += _wb(f"{layer}.layer_norm") + _wb(f"{layer}.final_layer_norm")
        axes.append(Axis(f"{ff}.intermediate_dense.weight", 1))
        axes += _wb(f"{ff}.output_dense")
    points = tuple(f"res.{j}" for j in range(config.num_hidden_layers + 1))
    return PermGroup("res", "res", config.hidden_size, tuple(axes), points, blocks=g)


def _gather_grouped_conv_input(w: torch.Tensor, perm: torch.Tensor, groups: int) -> torch.Tensor:
    """Reorder the per-group input axis (dim 1) of a grouped conv whose rows already moved.

    Row ``o`` of the permuted weight sits in block ``o // cg``; that block is fed by original
    channels ``perm[block]``, whose offsets inside their own block give the gather order.
    """
    out, cg = w.shape[0], w.shape[1]
    if out != groups * cg or perm.numel() != out:
        raise ValueError(f"grouped conv weight {tuple(w.shape)} does not match {groups} groups")
    offsets = (perm % cg).view(groups, cg)  # per target block, the source offsets
    if not torch.equal(
        perm.view(groups, cg) // cg, (perm.view(groups, cg) // cg)[:, :1].expand(-1, cg)
    ):
        raise ValueError("permutation splits a positional-conv group; it is not a symmetry")
    index = offsets.repeat_interleave(cg, dim=0)  # (out, cg)
    index = index.view(out, cg, *([1] * (w.dim() - 2))).expand_as(w)
    return torch.gather(w, 1, index)


def apply_permutations(
    state: Mapping[str, torch.Tensor],
    spec: PermSpec,
    perms: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Return a new state dict with every group in ``perms`` applied to all its axes."""
    out = dict(state)
    for name, perm in perms.items():
        group = spec[name]
        perm = perm.to(torch.long)
        if perm.shape != (group.size,):
            raise ValueError(f"{name}: expected {group.size} indices, got {tuple(perm.shape)}")
        for axis in group.axes:
            if axis.key not in out:
                raise KeyError(
                    f"{name} permutes {axis.key!r}, which the state dict lacks; "
                    "build the spec with keys=state.keys()"
                )
            w = out[axis.key]
            if axis.conv_groups:
                out[axis.key] = _gather_grouped_conv_input(w, perm.to(w.device), axis.conv_groups)
            else:
                out[axis.key] = w.index_select(axis.dim, perm.to(w.device))
    return out


def axis_claims(spec: PermSpec) -> dict[tuple[str, int], list[str]]:
    """Which groups permute each (key, dim); used to prove no axis is claimed twice."""
    claims: dict[tuple[str, int], list[str]] = {}
    for g in spec.groups:
        for a in g.axes:
            claims.setdefault((a.key, a.dim), []).append(g.name)
    return claims


def random_exact_perms(
    spec: PermSpec, generator: torch.Generator, names: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """Random index tensors that respect every block and tie constraint of the spec."""
    wanted = set(spec.names() if names is None else names)
    block_orders: dict[str, torch.Tensor] = {}
    perms: dict[str, torch.Tensor] = {}
    for g in spec.groups:
        if g.name not in wanted:
            continue
        if g.blocks == 1:
            perms[g.name] = torch.randperm(g.size, generator=generator)
            continue
        key = g.tie or g.name
        if key not in block_orders:
            block_orders[key] = (
                torch.arange(g.blocks)
                if g.fixed_blocks
                else torch.randperm(g.blocks, generator=generator)
            )
        inner = [torch.randperm(g.block_size, generator=generator) for _ in range(g.blocks)]
        perms[g.name] = compose_blocks(block_orders[key], inner, g.block_size)
    return perms


def compose_blocks(
    block_perm: torch.Tensor, inner: list[torch.Tensor], block_size: int
) -> torch.Tensor:
    """Full index from a block order and, for each target block, an order inside it."""
    return torch.cat([block_perm[t] * block_size + inner[t] for t in range(len(inner))])
