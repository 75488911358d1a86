"""Passes spread over devices (``merging.ranks``): two CPU processes over gloo give one
process's features, frame stores and calibration statistics, up to the order of float sums."""

from __future__ import annotations

import os
import pickle
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile as sf
import torch

from eval.ctc import frame_features
from eval.data import labelled_folder
from eval.features import EncoderUpstream, pooled_features
from merging.audio import Clip, synthetic_clips
from merging.calibrate import CrossMoments, calibrate
from merging.forward import encode
from merging.ranks import check_strategy, several_devices
from tests.helpers import random_encoder, tiny_config
from tests.test_eval import make_two_class_folder

TWO_RANKS = {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn", "precision": "32-true"}


@contextmanager
def threads_of_a_rank(world: int = 2):
    """Each rank computes with its share of the cores; one process computing with as many
    gives the same float32 forward passes, so what is left to compare is the pass itself."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = make_two_class_folder(tmp_path_factory.mktemp("ranks") / "task", per_class=9)
    sf.write(root / "hum" / "silent.wav", np.zeros(8000, dtype=np.float32), 16000)  # found late
    return root


def test_rebased_moments_of_two_shares_add_up_to_one_pass():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, 4, generator=gen) * 2 + 50  # means far from the shares' references
    b = torch.randn(300, 3, generator=gen) - 20
    b[:, 0] += 0.7 * a[:, 1]
    whole, first, second = CrossMoments(4, 3), CrossMoments(4, 3), CrossMoments(4, 3)
    whole.update(a[None], b[None], [300])
    first.update(a[None, :120], b[None, :120], [120])
    second.update(a[None, 120:], b[None, 120:], [180])
    assert not torch.equal(first.ref_a, second.ref_a)
    second.rebase(first.ref_a, first.ref_b)
    first._flush()
    for name in ("sum_a", "sum_b", "sq_a", "sq_b", "cross"):
        getattr(first, name).add_(getattr(second, name))
    first.n += second.n
    got, want = first.finalize(), whole.finalize()
    for field in ("corr", "mean_a", "std_a", "mean_b", "std_b"):
        torch.testing.assert_close(getattr(got, field), getattr(want, field), atol=1e-6, rtol=0)


def test_a_strategy_that_would_relaunch_the_job_is_refused():
    assert not several_devices({"devices": 1}) and not several_devices({"devices": "1"})
    assert several_devices({"devices": -1}) and several_devices({"devices": [0, 1]})
    check_strategy({"devices": 1, "strategy": "auto"})  # one device: anything goes
    check_strategy({"devices": 4, "strategy": "ddp_spawn"})
    for strategy in ("ddp", "auto"):
        with pytest.raises(ValueError, match="trainer.strategy=ddp_spawn"):
            check_strategy({"devices": 2, "strategy": strategy})


def test_an_encoder_pickles_with_its_weights():
    encoder = random_encoder(tiny_config(), 0)
    copy = pickle.loads(pickle.dumps(encoder))
    wave, lengths = torch.randn(2, 4000), torch.tensor([4000, 3100])
    with torch.no_grad():
        want = encode(encoder, wave, lengths).last_hidden_state
        got = encode(copy, wave, lengths).last_hidden_state
    assert torch.equal(got, want) and copy.source == encoder.source
    assert not copy.model.training and copy.family == encoder.family


def test_two_cpu_ranks_extract_the_features_of_one_process(folder):
    rows = labelled_folder(folder)
    upstream = EncoderUpstream(random_encoder(tiny_config(), 0))
    with threads_of_a_rank():
        one = pooled_features(upstream, rows, None, 1.0, 3, progress=False, workers=0)
    two = pooled_features(
        upstream, rows, None, 1.0, 3, progress=False, workers=0, trainer=TWO_RANKS
    )
    assert two.examples == one.examples  # gathered in example order
    assert two.skipped == one.skipped
    assert {p.split("/")[-1] for p in two.skipped} == {"corrupt.wav", "silent.wav"}
    assert (two.features - one.features).abs().max() <= 1e-5


def test_two_cpu_ranks_write_one_frame_store(folder, tmp_path):
    rows = labelled_folder(folder)
    upstream = EncoderUpstream(random_encoder(tiny_config(), 1))
    with threads_of_a_rank():
        one = frame_features(upstream, rows, None, 1.0, 3, progress=False, workers=0)
    fork = {**TWO_RANKS, "strategy": "ddp_fork"}
    two = frame_features(upstream, rows, tmp_path, 1.0, 3, False, 0, fork)
    assert two.examples == one.examples and two.skipped == one.skipped
    assert len({s.split("-")[0] for s in two.frames.shards}) == 2  # each rank wrote shards
    for got, want in zip(two.frames, one.frames, strict=True):
        assert got.shape == want.shape
        assert (got.float() - want.float()).abs().max() <= 1e-5
    cached = frame_features(upstream, rows, tmp_path, 1.0, 3, False, 0, fork)
    assert cached.cached and cached.examples == one.examples


def test_two_cpu_ranks_give_the_calibration_statistics_of_one_process():
    a, b = random_encoder(tiny_config(), 0), random_encoder(tiny_config(), 1)
    base = synthetic_clips(7, 16000, 0.6, 0)
    clips = [Clip(c.name, c.wave[: 4000 + 1100 * i]) for i, c in enumerate(base)]
    with threads_of_a_rank():
        one = calibrate(a, b, clips, batch_size=2, progress=False)
    two = calibrate(a, b, clips, batch_size=2, progress=False, trainer=TWO_RANKS)
    assert set(two) == set(one)
    for name, want in one.items():
        assert two[name].n == want.n
        for field in ("corr", "mean_a", "std_a", "mean_b", "std_b"):
            assert (getattr(two[name], field) - getattr(want, field)).abs().max() <= 1e-5
