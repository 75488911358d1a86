"""Sinkhorn matching: entropy-regularised optimal transport on the calibration correlations
(Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013; as a
model-fusion alignment, Singh and Jaggi, "Model Fusion via Optimal Transport", NeurIPS 2020).

The transport plan between A's and B's units (uniform marginals, cost = -correlation,
temperature ``temperature``) is rounded to a permutation by linear assignment on the plan (on
its logarithm it would be the exact matcher's permutation again: the potentials shift every
matching's total alike). Block-tied groups are rounded under the spec's block constraints.
``keep_plan`` also returns the soft plans (``plans``) for an OT-fusion combination, which
is not function-preserving.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from merging.match import MatchProblem, group_score, solve_tied, tied_jobs


def sinkhorn_plan(score: torch.Tensor, temperature: float, iterations: int) -> torch.Tensor:
    """The entropic transport plan (rows and columns summing to 1/n) of ``exp(score / t)``."""
    log_k = score.double() / temperature
    log_u = torch.zeros(score.shape[0], dtype=torch.float64)
    log_v = torch.zeros(score.shape[1], dtype=torch.float64)
    log_r = torch.full_like(log_u, -torch.log(torch.tensor(float(score.shape[0]))).item())
    log_c = torch.full_like(log_v, -torch.log(torch.tensor(float(score.shape[1]))).item())
    for _ in range(iterations):
        log_u = log_r - torch.logsumexp(log_k + log_v[None, :], dim=1)
        log_v = log_c - torch.logsumexp(log_k + log_u[:, None], dim=0)
    return torch.exp(log_k + log_u[:, None] + log_v[None, :])


@dataclass
class Sinkhorn:
    """Assignment on the Sinkhorn plan of each group's correlation."""

    temperature: float = 0.05
    iterations: int = 200
    keep_plan: bool = False
    plans: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    name = "sinkhorn"
    needs_calibration = True

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"match.temperature must be positive, got {self.temperature!r}")

    def __call__(self, problem: MatchProblem) -> dict[str, torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        for members in tied_jobs(problem.spec, problem.scope):
            plans = [
                sinkhorn_plan(group_score(g, problem.stats), self.temperature, self.iterations)
                for g in members
            ]
            if self.keep_plan:
                self.plans.update({g.name: p for g, p in zip(members, plans, strict=True)})
            found.update(solve_tied(members, plans))
        return {g.name: found[g.name] for g in problem.spec.groups if g.name in found}
