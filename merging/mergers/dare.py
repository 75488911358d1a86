"""DARE (Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous
Models as a Free Lunch", ICML 2024): drop each task-vector entry with probability
1 - ``density``, rescale the survivors by 1 / ``density`` (seeded), then task arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

from merging.mergers.taskvector import TaskVectorMerger
from merging.taskvectors import dare


@dataclass(frozen=True)
class Dare(TaskVectorMerger):
    density: float = 0.5
    seed: int = 0
    name = "dare"

    def apply(self, base, members):
        return dare(base, members, self.weights, self.density, self.seed)
