"""Where things are in the HuBERT layout (HuBERT, wav2vec2; WavLM adapts them in its family
module), besides the permutation axes (``merging.spec``): the merge points calibration reads,
the units REPAIR renormalises, and the parts that merge weights name. Layout data only: a
family (``merging.families.Family``) says where its points and parts are without importing the
machinery that uses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CONV = "feature_extractor.conv_layers"


@dataclass(frozen=True)
class Point:
    """Where an activation is read: a module's output (or input, ``pre``) and its frame rate.
    ``then``: a submodule applied to what was read (a projection that the model computes
    inside a fused kernel, where no hook sees it: WavLM's q/k/v)."""

    name: str
    module: str
    pre: bool = False
    channels_first: bool = False
    conv_layer: int = -1  # frames of this conv layer; -1 = the transformer's frames
    then: str | None = None


def merge_points(config: Any) -> list[Point]:
    """Every point some permutation group can be scored on (see ``PermGroup.points``), in the
    HuBERT layout (HuBERT, wav2vec2)."""
    conv = CONV
    points = []
    for i in range(len(config.conv_dim)):
        # The paper's CNN points: after conv0's GroupNorm, after the conv of the others.
        module = (
            f"{conv}.{i}.layer_norm"
            if i == 0 and config.feat_extract_norm == "group"
            else f"{conv}.{i}.conv"
        )
        points.append(Point(f"conv.{i}", module, channels_first=True, conv_layer=i))
    points.append(Point("res.0", "feature_projection"))
    for l in range(config.num_hidden_layers):  # noqa: E741
        layer = f"encoder.layers.{l}"
        points += [Point(f"{p}.{l}", f"{layer}.attention.{p}_proj") for p in "qkv"]
        # the attention context softmax(QK^T)V that out_proj reads: the paper's V/O point
        points.append(Point(f"ctx.{l}", f"{layer}.attention.out_proj", pre=True))
        points.append(Point(f"ffn.{l}", f"{layer}.feed_forward.output_dense", pre=True))
        points.append(Point(f"res.{l + 1}", layer))
    return points


@dataclass(frozen=True)
class RepairPoint:
    """A unit REPAIR renormalises: the output of an affine module."""

    name: str
    module: str  # the affine module whose output is the unit (conv, norm or linear)
    channels_first: bool  # (batch, units, frames) rather than (batch, frames, units)
    weight_key: str  # the state-dict key whose weight the targets are interpolated with


def repair_points(config: Any) -> list[RepairPoint]:
    """Each conv layer's output (after its norm where the norm is per channel) and each FFN's
    hidden units, in the HuBERT layout."""
    points = []
    for i in range(len(config.conv_dim)):
        if config.feat_extract_norm == "layer":
            module, first = f"{CONV}.{i}.layer_norm", False  # normalises over the last axis
        elif i == 0:
            module, first = f"{CONV}.0.layer_norm", True  # GroupNorm, one group per channel
        else:
            module, first = f"{CONV}.{i}.conv", True
        points.append(RepairPoint(f"conv.{i}", module, first, f"{module}.weight"))
    for layer in range(config.num_hidden_layers):
        module = f"encoder.layers.{layer}.feed_forward.intermediate_dense"
        points.append(RepairPoint(f"ffn.{layer}", module, False, f"{module}.weight"))
    return points


@dataclass(frozen=True)
class Parts:
    """Where the parts a merge weight can name (``merging.combine.PARTS``) are in a state dict:
    the conv stack (key prefixes), the transformer layers (a pattern whose group is the layer
    index) and the norms (a name every norm's keys contain)."""

    cnn: tuple[str, ...] = ("feature_extractor.", "feature_projection.")
    layer: str = r"encoder\.layers\.(\d+)\."
    norm: str = "layer_norm"

    def is_norm(self, key: str) -> bool:
        return self.norm in key

    def is_cnn(self, key: str) -> bool:
        return key.startswith(self.cnn)

    def layer_of(self, key: str) -> int | None:
        match = re.match(self.layer, key)
        return int(match.group(1)) if match else None


HUBERT_PARTS = Parts()
