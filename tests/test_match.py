import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from merging import match
from merging.match import Scope, assign, assign_blocks
from merging.spec import compose_blocks


def test_assign_recovers_a_hidden_permutation_with_noise():
    gen = torch.Generator().manual_seed(0)
    truth = torch.randperm(40, generator=gen)
    score = 0.2 * torch.randn(40, 40, generator=gen)
    score[torch.arange(40), truth] += 1.0
    assert torch.equal(assign(score), truth)


def test_assign_handles_constant_zero_rows():
    score = torch.zeros(5, 5)
    perm = assign(score)
    assert sorted(perm.tolist()) == list(range(5))


def _scores(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.uniform(-1, 1, (n, n))
    if kind == "low_rank":  # correlation-like: shared structure plus noise
        return np.tanh(rng.normal(size=(n, 8)) @ rng.normal(size=(8, n)) / 4) + 0.1 * rng.normal(
            size=(n, n)
        )
    if kind == "offset":  # large common offset: float32 prices lose resolution
        return 1e4 + rng.uniform(-1, 1, (n, n))
    s = rng.uniform(-1, 1, (n, n))  # "ties": constant units score zero with everything
    s[: n // 4] = 0.0
    s[:, -n // 5 :] = 0.0
    return s


@pytest.mark.parametrize("kind", ["noise", "low_rank", "offset", "ties"])
def test_warm_started_assignment_is_scipys_optimum(kind, monkeypatch):
    n = match.WARM_START_SIZE + 44
    score = _scores(kind, n, seed=len(kind))
    calls = []
    prices = match._auction_prices
    monkeypatch.setattr(match, "_auction_prices", lambda s: calls.append(1) or prices(s))
    perm = assign(torch.from_numpy(score)).numpy()
    assert calls, "the warm start was not used"
    assert sorted(perm) == list(range(n))
    rows, cols = linear_sum_assignment(score, maximize=True)
    best = score[rows, cols].sum()
    assert score[np.arange(n), perm].sum() == pytest.approx(best, rel=0, abs=1e-9)
    if kind != "ties":  # the optimum is unique
        assert np.array_equal(perm, cols)


def test_auction_prices_make_most_rows_best_off_at_their_optimal_column():
    """The prices are near-dual: after subtracting them, nearly every row's optimal column is
    (within the last epsilon) its best one, which is what leaves the exact solver little to do."""
    score = _scores("noise", 512, seed=3)
    _, cols = linear_sum_assignment(score, maximize=True)
    reduced = score - match._auction_prices(score)
    slack = reduced.max(1) - reduced[np.arange(512), cols]
    plain = score.max(1) - score[np.arange(512), cols]
    assert np.median(slack) < 0.01 * np.median(plain)


def test_block_assignment_keeps_blocks_whole_and_recovers_truth():
    gen = torch.Generator().manual_seed(1)
    blocks, bs = 4, 6
    block_truth = torch.randperm(blocks, generator=gen)
    inner_q = [torch.randperm(bs, generator=gen) for _ in range(blocks)]
    inner_v = [torch.randperm(bs, generator=gen) for _ in range(blocks)]
    scores = []
    for inner in (inner_q, inner_v):
        truth = compose_blocks(block_truth, inner, bs)
        s = 0.1 * torch.randn(blocks * bs, blocks * bs, generator=gen)
        s[torch.arange(blocks * bs), truth] += 1.0
        scores.append(s)
    block_perm, inners = assign_blocks(scores, blocks)
    assert torch.equal(block_perm, block_truth)
    assert all(torch.equal(x, y) for x, y in zip(inners[0], inner_q, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(inners[1], inner_v, strict=True))


def test_block_assignment_prefers_blocks_over_greedy_units():
    # unit-level matching would split blocks; the hierarchical result never does
    gen = torch.Generator().manual_seed(2)
    blocks, bs = 3, 4
    s = torch.rand(blocks * bs, blocks * bs, generator=gen)
    block_perm, (inner,) = assign_blocks([s], blocks)
    full = compose_blocks(block_perm, inner, bs)
    assert sorted(full.tolist()) == list(range(blocks * bs))
    for t in range(blocks):
        assert len(set((full[t * bs : (t + 1) * bs] // bs).tolist())) == 1


def test_scope_rejects_unknown_attention_mode():
    import pytest

    with pytest.raises(ValueError, match="permute.attn"):
        Scope(attn="qkv")
