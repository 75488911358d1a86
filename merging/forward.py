"""Batched, padding-exact forward passes of HuBERT-family encoders.

transformers masks padded frames in the transformer, but the GroupNorm of the first conv layer
(``feat_extract_norm="group"``, HuBERT-base and MERT) normalises over the whole padded time
axis, so a clip's features would depend on what it was batched with. A forward hook swaps in
the same normalisation computed over each clip's valid frames only, which makes every valid
frame identical to an unpadded forward pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import HubertConfig

from merging.load import Encoder


def conv_output_lengths(lengths: torch.Tensor, config: HubertConfig) -> list[torch.Tensor]:
    """Valid frames after each conv layer (no padding in the conv stack)."""
    out = []
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        out.append(lengths.clamp(min=0))
    return out


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def pad_batch(waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D waveforms with zeros; return (batch, lengths)."""
    lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : w.numel()] = w
    return batch, lengths


def min_samples(config: HubertConfig) -> int:
    """Shortest input that yields one output frame."""
    n = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride, strict=True))):
        n = (n - 1) * stride + kernel
    return n


def prepare_input(encoder: Encoder, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = frame_mask(lengths, batch.shape[1]).to(batch.dtype)
    if encoder.normalize:  # Wav2Vec2FeatureExtractor's per-utterance zero-mean unit-variance
        n = lengths.clamp(min=1).to(batch.dtype)[:, None]
        mean = (batch * mask).sum(1, keepdim=True) / n
        var = (((batch - mean) * mask) ** 2).sum(1, keepdim=True) / n
        batch = (batch - mean) / torch.sqrt(var + 1e-7)
    return batch * mask


@contextmanager
def masked_group_norm(model: nn.Module, frames: torch.Tensor | None) -> Iterator[None]:
    """Make the first conv layer's GroupNorm ignore padded frames (see module docstring)."""
    norm = getattr(model.feature_extractor.conv_layers[0], "layer_norm", None)
    if frames is None or not isinstance(norm, nn.GroupNorm) or norm.num_groups != norm.num_channels:
        yield
        return

    def hook(module: nn.GroupNorm, inputs: tuple[torch.Tensor], _out: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        m = frame_mask(frames.to(x.device), x.shape[-1])[:, None, :].to(x.dtype)
        n = m.sum(-1, keepdim=True).clamp(min=1)
        mean = (x * m).sum(-1, keepdim=True) / n
        var = (((x - mean) * m) ** 2).sum(-1, keepdim=True) / n
        y = (x - mean) / torch.sqrt(var + module.eps)
        return y * module.weight[None, :, None] + module.bias[None, :, None]

    handle = norm.register_forward_hook(hook, prepend=True)  # before any reader of the output
    try:
        yield
    finally:
        handle.remove()


def forward(
    encoder: Encoder,
    batch: torch.Tensor,
    lengths: torch.Tensor,
    output_hidden_states: bool = False,
):
    """Run the encoder on a right-padded batch, with autograd (a student in training);
    valid frames match unpadded passes."""
    device = next(encoder.model.parameters()).device
    inputs = prepare_input(encoder, batch, lengths).to(device)
    padded = bool((lengths < batch.shape[1]).any())
    attention_mask = frame_mask(lengths, batch.shape[1]).long().to(device) if padded else None
    first = conv_output_lengths(lengths, encoder.config)[0] if padded else None
    with masked_group_norm(encoder.model, first):
        return encoder.model(
            inputs, attention_mask=attention_mask, output_hidden_states=output_hidden_states
        )


@torch.no_grad()  # not inference_mode: hooks keep state that outlives the pass
def encode(
    encoder: Encoder,
    batch: torch.Tensor,
    lengths: torch.Tensor,
    output_hidden_states: bool = False,
):
    """``forward`` without autograd: every pass of merging and probing."""
    return forward(encoder, batch, lengths, output_hidden_states)
