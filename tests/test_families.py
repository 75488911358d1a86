"""Every encoder family: its spec claims each permutable axis once, a permuted copy is
recovered by the command line (that exact groups leave the function unchanged is
tests/test_spec.py's property test, run for every family)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from merging.families import families
from merging.forward import encode, min_samples
from merging.load import EncoderLoadError, check_mergeable, load_encoder
from merging.merge import export
from merging.spec import apply_permutations, axis_claims, compose_blocks, random_exact_perms
from tests.helpers import local_job, random_encoder, run_py, tiny_config
from tests.test_audio import write_mixed_folder

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("hubert", "wav2vec2", "wavlm")
CONFIGS = [{}, {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}]


def hidden(encoder, perms_res=None):
    n = min_samples(encoder.config) + 60
    wave = torch.randn(2, n, generator=torch.Generator().manual_seed(3))
    states = encode(encoder, wave, torch.tensor([n, n - 17]), output_hidden_states=True)
    return states.hidden_states


@pytest.mark.parametrize("overrides", CONFIGS, ids=["post-ln", "pre-ln"])
@pytest.mark.parametrize("name", FAMILIES)
def test_spec_claims_every_permutable_axis_once(name, overrides):
    family = families()[name]
    config = tiny_config(name, **overrides)
    state = random_encoder(config, 0).model.state_dict()
    spec = family.build_spec(config, keys=state.keys())
    assert spec.keys() == set(state) - family.invariant_keys(config, state.keys())
    assert not {axis: g for axis, g in axis_claims(spec).items() if len(g) > 1}
    for group in spec.groups:
        for axis in group.axes:
            assert state[axis.key].shape[axis.dim] * max(axis.conv_groups, 1) == group.size


def test_wavlm_heads_are_not_free_to_move():
    """Why WavLM's heads stay in place: swapping two heads (Q/K and V/O together, as HuBERT
    allows) changes the function, because the position gates read the residual per head."""
    encoder = random_encoder(tiny_config("wavlm"), 0)
    spec = families()["hubert"].build_spec(encoder.config, keys=encoder.model.state_dict().keys())
    heads, size = encoder.config.num_attention_heads, encoder.config.hidden_size // 4
    swap = compose_blocks(torch.tensor([1, 0, 2, 3]), [torch.arange(size)] * heads, size)
    other = copy.deepcopy(encoder)
    perms = {"attn_qk.0": swap, "attn_vo.0": swap}
    other.model.load_state_dict(apply_permutations(encoder.model.state_dict(), spec, perms))
    assert (hidden(encoder)[-1] - hidden(other)[-1]).abs().max() > 1e-2
    assert all(g.fixed_blocks for g in encoder.family.build_spec(encoder.config).groups
               if g.kind == "attn")  # fmt: skip


def test_families_do_not_mix():
    a, b = random_encoder(tiny_config("hubert"), 0), random_encoder(tiny_config("wav2vec2"), 0)
    with pytest.raises(EncoderLoadError, match="different families"):
        check_mergeable(a, b)


@pytest.mark.parametrize(
    "name,scope", [("wav2vec2", "fnn_attn"), ("wav2vec2", "full"), ("wavlm", "fnn_attn")]
)
def test_a_permuted_copy_is_recovered_and_keeps_its_model_type(name, scope, tmp_path):
    a = random_encoder(tiny_config(name), 0)
    spec = a.family.build_spec(a.config, keys=a.model.state_dict().keys())
    drop = set() if scope == "full" else {"res"}
    names = [n for n in spec.names() if n not in drop]
    perms = random_exact_perms(spec, torch.Generator().manual_seed(7), names)
    b = copy.deepcopy(a)
    b.model.load_state_dict(apply_permutations(a.model.state_dict(), spec, perms))
    export(a, tmp_path / "A")
    export(b, tmp_path / "B")
    write_mixed_folder(tmp_path / "calib")
    out = tmp_path / "job"
    done = run_py(*local_job(tmp_path, out, f"permute={scope}", "merge.alpha=0.5", "eval=none"))
    assert done.returncode == 0, done.stderr[-3000:]
    merged = json.loads((out / "merged" / "config.json").read_text())
    assert merged["model_type"] == name
    loaded = load_encoder(out / "merged")
    assert type(loaded.model) is families()[name].model_class
    for x, y in zip(hidden(loaded), hidden(load_encoder(tmp_path / "A")), strict=True):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


def test_wavlm_refuses_to_permute_its_residual_stream(tmp_path):
    from merging.match import Scope
    from merging.merge import spec_for

    encoder = random_encoder(tiny_config("wavlm"), 0)
    with pytest.raises(ValueError, match="not a symmetry of wavlm"):
        spec_for(encoder, Scope(cnn=True, ffn=True, attn="heads", res=True))
