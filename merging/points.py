"""Where calibration reads activations: the merge points of the HuBERT layout (HuBERT,
wav2vec2; WavLM adapts them in its family module). Layout data only: a family module can say
where its points are without importing the calibration machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    conv = "feature_extractor.conv_layers"
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
