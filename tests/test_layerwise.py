"""Layer-wise probing: the conv stack seen as an upstream must pool each clip on its own."""

import dataclasses

import pytest
import torch

from demo.layerwise import ConvStackUpstream
from merging.forward import pad_batch
from tests.helpers import random_encoder, tiny_config


@pytest.mark.parametrize("normalize", [False, True])
def test_conv_stack_statistics_ignore_padding_and_follow_the_stack(normalize):
    enc = dataclasses.replace(random_encoder(tiny_config(), seed=0), normalize=normalize)
    gen = torch.Generator().manual_seed(0)
    waves = [torch.randn(n, generator=gen) for n in (4000, 2500, 1200)]
    up = ConvStackUpstream(enc)
    batch, lengths = pad_batch(waves)
    layers, frames = up.layers(batch, lengths)
    assert len(layers) == len(enc.config.conv_dim) and frames.tolist() == [1, 1, 1]
    assert all(x.shape == (3, 1, 2 * 16) for x in layers)
    for i, w in enumerate(waves):
        alone, _ = up.layers(w[None], torch.tensor([w.numel()]))
        for x, y in zip(layers, alone, strict=True):
            torch.testing.assert_close(x[i], y[0])
        x = (w - w.mean()) / torch.sqrt(w.var(unbiased=False) + 1e-7) if normalize else w
        out = enc.model.feature_extractor(x[None])[0]  # (channels, frames): the last layer
        torch.testing.assert_close(alone[-1][0, 0], torch.cat([out.mean(1), out.square().mean(1)]))
