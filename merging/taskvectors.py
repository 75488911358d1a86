"""Merging encoders that share an initialisation through their task vectors.

A member's task vector is what training added to the shared base: tau_i = theta_i - theta_base.
Each method below returns base + (a combination of the taus), tensor by tensor:

- task arithmetic (Ilharco et al., ICLR 2023): base + sum_i w_i tau_i;
- TIES (Yadav et al., NeurIPS 2023): each tau_i trimmed to its top ``density`` share by
  magnitude (per tensor), each entry's sign elected by the total weighted mass, and only the
  entries that agree with it combined (their weighted mean, or sum with ``normalize=False``);
- DARE (Yu et al., ICML 2024): each entry of each tau_i dropped with probability
  1 - ``density`` and the survivors rescaled by 1 / ``density`` (seeded), then summed as in task
  arithmetic.

The knobs are mergekit's: a ``weight`` per member and a ``density``. Non-floating tensors (step
counters, buffers of integers) are the base's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

State = Mapping[str, torch.Tensor]


def _check(base: State, members: Mapping[str, State], weights: Mapping[str, float]) -> None:
    if set(weights) != set(members):
        raise ValueError(
            f"merge weights name {sorted(weights)}, the members are {sorted(members)}: "
            "one weight per member"
        )
    for name, state in members.items():
        if set(state) != set(base):
            diff = sorted(set(state) ^ set(base))[:5]
            raise KeyError(f"member {name!r} and the base differ in keys: {diff}")
        for key, t in state.items():
            if t.shape != base[key].shape:
                raise ValueError(
                    f"member {name!r}: {key} has shape {tuple(t.shape)}, the base "
                    f"{tuple(base[key].shape)}: members must share the base's layout"
                )


def check_density(density: float) -> float:
    if isinstance(density, bool) or not 0.0 < float(density) <= 1.0:
        raise ValueError(f"merge.density must lie in (0, 1], got {density!r}")
    return float(density)


def _merge(
    base: State,
    members: Mapping[str, State],
    weights: Mapping[str, float],
    combine: Callable[[list[tuple[float, torch.Tensor]]], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """base + ``combine``([(w_i, tau_i) per member]) for every floating tensor; the rest the
    base's."""
    _check(base, members, weights)
    out = {}
    for key, b in base.items():
        if not b.is_floating_point():
            out[key] = b.clone()
            continue
        out[key] = b + combine([(float(weights[n]), s[key] - b) for n, s in members.items()])
    return out


def _weighted_sum(taus: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
    delta = torch.zeros_like(taus[0][1])
    for w, tau in taus:
        delta.add_(tau, alpha=w)
    return delta


def task_arithmetic(
    base: State, members: Mapping[str, State], weights: Mapping[str, float]
) -> dict[str, torch.Tensor]:
    """base + sum_i w_i (theta_i - base)."""
    return _merge(base, members, weights, _weighted_sum)


def trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    """``tau`` with all but its ``density`` share of largest-magnitude entries set to 0 (at
    least one entry kept; ties at the threshold kept)."""
    if density >= 1.0:
        return tau
    k = max(1, int(round(density * tau.numel())))
    threshold = tau.abs().flatten().kthvalue(tau.numel() - k + 1).values
    return torch.where(tau.abs() >= threshold, tau, torch.zeros_like(tau))


def ties(
    base: State,
    members: Mapping[str, State],
    weights: Mapping[str, float],
    density: float = 0.2,
    normalize: bool = True,
) -> dict[str, torch.Tensor]:
    """TIES-merging: trim, elect sign, disjoint merge."""
    density = check_density(density)

    def combine(taus: list[tuple[float, torch.Tensor]]) -> torch.Tensor:
        trimmed = torch.stack([w * trim(tau, density) for w, tau in taus])
        elected = torch.sign(trimmed.sum(0))  # the sign with the larger total mass
        agree = (torch.sign(trimmed) == elected) & (trimmed != 0)
        kept = torch.where(agree, trimmed, torch.zeros_like(trimmed)).sum(0)
        if normalize:  # the mean of the agreeing entries, each member weighed by its weight
            w = torch.tensor([w for w, _ in taus], dtype=kept.dtype)
            mass = (agree * w.view(-1, *[1] * kept.dim()).abs()).sum(0)
            kept = torch.where(mass > 0, kept / mass.clamp(min=1e-12), kept)
        return kept

    return _merge(base, members, weights, combine)


def dare(
    base: State,
    members: Mapping[str, State],
    weights: Mapping[str, float],
    density: float = 0.5,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """DARE: drop and rescale each task vector's entries, then task arithmetic. One generator
    seeded with ``seed`` draws every mask, member by member and tensor by tensor in the base's
    key order, so a merge is reproducible."""
    density = check_density(density)
    gen = torch.Generator().manual_seed(int(seed))

    def drop(tau: torch.Tensor) -> torch.Tensor:
        if density >= 1.0:
            return tau
        keep = torch.rand(tau.shape, generator=gen) < density
        return torch.where(keep, tau / density, torch.zeros_like(tau))

    return _merge(
        base, members, weights, lambda taus: _weighted_sum([(w, drop(t)) for w, t in taus])
    )
