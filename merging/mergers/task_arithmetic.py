"""Task arithmetic (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023):
base + sum_i w_i (theta_i - base)."""

from __future__ import annotations

from dataclasses import dataclass

from merging.mergers.taskvector import TaskVectorMerger
from merging.taskvectors import task_arithmetic


@dataclass(frozen=True)
class TaskArithmetic(TaskVectorMerger):
    name = "task_arithmetic"

    def apply(self, base, members):
        return task_arithmetic(base, members, self.weights)
