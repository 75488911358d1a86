"""Interfaces over layers: HConv's construction, per-frame independence, several upstreams."""

from __future__ import annotations

import pytest
import torch

from eval import interface
from eval.interface import CHConv, HConv, WeightedSum


def hand_count(layers: int, dim: int) -> tuple[list[int], int]:
    """The layer counts left and the parameters, counted by hand from the construction."""
    left, counts = layers, []
    while len(counts) < {5: 1, 13: 2, 25: 2}[layers]:
        left = (left + 2 * 2 - 4 - 1) // 3 + 1
        counts.append(left)
    params = 0
    for i in range(len(counts)):
        out = dim // counts[-1] if i == len(counts) - 1 else dim
        params += dim * out * 5 + out
    return counts, params


@pytest.mark.parametrize("layers", [5, 13, 25])
@pytest.mark.parametrize("dim", [256, 768])
def test_hconv_shapes_and_parameters_follow_the_construction(layers, dim):
    counts, params = hand_count(layers, dim)
    assert interface.conv_layers(layers) == counts
    module = HConv(layers, dim)
    assert sum(p.numel() for p in module.parameters()) == params
    out = module(torch.randn(layers, 2, 7, dim))
    assert out.shape == (2, 7, (dim // counts[-1]) * counts[-1]) == (2, 7, module.out_dim)
    assert (out >= 0).all()  # a ReLU after every convolution


def test_hubert_base_hconv_is_the_papers_size():
    assert interface.conv_layers(13) == [5, 2]
    assert sum(p.numel() for p in HConv(13, 768).parameters()) == 4_424_832  # about 4.4 M
    assert sum(p.numel() for p in WeightedSum(13, 768).parameters()) == 13


@pytest.mark.parametrize("name", interface.INTERFACES)
def test_padding_does_not_change_a_clips_output(name):
    torch.manual_seed(0)
    module = interface.build(name, [5], [16])
    short = torch.randn(5, 1, 4, 16)
    padded = torch.cat([short, torch.zeros(5, 1, 6, 16)], dim=2)
    batch = torch.cat([padded, torch.randn(5, 1, 10, 16)], dim=1)
    alone, together = module(short), module(batch)
    torch.testing.assert_close(together[0, :4], alone[0], rtol=1e-5, atol=1e-6)


def test_upstreams_of_unequal_depth_and_frame_rate_are_matched_as_documented():
    a = torch.randn(13, 2, 50, 8)  # 50 Hz, 13 layers
    ramp = torch.linspace(0, 1, 75).view(1, 1, 75, 1)  # 75 Hz: a ramp over the clip
    b = torch.arange(25.0).view(25, 1, 1, 1) + ramp.expand(25, 2, 75, 8)  # 25 layers
    ma, mb = interface.match([a, b])
    assert torch.equal(ma, a)
    assert mb.shape == (13, 2, 50, 8)
    # 25 -> 13 layers with the end points kept: B's even layers exactly
    torch.testing.assert_close(mb[:, 0, 0, 0], torch.arange(0.0, 25.0, 2.0))
    # 75 -> 50 frames: the ramp sampled at 50 evenly spaced points
    torch.testing.assert_close(mb[0, 0, :, 0], torch.linspace(0, 1, 50), rtol=0, atol=1e-6)
    stacked = interface.stack([a, b])
    assert stacked.shape == (26, 2, 50, 8)
    assert interface.build("hconv", [13, 25], [8, 8])(stacked).shape[:2] == (2, 50)
    side = interface.concatenate([a, torch.randn(25, 2, 75, 4)])
    assert side.shape == (13, 2, 50, 12)
    chconv = interface.build("chconv", [13, 25], [8, 4])
    assert isinstance(chconv, CHConv) and chconv(side).shape == (2, 50, chconv.out_dim)


def test_mismatched_widths_only_fuse_by_chconv():
    with pytest.raises(ValueError, match="only fuse by chconv"):
        interface.build("hconv", [13, 13], [768, 1024])
    with pytest.raises(ValueError, match="use CHConv"):
        interface.stack([torch.randn(3, 1, 4, 8), torch.randn(3, 1, 4, 6)])
    with pytest.raises(ValueError, match="eval.interface='conv'"):
        interface.build("conv", [13], [768])
