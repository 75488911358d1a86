"""Interfaces from an upstream's layers to a task head, per frame (arXiv 2406.12209, 2511.08389).

Every interface maps hidden states (layers, batch, frames, dim) to (batch, frames, out_dim):

- ``WeightedSum``: SUPERB's softmax-weighted sum over layers (``layers`` parameters).
- ``HConv``: convolutions over the *layer* axis with the features as channels (kernel 5,
  stride 3, padding 2), ``floor(log L / log 3)`` of them, each followed by a ReLU; dim -> dim
  channels except the last, dim -> dim // L' where L' layers remain; the L' x (dim // L')
  result is flattened back per frame. HuBERT-base (13 x 768): 13 -> 5 -> 2 layers, 4.4 M
  parameters.
- ``CHConv``: several upstreams' layers concatenated on the feature axis (sum of their dims),
  projected back to one dim by a linear map shared by every layer, then ``HConv``.

An interface works on each frame alone, so a clip's output does not depend on the padding
around it; being non-linear, it does not commute with time pooling: it needs frame features
(``eval.framestore``), not the pooled cache. Several upstreams go through ``match``: the
deeper ones' layers are resampled to the shallowest one's count, and every upstream's frames
to the first upstream's frame count, both by linear interpolation, so stacking (``HConv``) or
concatenating (``CHConv``) lines layers and frames up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

KERNEL, STRIDE, PADDING = 5, 3, 2


def conv_layers(layers: int) -> list[int]:
    """The layer counts HConv's convolutions leave, in order (13 -> [5, 2])."""
    if layers < 2:
        raise ValueError(f"HConv needs at least 2 layers, got {layers}")
    counts, left = [], layers
    for _ in range(math.floor(math.log(layers) / math.log(STRIDE) + 1e-9)):
        left = (left + 2 * PADDING - (KERNEL - 1) - 1) // STRIDE + 1
        counts.append(left)
    return counts


class WeightedSum(nn.Module):
    """SUPERB's interface: a softmax-weighted sum of the layers."""

    def __init__(self, layers: int, dim: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(layers))
        self.out_dim = dim

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, 0)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.einsum("l,lbtd->btd", self.weights(), hidden)


class HConv(nn.Module):
    """Hierarchical convolution over the layer axis, the same at every frame."""

    def __init__(self, layers: int, dim: int):
        super().__init__()
        counts = conv_layers(layers)
        blocks: list[nn.Module] = []
        for i, _ in enumerate(counts):
            last = i == len(counts) - 1
            out = dim // counts[-1] if last else dim
            blocks += [nn.Conv1d(dim, out, KERNEL, STRIDE, PADDING), nn.ReLU()]
        self.convs = nn.Sequential(*blocks)
        self.layers, self.dim = layers, dim
        self.out_dim = (dim // counts[-1]) * counts[-1]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        layers, batch, frames, dim = hidden.shape
        x = hidden.permute(1, 2, 3, 0).reshape(batch * frames, dim, layers)
        return self.convs(x).reshape(batch, frames, self.out_dim)


class CHConv(nn.Module):
    """Upstreams concatenated on the feature axis, projected to ``dim``, then HConv."""

    def __init__(self, layers: int, dims: Sequence[int], dim: int | None = None):
        super().__init__()
        dim = dim or max(dims)
        self.project = nn.Linear(sum(dims), dim)
        self.hconv = HConv(layers, dim)
        self.out_dim = self.hconv.out_dim

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.hconv(self.project(hidden))


def resample(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """``x`` linearly interpolated to ``size`` points along axis ``dim`` (the end points kept)."""
    if x.shape[dim] == size:
        return x
    moved = x.movedim(dim, -1)
    flat = moved.reshape(-1, 1, moved.shape[-1]).float()
    out = F.interpolate(flat, size=size, mode="linear", align_corners=True)
    return out.reshape(*moved.shape[:-1], size).to(x.dtype).movedim(-1, dim)


def match(parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Several upstreams' hidden states (layers_i, batch, frames_i, dim_i) of the same clips,
    with every layer count resampled to the smallest and every frame count to the first's."""
    layers = min(p.shape[0] for p in parts)
    frames = parts[0].shape[2]
    return [resample(resample(p, layers, 0), frames, 2) for p in parts]


def stack(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``match``ed upstreams, their layers one after another (HConv or a weighted sum over all
    of them); their dims must agree."""
    dims = {p.shape[-1] for p in parts}
    if len(dims) != 1:
        raise ValueError(f"stacking layers needs one width, got {sorted(dims)}: use CHConv")
    return torch.cat(match(parts), dim=0)


def concatenate(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``match``ed upstreams side by side on the feature axis (CHConv's input)."""
    return torch.cat(match(parts), dim=-1)


INTERFACES = ("weighted_sum", "hconv", "chconv")


def build(name: str, layers: Sequence[int], dims: Sequence[int]) -> nn.Module:
    """The interface ``name`` for upstreams of these layer counts and widths."""
    if name == "weighted_sum":
        return WeightedSum(sum(_matched(layers)), _one(dims))
    if name == "hconv":
        return HConv(sum(_matched(layers)), _one(dims))
    if name == "chconv":
        return CHConv(min(layers), dims)
    raise ValueError(f"eval.interface={name!r}: one of {', '.join(INTERFACES)}")


def _matched(layers: Sequence[int]) -> list[int]:
    return [min(layers)] * len(layers)


def _one(dims: Sequence[int]) -> int:
    if len(set(dims)) != 1:
        raise ValueError(f"upstreams of widths {sorted(set(dims))} only fuse by chconv")
    return dims[0]


def combine(name: str, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """The input ``build(name, ...)`` takes from the upstreams' hidden states."""
    return concatenate(parts) if name == "chconv" else stack(parts)
