"""ZipIt! (Stoica, Bolya, Bjorner, Ramesh, Hearn and Hoffman, "ZipIt! Merging Models from
Different Tasks without Training", ICLR 2024): merge units within and across the two models.

A permutation pairs every unit of A with one of B. ZipIt! instead pools both models' units at
a layer (2n of them), measures the correlation of every pair of the pool on the calibration
clips (A x A and B x B as well as A x B) and greedily merges the most correlated free pair
until n units are left, so two redundant units of A may become one while two of B are kept
apart. A *merge* matrix M (n x 2n) averages each pair, weighted like the interpolation; an
*unmerge* matrix U (2n x n) hands each merged unit back to both members' consumers. A layer
that produces zipped units and reads zipped inputs becomes ``M [W_A 0; 0 W_B] U``, a layer that
only reads them ``[alpha W_A, (1 - alpha) W_B] U``.

This is a merge method (``merge=zipit``), not a matcher: its result is not a permutation of B.
It zips the conv stack and the FFN hidden units; every other group is aligned by the matcher
(``match``) and interpolated, as with ``merge=linear``. ``parts=[cnn]`` is the hybrid of ZipIt!
for the conv stack and permutation for the transformer; ``layers=k`` zips the FFNs of the first
k transformer layers only (the encoder has one output, so ZipIt!'s partial zipping, which leaves
the later layers unmerged as separate heads, becomes "zip the first k, permute the rest").
Cost: one pass of A and the aligned B over the clips; the pooled correlations cost four times
the A x B products of a calibration pass at the zipped points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from merging.calibrate import CrossMoments, stream
from merging.combine import Linear
from merging.spec import PermGroup

PARTS = {"cnn": "conv", "ffn": "ffn"}  # merge.parts -> the spec's group kinds


def greedy_pairs(corr: torch.Tensor, same_model: bool = True) -> torch.Tensor:
    """ZipIt!'s greedy matching of a pool of 2n units (A's first, then B's): repeatedly merge
    the most correlated pair of free units. Returns (n, 2) pairs, lower index first, sorted.

    Done in rounds: every pair of free units that are each other's best free partner is merged
    at once. Such a pair is picked by the sequential greedy too (nothing greater touches either
    unit), and the round's global maximum is always one, so the result is the greedy matching
    (with ties broken towards lower indices) in a few rounds of argmax instead of a sort of all
    (2n)^2 / 2 pairs. ``same_model=False`` forbids pairs within one model (a greedy
    permutation).
    """
    size = corr.shape[0]
    if corr.shape != (size, size) or size % 2:
        raise ValueError(f"a pool of 2n units needs a square, even correlation, got {corr.shape}")
    score = corr.double().clone()
    score.fill_diagonal_(-torch.inf)
    n = size // 2
    if not same_model:
        score[:n, :n] = -torch.inf
        score[n:, n:] = -torch.inf
    free = torch.arange(size)
    pairs = []
    while free.numel():
        best = score[free][:, free].argmax(1)
        rank = torch.arange(free.numel())
        mutual = best[best] == rank
        first = mutual & (rank < best)
        pairs.append(torch.stack([free[first], free[best[first]]], 1))
        free = free[~mutual]
    found = torch.cat(pairs)
    return found[found[:, 0].argsort()]


def zip_matrices(pairs: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge (n x 2n) and unmerge (2n x n) matrices of pooled units paired by ``pairs``.

    A merged unit is the weighted mean of its two members, A's weighing ``alpha`` and B's
    ``1 - alpha`` (two units of one model: half each); both members' consumers read it.
    """
    n = pairs.shape[0]
    weight = torch.cat([torch.full((n,), alpha), torch.full((n,), 1 - alpha)]).double()
    members = weight[pairs]
    share = members / members.sum(1, keepdim=True).clamp(min=1e-300)
    rows = torch.arange(n)[:, None].expand(-1, 2)
    merge = torch.zeros(n, 2 * n, dtype=torch.float64)
    merge[rows, pairs] = torch.where(members.sum(1, keepdim=True) > 0, share, 0.5)
    unmerge = torch.zeros(2 * n, n, dtype=torch.float64)
    unmerge[pairs, rows] = 1.0
    return merge, unmerge


def _pooled(wa: torch.Tensor, wb: torch.Tensor, dims: set[int]) -> torch.Tensor:
    """A's and B's tensors on the diagonal of a tensor twice as long on ``dims``, zeros off it
    (A's outputs never read B's inputs)."""
    joint = wa.new_zeros([n * 2 if d in dims else n for d, n in enumerate(wa.shape)])
    for tensor, of_b in ((wa, False), (wb, True)):
        block = tuple(
            (slice(n, None) if of_b else slice(0, n)) if d in dims else slice(None)
            for d, n in enumerate(wa.shape)
        )
        joint[block] = tensor
    return joint


def zip_state(
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    groups: Sequence[PermGroup],
    matrices: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    alpha_of: Callable[[str], float],
) -> dict[str, torch.Tensor]:
    """Every parameter one of the zipped ``groups`` touches, rebuilt from A's and B's.

    An axis at dim 0 (a weight's output, a bias, a norm) produces the group's units and is
    merged; one at dim 1 (a weight's input) consumes them and is unmerged. A parameter with no
    producing axis weighs its two models by ``alpha_of(key)``; otherwise the merge does.
    """
    axes: dict[str, list[tuple[int, PermGroup]]] = {}
    for g in groups:
        for axis in g.axes:
            if axis.conv_groups or axis.dim not in (0, 1):
                raise ValueError(f"{g.name}: ZipIt! cannot zip {axis.key} along dim {axis.dim}")
            axes.setdefault(axis.key, []).append((axis.dim, g))
    out = {}
    for key, zipped in axes.items():
        wa, wb = a[key].double(), b[key].double()
        if all(dim == 1 for dim, _ in zipped):
            w = alpha_of(key)
            wa, wb = w * wa, (1 - w) * wb
        joint = _pooled(wa, wb, {dim for dim, _ in zipped})
        for dim, g in zipped:
            merge, unmerge = matrices[g.name]
            mix = (merge if dim == 0 else unmerge.T).to(joint.device)
            joint = torch.tensordot(mix, joint, dims=([1], [dim])).movedim(0, dim)
        out[key] = joint.to(a[key].dtype)
    return out


@dataclass(frozen=True)
class ZipIt(Linear):
    """ZipIt! on the conv stack and the FFN units (``parts``, ``layers``), the matcher's
    permutation and ``Linear``'s interpolation everywhere else (``alpha``: as ``Linear``)."""

    parts: Sequence[str] = ("cnn", "ffn")
    layers: int | None = None  # zip the FFNs of the first k transformer layers; None: all
    same_model: bool = True  # allow two units of one model to merge (ZipIt!); False: only A x B
    batch_size: int = 8
    max_frame_rate: float | None = 400.0
    name = "zipit"
    pairs_only = True  # refines A and the aligned B
    needs_clips = True

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.parts) - set(PARTS)
        if unknown or not self.parts:
            raise ValueError(f"merge.parts: one or more of {sorted(PARTS)}, got {list(self.parts)}")
        if self.layers is not None and (isinstance(self.layers, bool) or self.layers < 0):
            raise ValueError(f"merge.layers must be a number of layers >= 0, got {self.layers!r}")

    def zipped_groups(self, encoder) -> list[PermGroup]:
        spec = encoder.family.build_spec(encoder.config, keys=encoder.model.state_dict().keys())
        kinds = {PARTS[p] for p in self.parts}
        limit = self.layers if self.layers is not None else encoder.config.num_hidden_layers
        return [
            g
            for g in spec.groups
            if g.kind in kinds and (g.kind != "ffn" or int(g.name.split(".")[1]) < limit)
        ]

    @torch.no_grad()
    def refine(self, merged, a, b, clips) -> dict:
        groups = self.zipped_groups(a)
        wanted = {p for g in groups for p in g.points}
        points = [p for p in a.family.points(a.config) if p.name in wanted]
        moments: dict[str, CrossMoments] = {}

        def pool(name: str, xa: torch.Tensor, xb: torch.Tensor, lengths: Sequence[int]) -> None:
            x = torch.cat([xa, xb], -1)  # both models' units side by side: one pool
            if name not in moments:
                moments[name] = CrossMoments(x.shape[-1], x.shape[-1], x.device)
            moments[name].update(x, x, lengths)

        stream(a, b, points, clips, pool, self.batch_size, False, self.max_frame_rate, "zipping")
        corr = {name: m.finalize().corr for name, m in moments.items()}
        layers = a.config.num_hidden_layers
        matrices, report = {}, []
        for g in groups:
            (point,) = g.points
            pairs = greedy_pairs(corr[point], self.same_model)
            matrices[g.name] = zip_matrices(
                pairs, self.weight(g.axes[0].key, layers, a.family.parts)
            )
            n = g.size
            within = ((pairs[:, 0] < n) == (pairs[:, 1] < n)).float().mean()
            paired = corr[point][pairs[:, 0], pairs[:, 1]].double().mean()
            report.append(
                {"group": g.name, "within_model": float(within), "mean_corr": float(paired)}
            )
        alpha_of = lambda key: self.weight(key, layers, a.family.parts)  # noqa: E731
        zipped = zip_state(a.model.state_dict(), b.model.state_dict(), groups, matrices, alpha_of)
        merged.model.load_state_dict({**merged.model.state_dict(), **zipped})
        return {"groups": report, "passes": 1}


@dataclass(frozen=True)
class ZipItCNN(ZipIt):
    """The hybrid of ZipIt! for the conv stack and the matcher's permutation for the
    transformer (``merge=zipit_cnn``)."""

    parts: Sequence[str] = ("cnn",)
    name = "zipit_cnn"
