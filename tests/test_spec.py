import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merging.forward import encode, min_samples
from merging.load import Encoder
from merging.spec import (
    Axis,
    PermGroup,
    PermSpec,
    apply_permutations,
    axis_claims,
    build_spec,
    random_exact_perms,
)
from tests.helpers import random_encoder, tiny_config

# Keys no channel permutation touches: the weight norm's g is over the kernel axis.
INVARIANT = {"encoder.pos_conv_embed.conv.parametrizations.weight.original0"}


def permuted(encoder: Encoder, spec: PermSpec, perms) -> Encoder:
    model = copy.deepcopy(encoder.model)
    model.load_state_dict(apply_permutations(encoder.model.state_dict(), spec, perms))
    return Encoder(model, "permuted", encoder.sample_rate, encoder.normalize)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"feat_extract_norm": "layer", "conv_bias": True},
        {"do_stable_layer_norm": True, "feat_extract_norm": "layer"},
        {"feat_proj_layer_norm": False, "mask_time_prob": 0.0},
        {
            "num_hidden_layers": 3,
            "conv_dim": (8, 12, 16, 16),
            "conv_kernel": (4, 3, 3, 2),
            "conv_stride": (2, 2, 2, 1),
        },
    ],
)
@pytest.mark.parametrize("split_qkv", [False, True])
def test_spec_covers_exactly_the_permutable_keys(overrides, split_qkv):
    config = tiny_config(**overrides)
    state = random_encoder(config, 0).model.state_dict()
    spec = build_spec(config, split_qkv=split_qkv, keys=state.keys())
    assert spec.keys() == set(state) - INVARIANT
    claims = axis_claims(spec)
    twice = {axis: names for axis, names in claims.items() if len(names) > 1}
    assert not twice, f"axes permuted by more than one group: {twice}"
    for group in spec.groups:
        for axis in group.axes:
            size = state[axis.key].shape[axis.dim] * max(axis.conv_groups, 1)
            assert size == group.size, (group.name, axis)


def test_spec_without_keys_names_transformers_layout():
    config = tiny_config()
    state = random_encoder(config, 0).model.state_dict()
    assert build_spec(config).keys() == set(state) - INVARIANT


@st.composite
def small_configs(draw, family: str = "hubert"):
    heads = draw(st.integers(1, 3))
    head_dim = draw(st.integers(2, 5))
    hidden = heads * head_dim
    pos_groups = draw(st.sampled_from([g for g in (1, 2, 3, 4) if hidden % g == 0]))
    n_conv = draw(st.integers(1, 3))
    norm = draw(st.sampled_from(["group", "layer"]))
    return tiny_config(
        family,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_hidden_layers=draw(st.integers(1, 2)),
        intermediate_size=draw(st.integers(3, 12)),
        conv_dim=tuple(draw(st.integers(3, 9)) for _ in range(n_conv)),
        conv_kernel=tuple(draw(st.integers(2, 5)) for _ in range(n_conv)),
        conv_stride=tuple(draw(st.integers(1, 3)) for _ in range(n_conv)),
        conv_bias=draw(st.booleans()),
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer" and draw(st.booleans()),
        num_conv_pos_embeddings=draw(st.integers(2, 6)),
        num_conv_pos_embedding_groups=pos_groups,
        mask_time_prob=draw(st.sampled_from([0.0, 0.05])),
    )


@pytest.mark.parametrize("family", ["hubert", "wav2vec2", "wavlm"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_exact_groups_leave_every_hidden_state_unchanged(family, data, seed):
    config = data.draw(small_configs(family))
    encoder = random_encoder(config, seed)
    spec = encoder.family.build_spec(config, keys=encoder.model.state_dict().keys())
    perms = random_exact_perms(spec, torch.Generator().manual_seed(seed))
    other = permuted(encoder, spec, perms)
    n = min_samples(config) + 60
    wave = torch.randn(2, n, generator=torch.Generator().manual_seed(seed + 1))
    lengths = torch.tensor([n, n - 17])
    ha = encode(encoder, wave, lengths, output_hidden_states=True).hidden_states
    hb = encode(other, wave, lengths, output_hidden_states=True).hidden_states
    for x, y in zip(ha, hb, strict=True):
        # residual-stream states are equal up to the residual permutation itself
        res = perms.get("res", torch.arange(x.shape[-1]))  # WavLM: not permuted
        torch.testing.assert_close(x[..., res], y, atol=1e-4, rtol=1e-4)


def test_all_scope_qkv_reordering_changes_the_function():
    config = tiny_config()
    encoder = random_encoder(config, 3)
    spec = build_spec(config, split_qkv=True, keys=encoder.model.state_dict().keys())
    gen = torch.Generator().manual_seed(0)
    attn = [g.name for g in spec.groups if g.kind == "attn"]
    assert all(not spec[n].exact for n in attn)
    perms = {n: torch.randperm(spec[n].size, generator=gen) for n in attn}
    other = permuted(encoder, spec, perms)
    wave = torch.randn(1, 6000, generator=gen)
    lengths = torch.tensor([6000])
    ha = encode(encoder, wave, lengths).last_hidden_state
    hb = encode(other, wave, lengths).last_hidden_state
    assert (ha - hb).abs().max() > 1e-2


def test_apply_rejects_wrong_sizes_and_split_pos_conv_groups():
    config = tiny_config()
    encoder = random_encoder(config, 0)
    state = encoder.model.state_dict()
    spec = build_spec(config, keys=state.keys())
    with pytest.raises(ValueError, match="expected 48 indices"):
        apply_permutations(state, spec, {"ffn.0": torch.arange(5)})
    # a residual permutation that swaps two channels of different pos-conv groups
    bad = torch.arange(config.hidden_size)
    bad[[0, config.hidden_size - 1]] = bad[[config.hidden_size - 1, 0]]
    with pytest.raises(ValueError, match="splits a positional-conv group"):
        apply_permutations(state, spec, {"res": bad})


def test_apply_names_missing_keys():
    spec = PermSpec((PermGroup("g", "ffn", 2, (Axis("absent.weight", 0),), ("p",)),))
    with pytest.raises(KeyError, match="absent.weight"):
        apply_permutations({}, spec, {"g": torch.tensor([1, 0])})
