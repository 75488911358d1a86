"""Turning correlations into permutations: plain and block-hierarchical linear assignment.

A matcher is any callable ``(MatchProblem) -> {group: index tensor}`` named by
``conf/match/*.yaml`` (``_target_``); ``Exact`` is the paper's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from merging.calibrate import PointStats
from merging.spec import PermGroup, PermSpec, compose_blocks

ATTN_MODES = ("none", "heads", "split")


@dataclass(frozen=True)
class Scope:
    """Which groups are aligned. ``attn``: none, heads (exact: heads, then Q/K and V/O inside
    heads) or split (the paper's "all": Q, K and V/O independently, not a symmetry)."""

    cnn: bool = False
    ffn: bool = False
    attn: str = "none"
    res: bool = False
    vo_point: str = "v"  # V/O scored on v_proj's output, or on the context (see build_spec)

    def __post_init__(self) -> None:
        if self.attn not in ATTN_MODES:
            raise ValueError(f"permute.attn must be one of {ATTN_MODES}, got {self.attn!r}")

    @property
    def split_qkv(self) -> bool:
        return self.attn == "split"

    def selects(self, group: PermGroup) -> bool:
        return {
            "conv": self.cnn,
            "ffn": self.ffn,
            "attn": self.attn != "none",
            "res": self.res,
        }[group.kind]


# Square problems at least this large get auction prices as a warm start (see _lsa).
WARM_START_SIZE = 256


def _auction_prices(score: np.ndarray, max_rounds: int = 500) -> np.ndarray:
    """Near-optimal column duals from four phases of an epsilon-scaled (Jacobi) auction.

    Every unassigned row bids for its best column at once, raising its price by the margin over
    the row's second best plus epsilon; epsilon shrinks tenfold per phase. Each phase stops once
    99% of rows are placed: the long tail of one-row rounds is left to the exact solver. Any
    prices are valid (they only shift the costs), so float32 and the round budget cost no
    exactness.
    """
    s = score.astype(np.float32)
    n = s.shape[0]
    span = float(s.max() - s.min()) or 1.0
    prices = np.zeros(n, np.float32)
    values = np.empty_like(s)
    for eps in (span * 2e-2, span * 2e-3, span * 2e-4, span * 2e-5):
        owner, column = np.full(n, -1), np.full(n, -1)
        bidders = np.arange(n)
        while bidders.size > n // 100 and max_rounds > 0:
            max_rounds -= 1
            value = values[: bidders.size]
            np.take(s, bidders, axis=0, out=value)
            value -= prices
            rows = np.arange(bidders.size)
            best = value.argmax(1)
            top = value[rows, best]
            value[rows, best] = -np.inf
            bid = prices[best] + (top - value.max(1)) + eps
            order = np.lexsort((-bid, best))  # by column, highest bid first
            ranked = best[order]
            win = order[np.r_[True, ranked[1:] != ranked[:-1]]]
            won = best[win]
            outbid = owner[won]
            column[outbid[outbid >= 0]] = -1
            owner[won] = bidders[win]
            column[bidders[win]] = won
            prices[won] = bid[win]
            bidders = np.flatnonzero(column < 0)
    return prices.astype(np.float64)


def _lsa(score: np.ndarray) -> np.ndarray:
    """Exact maximum-weight matching by scipy, started from reduced costs.

    Subtracting a price per column and then each row's maximum changes every perfect
    matching's total by the same constant, so the optimum is unchanged; but near-optimal prices
    leave scipy's shortest augmenting paths short. Measured on HuBERT-base FFN correlations
    (3072 x 3072): 1.3-1.8 s from the raw scores, about half that with auction prices included.
    """
    square = score.shape[0] == score.shape[1]
    warm = square and score.shape[0] >= WARM_START_SIZE and np.isfinite(score).all()
    reduced = score - _auction_prices(score) if warm else score
    cost = reduced.max(1, keepdims=True) - reduced
    cost -= cost.min(0, keepdims=True)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty_like(cols)
    perm[rows] = cols
    return perm


def assign(score: torch.Tensor) -> torch.Tensor:
    """Maximum-weight matching; ``perm[i]`` is the column (unit of B) given to row i (of A)."""
    return torch.from_numpy(_lsa(score.double().cpu().numpy())).long()


def _assign_blocks(scores: Sequence[np.ndarray], blocks: int) -> tuple[np.ndarray, list[list]]:
    bs = scores[0].shape[0] // blocks
    pair_score = np.zeros((blocks, blocks))
    inner: dict[tuple[int, int, int], np.ndarray] = {}
    rows = np.arange(bs)
    for s_i, s in enumerate(scores):
        tiles = s.reshape(blocks, bs, blocks, bs).transpose(0, 2, 1, 3)
        for ga in range(blocks):
            for gb in range(blocks):
                perm = _lsa(tiles[ga, gb])
                inner[(s_i, ga, gb)] = perm
                pair_score[ga, gb] += tiles[ga, gb][rows, perm].sum()
    block_perm = _lsa(pair_score)
    return block_perm, [
        [inner[(s_i, ga, int(block_perm[ga]))] for ga in range(blocks)]
        for s_i in range(len(scores))
    ]


def assign_blocks(
    scores: Sequence[torch.Tensor], blocks: int
) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
    """Hierarchical matching under a block constraint shared by several score matrices.

    Every (block of A, block of B) pair is scored by the summed value of its best matching
    inside the block, over all ``scores``; blocks are then assigned, and the inner matchings of
    the chosen pairs kept. Returns the block order and, per score, the inner index per block.
    """
    block_perm, inner = _assign_blocks([s.double().cpu().numpy() for s in scores], blocks)
    return torch.from_numpy(block_perm).long(), [
        [torch.from_numpy(p).long() for p in per_score] for per_score in inner
    ]


def group_score(group: PermGroup, stats: Mapping[str, PointStats]) -> torch.Tensor:
    """The correlation a group is matched on: the mean over its points (Q and K, or the
    residual stream at every layer)."""
    missing = [p for p in group.points if p not in stats]
    if missing:
        raise KeyError(f"calibration statistics lack points {missing} needed by {group.name}")
    return torch.stack([stats[p].corr.double() for p in group.points]).mean(0)


def tied_jobs(spec: PermSpec, scope: Scope) -> list[list[PermGroup]]:
    """The groups in scope as independent problems: a group alone, or the groups whose block
    order is tied (Q/K and V/O of one layer), largest first."""
    jobs: dict[str, list[PermGroup]] = {}
    for g in spec.groups:
        if scope.selects(g):
            jobs.setdefault(g.name if g.blocks == 1 else (g.tie or g.name), []).append(g)
    return sorted(jobs.values(), key=lambda m: -m[0].size)


def solve_tied(members: list[PermGroup], scores: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maximum total score for a group, or for block-tied groups jointly (blocks, then units
    inside blocks; fixed blocks: each block's diagonal tile alone)."""
    first = members[0]
    if first.blocks == 1:
        return {first.name: assign(scores[0])}
    if first.fixed_blocks:
        n = first.block_size
        block_perm = torch.arange(first.blocks)
        inner = [
            [assign(s[b * n : (b + 1) * n, b * n : (b + 1) * n]) for b in range(first.blocks)]
            for s in scores
        ]
    else:
        block_perm, inner = assign_blocks(scores, first.blocks)
    return {
        g.name: compose_blocks(block_perm, per_block, g.block_size)
        for g, per_block in zip(members, inner, strict=True)
    }


def match(
    spec: PermSpec,
    stats: Mapping[str, PointStats],
    scope: Scope,
    workers: int | None = None,
) -> dict[str, torch.Tensor]:
    """One index tensor per group in scope; block-tied groups are matched jointly.

    Groups are independent assignment problems; they run on ``workers`` threads (default:
    one per core).
    """
    # Scores are built here (float64 already, so the workers' conversions are free), so the
    # worker threads run scipy only, with no torch thread pools spinning beside them.
    problems = [
        (members, [group_score(g, stats) for g in members]) for members in tied_jobs(spec, scope)
    ]

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        solved = list(pool.map(lambda problem: solve_tied(*problem), problems))
    found = {k: v for part in solved for k, v in part.items()}
    return {g.name: found[g.name] for g in spec.groups if g.name in found}


@dataclass(frozen=True)
class MatchProblem:
    """What a matcher may look at: the permutation spec, the groups in scope, both encoders'
    weights (B's unpermuted) and the calibration statistics."""

    spec: PermSpec
    scope: Scope
    stats: Mapping[str, PointStats]
    a: Mapping[str, torch.Tensor]
    b: Mapping[str, torch.Tensor]


class Matcher(Protocol):
    """One index tensor per group of ``problem.spec`` in ``problem.scope``: ``perm[i]`` is
    the unit of B that goes to A's unit i (blocks and ties as the spec says)."""

    name: str

    def __call__(self, problem: MatchProblem) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class Exact:
    """Maximum total correlation per group, by exact linear assignment (the paper's matcher;
    block-tied groups hierarchically: blocks, then units inside blocks)."""

    workers: int | None = None  # threads for independent groups; None: one per core
    name = "exact"
    needs_calibration = True

    def __call__(self, problem: MatchProblem) -> dict[str, torch.Tensor]:
        return match(problem.spec, problem.stats, problem.scope, self.workers)
