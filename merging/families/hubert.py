"""HuBERT, MERT-v0 (a plain HubertModel) and MERT-v1-style checkpoints (remapped onto it)."""

from __future__ import annotations

from transformers import HubertConfig, HubertModel

from merging.families import Family

_DROP_PREFIXES = ("hubert.", "mert.", "model.")


def remap_state_dict(state: dict) -> dict:
    """Map a MERT-v1-style (or wrapped) state dict onto ``HubertModel`` names.

    Drops the CQT branch and pretraining heads, strips wrapper prefixes and renames the
    legacy weight-norm tensors of the positional conv.
    """
    out = {}
    for key, value in state.items():
        for prefix in _DROP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if "cqt" in key or key.startswith(("final_proj", "label_embs", "quantizer", "project")):
            continue
        key = key.replace(
            "pos_conv_embed.conv.weight_g", "pos_conv_embed.conv.parametrizations.weight.original0"
        )
        key = key.replace(
            "pos_conv_embed.conv.weight_v", "pos_conv_embed.conv.parametrizations.weight.original1"
        )
        out[key] = value
    return out


FAMILY = Family(
    "hubert",
    HubertModel,
    HubertConfig,
    s3prl_upstream="hf_hubert_custom",
    remap=remap_state_dict,
    aliases=("mert_model",),
)
