"""What the task-vector methods share: a weight per member, a shared base, no alignment needed.
Each method is its own module (``task_arithmetic``, ``ties``, ``dare``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from merging.combine import Merger, State, check_named, check_weight
from merging.taskvectors import check_density


@dataclass(frozen=True)
class TaskVectorMerger(Merger):
    """``weights``: one number per member (mergekit's ``weight``), the scale of its task vector."""

    weights: Mapping[str, float]
    pairs_only = False
    needs_base = True

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise ValueError(
                f"merge={self.name} needs merge.weights={{member: weight, ...}}, "
                f"got {self.weights!r}"
            )
        for member, value in self.weights.items():
            if isinstance(value, Mapping):
                raise ValueError(f"merge.weights.{member}: merge={self.name} takes one number")
            check_weight(value, f"merge.weights.{member}")
        if hasattr(self, "density"):
            check_density(self.density)

    def check_pool(self, members: Sequence[str], has_base: bool) -> None:
        super().check_pool(members, has_base)
        check_named(self.weights, members)

    def combine_pool(self, states, anchor, base=None, parts=None):
        """The members' task vectors from ``base``, per tensor (every part weighs alike)."""
        self.check_pool(list(states), base is not None)
        return self.apply(base, states)

    def apply(self, base: State, members: Mapping[str, State]) -> dict[str, torch.Tensor]:
        """The merged state dict from the base and the members' (none aligned by default)."""
        raise NotImplementedError
