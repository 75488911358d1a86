"""TIES-merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging Models",
NeurIPS 2023): trim each task vector to its top ``density`` share by magnitude, elect each
parameter's sign by the total weighted mass, combine only the entries that agree with it."""

from __future__ import annotations

from dataclasses import dataclass

from merging.mergers.taskvector import TaskVectorMerger
from merging.taskvectors import ties


@dataclass(frozen=True)
class Ties(TaskVectorMerger):
    density: float = 0.2
    normalize: bool = True  # the agreeing entries' weighted mean; False: their weighted sum
    name = "ties"

    def apply(self, base, members):
        return ties(base, members, self.weights, self.density, self.normalize)
