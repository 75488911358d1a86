"""Task-vector merges of members that share a base: task arithmetic, TIES, DARE."""

from __future__ import annotations

import pytest
import torch

from merging.taskvectors import dare, task_arithmetic, ties, trim


def shared_base(seed: int = 0):
    """A base B0 and members M1 = B0 + tau1, M2 = B0 + tau2, tau1 and tau2 on disjoint
    entries; an integer buffer rides along."""
    gen = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(6, 5, generator=gen), "b": torch.randn(5, generator=gen)}
    base["steps"] = torch.tensor([7])
    taus = []
    for i in range(2):
        tau = {}
        for key in ("w", "b"):
            mask = (torch.arange(base[key].numel()) % 2 == i).view(base[key].shape)
            tau[key] = torch.randn(base[key].shape, generator=gen) * mask
        taus.append(tau)
    members = {
        f"m{i + 1}": {**{k: base[k] + t[k] for k in t}, "steps": torch.tensor([9])}
        for i, t in enumerate(taus)
    }
    return base, members, taus


@pytest.mark.parametrize(
    "method",
    [
        lambda b, m, w: task_arithmetic(b, m, w),
        lambda b, m, w: ties(b, m, w, density=1.0),
        lambda b, m, w: dare(b, m, w, density=1.0, seed=3),
    ],
    ids=["task_arithmetic", "ties", "dare"],
)
def test_disjoint_task_vectors_add_up_exactly(method):
    base, members, (tau1, tau2) = shared_base()
    merged = method(base, members, {"m1": 1.0, "m2": 1.0})
    for key in ("w", "b"):
        torch.testing.assert_close(merged[key], base[key] + tau1[key] + tau2[key])
    assert torch.equal(merged["steps"], base["steps"])  # integers: the base's


def test_ties_keeps_the_elected_sign():
    base = {"w": torch.zeros(3)}
    members = {
        "m1": {"w": torch.tensor([3.0, -5.0, 2.0])},
        "m2": {"w": torch.tensor([-1.0, 1.0, 2.0])},
        "m3": {"w": torch.tensor([0.0, 1.0, -1.0])},
    }
    weights = dict.fromkeys(members, 1.0)
    merged = ties(base, members, weights, density=1.0)
    # + wins entry 0 (3 - 1), - wins entry 1 (-5 + 1 + 1), + wins entry 2 (2 + 2 - 1):
    # each the mean of the entries that agree with it
    torch.testing.assert_close(merged["w"], torch.tensor([3.0, -5.0, 2.0]))
    summed = ties(base, members, weights, density=1.0, normalize=False)
    torch.testing.assert_close(summed["w"], torch.tensor([3.0, -5.0, 4.0]))


def test_ties_trims_each_task_vector_to_its_largest_entries():
    tau = torch.tensor([0.1, -4.0, 0.5, 3.0, -0.2, 1.0])
    assert torch.equal(trim(tau, 0.5), torch.tensor([0.0, -4.0, 0.0, 3.0, 0.0, 1.0]))
    assert torch.equal(trim(tau, 1.0), tau)
    base = {"w": torch.zeros(6)}
    merged = ties(base, {"m": {"w": tau}}, {"m": 1.0}, density=0.5)
    assert torch.equal(merged["w"], trim(tau, 0.5))


def test_dare_drops_and_rescales_reproducibly():
    gen = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(200, 100, generator=gen)}
    tau = torch.randn(200, 100, generator=gen)
    members = {"m": {"w": base["w"] + tau}}
    one = dare(base, members, {"m": 1.0}, density=0.3, seed=5)
    again = dare(base, members, {"m": 1.0}, density=0.3, seed=5)
    other = dare(base, members, {"m": 1.0}, density=0.3, seed=6)
    assert torch.equal(one["w"], again["w"]) and not torch.equal(one["w"], other["w"])
    delta = one["w"] - base["w"]
    kept = delta != 0
    assert abs(kept.float().mean().item() - 0.3) < 0.02  # about density of them survive
    torch.testing.assert_close(delta[kept], (members["m"]["w"] - base["w"])[kept] / 0.3)


def test_weights_and_density_are_checked():
    base, members, _ = shared_base()
    with pytest.raises(ValueError, match="one weight per member"):
        task_arithmetic(base, members, {"m1": 1.0})
    with pytest.raises(ValueError, match="density"):
        ties(base, members, {"m1": 1.0, "m2": 1.0}, density=0.0)
    members["m2"]["w"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="member 'm2'"):
        dare(base, members, {"m1": 1.0, "m2": 1.0}, density=1.0)
