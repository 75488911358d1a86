"""Weight matching (Ainsworth, Hayase and Srinivasa, "Git Re-Basin: Merging Models modulo
Permutation Symmetries", ICLR 2023): data-free alignment from the weights alone.

Each group's score is the similarity of A's and B's weights summed over every axis the group
permutes, with B's other axes already permuted by the current estimate of their groups. Groups
(tied ones jointly, under the spec's block constraints) are solved by linear assignment one at
a time in a seeded random order, sweep after sweep, until a sweep changes nothing.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from merging.match import MatchProblem, solve_tied, tied_jobs
from merging.spec import PermGroup, PermSpec, apply_permutations


def _on_keys(spec: PermSpec, keys: set[str]) -> PermSpec:
    """The spec restricted to the axes of ``keys``."""
    return PermSpec(
        tuple(
            dataclasses.replace(g, axes=tuple(a for a in g.axes if a.key in keys))
            for g in spec.groups
        )
    )


def similarity(
    group: PermGroup,
    spec: PermSpec,
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    perms: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """(units of A, units of B): the inner products of their weights over the group's axes,
    B's other axes permuted as ``perms`` says."""
    keys = {ax.key for ax in group.axes}
    others = {n: p for n, p in perms.items() if n != group.name}
    b_now = apply_permutations({k: b[k] for k in keys}, _on_keys(spec, keys), others)
    score = torch.zeros(group.size, group.size, dtype=torch.float64)
    for ax in group.axes:
        if ax.conv_groups:  # the grouped conv's per-group input axis: its output axis speaks
            continue
        wa = a[ax.key].double().movedim(ax.dim, 0).reshape(group.size, -1)
        wb = b_now[ax.key].double().movedim(ax.dim, 0).reshape(group.size, -1)
        score += wa @ wb.T
    return score


@dataclass(frozen=True)
class WeightMatching:
    """Coordinate descent over the spec's groups on weight similarities; needs no audio."""

    max_sweeps: int = 100
    seed: int = 0
    name = "weight"
    needs_calibration = False

    def __call__(self, problem: MatchProblem) -> dict[str, torch.Tensor]:
        spec, a, b = problem.spec, problem.a, problem.b
        jobs = tied_jobs(spec, problem.scope)
        perms = {g.name: torch.arange(g.size) for members in jobs for g in members}
        order = random.Random(self.seed)
        for _ in range(self.max_sweeps):
            changed = False
            for members in order.sample(jobs, len(jobs)):
                scores = [similarity(g, spec, a, b, perms) for g in members]
                for name, perm in solve_tied(members, scores).items():
                    changed |= not torch.equal(perm, perms[name])
                    perms[name] = perm
            if not changed:
                break
        return {g.name: perms[g.name] for g in spec.groups if g.name in perms}
