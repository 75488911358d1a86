"""What the task-vector methods share: a weight per member, a shared base, no alignment needed.
Each method is its own module (``task_arithmetic``, ``ties``, ``dare``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from merging.combine import Merger, check_weight
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
        if set(self.weights) != set(members):
            raise ValueError(
                f"merge.weights names {sorted(self.weights)}, the pool's members are "
                f"{sorted(members)}: one weight per member"
            )
