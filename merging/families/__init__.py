"""Encoder families: how each kind of checkpoint is loaded, checked, permuted, calibrated and
exported, in one module per family, found by the checkpoint's ``config.model_type``.

A family module in this package defines ``FAMILY`` and is found by its ``model_type``
without being listed anywhere; a family from outside registers itself with ``register`` (or is
named by ``pair.families``, a list of ``_target_`` nodes ``run.py`` builds before loading).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from merging.points import HUBERT_PARTS, Parts, merge_points, repair_points
from merging.spec import PermSpec, build_spec

# Config fields that decide parameter shapes or the function computed; two encoders can be
# merged only if all of these agree. Training-only fields (dropout, masking, layerdrop, CTC)
# may differ: encoders are merged and probed in eval mode.
ARCH_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "conv_bias",
    "feat_extract_norm",
    "feat_extract_activation",
    "feat_proj_layer_norm",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "do_stable_layer_norm",
    "layer_norm_eps",
    "conv_pos_batch_norm",
    "add_adapter",
    "adapter_kernel_size",
    "adapter_stride",
    "num_adapter_layers",
    "output_hidden_size",
    "adapter_attn_dim",
)


# The weight norm's g of the positional conv is over the kernel axis: no channel permutation
# touches it (both of transformers' layouts).
POS_CONV_NORMS = (
    "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv_embed.conv.weight_g",
)


def untouched(config: Any, keys: Collection[str]) -> set[str]:
    """The keys no permutation of the HuBERT layout touches."""
    return {k for k in keys if k in POS_CONV_NORMS}


def hubert_layout_points(config: Any) -> list:
    return merge_points(config)


@dataclass(frozen=True)
class Family:
    """One encoder family: the one place that says where its permutation axes (``spec``),
    merge points, REPAIR units and weighted parts are. All default to the HuBERT layout (conv
    stack, feature projection, post- or pre-LN transformer with q/k/v/out projections and an
    FFN), which wav2vec2 shares module for module."""

    model_type: str  # config.json's model_type, and what an exported checkpoint keeps
    model_class: type
    config_class: type
    s3prl_upstream: str  # the s3prl upstream that loads an exported checkpoint from a folder
    arch_fields: tuple[str, ...] = ARCH_FIELDS
    spec: Callable[..., PermSpec] = build_spec  # (config, split_qkv, keys, vo_point) -> spec
    points: Callable[[Any], list] = hubert_layout_points  # calibration points (merging.calibrate)
    repair_points: Callable[[Any], list] = repair_points  # the units REPAIR renormalises
    parts: Parts = HUBERT_PARTS  # where the parts merge weights name are (merging.combine)
    invariant_keys: Callable[[Any, Collection[str]], set[str]] = untouched  # (config, keys)
    remap: Callable[[dict], dict] | None = None  # foreign state dicts onto model_class names
    aliases: tuple[str, ...] = ()  # other model_type values this family loads by remapping

    def build_spec(
        self,
        config: Any,
        split_qkv: bool = False,
        keys: Collection[str] | None = None,
        vo_point: str = "v",
    ) -> PermSpec:
        return self.spec(config, split_qkv=split_qkv, keys=keys, vo_point=vo_point)


_FAMILIES: dict[str, Family] = {}
_BUILT_IN: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make ``family`` known by its model_type (and aliases); returns it."""
    for name in (family.model_type, *family.aliases):
        _FAMILIES[name] = family
    return family


def families() -> dict[str, Family]:
    """Every known family by model_type (aliases included): this package's modules, then
    whatever was registered."""
    if not _BUILT_IN:
        for info in pkgutil.iter_modules(__path__):
            module = importlib.import_module(f"{__name__}.{info.name}")
            family = getattr(module, "FAMILY", None)
            if isinstance(family, Family):
                for name in (family.model_type, *family.aliases):
                    _BUILT_IN[name] = family
    return {**_BUILT_IN, **_FAMILIES}


def family_of(model_type: str | None) -> Family | None:
    return families().get(str(model_type))


def family_for_model(model: Any) -> Family:
    """The family of a loaded model, by its config's model_type."""
    found = family_of(getattr(model.config, "model_type", None))
    if found is None:
        known = ", ".join(sorted(families()))
        raise KeyError(f"no encoder family for model_type {model.config.model_type!r} ({known})")
    return found
