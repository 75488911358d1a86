"""The student: the conv stack and the first k transformer layers of an initialisation, and one
linear prediction head per teacher layer it regresses (DistilHuBERT)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from merging.load import Encoder


def target_layers(teacher_layers: int, heads: int) -> list[int]:
    """``heads`` teacher layers evenly spaced and ending at the last (12 layers, 3 heads: 4, 8,
    12); layer l is ``hidden_states[l]``, the output of transformer layer l."""
    if not 1 <= heads <= teacher_layers:
        raise ValueError(
            f"heads must be in [1, {teacher_layers}] (the teacher's layers), got {heads}"
        )
    return [round(teacher_layers * (j + 1) / heads) for j in range(heads)]


def student_from(init: Encoder, layers: int) -> Encoder:
    """A trainable copy of ``init`` keeping its first ``layers`` transformer layers (and
    everything before them: conv stack, feature projection, positional conv), without
    SpecAugment."""
    total = init.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ValueError(
            f"distill.layers must be in [1, {total}] (the initialisation's), got {layers}"
        )
    config = copy.deepcopy(init.config)
    config.num_hidden_layers = layers
    # DistilHuBERT does not mask the student's input (and transformers' masks draw from numpy's
    # global generator, which a resumed run could not replay)
    config.apply_spec_augment = False
    model = type(init.model)(config)
    state = {
        k: v
        for k, v in init.model.state_dict().items()
        if not k.startswith("encoder.layers.") or int(k.split(".")[2]) < layers
    }
    model.load_state_dict(state)
    model.train().requires_grad_(True)
    return Encoder(model, f"student({init.source}, {layers} layers)", init.sample_rate,
                   init.normalize, init.family)  # fmt: skip


class Heads(nn.Module):
    """One linear map per (teacher, layer) from the student's last hidden state to the
    teacher's width."""

    def __init__(self, width: int, targets: dict[str, tuple[int, Sequence[int]]]):
        super().__init__()
        self.targets = {name: list(layers) for name, (_, layers) in targets.items()}
        self.maps = nn.ModuleDict(
            {
                f"{name}_{layer}": nn.Linear(width, teacher_width)
                for name, (teacher_width, layers) in targets.items()
                for layer in layers
            }
        )

    def forward(self, hidden: torch.Tensor) -> dict[str, dict[int, torch.Tensor]]:
        return {
            name: {layer: self.maps[f"{name}_{layer}"](hidden) for layer in layers}
            for name, layers in self.targets.items()
        }


def distil_loss(
    predicted: torch.Tensor, target: torch.Tensor, cos_weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """DistilHuBERT's loss for one head, (loss, mean cosine similarity): the L1 distance
    averaged over dimensions and frames minus ``cos_weight`` times the mean log-sigmoid of the
    cosine similarity per frame."""
    l1 = (predicted - target).abs().mean()
    cos = nn.functional.cosine_similarity(predicted, target, dim=-1)
    return l1 - cos_weight * nn.functional.logsigmoid(cos).mean(), cos.mean()
