import torch

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
