"""Audio streamed from disk: the same batches and features as decoding everything first, in
memory that does not grow with the number of clips."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from eval.data import Example, labelled_folder
from eval.features import pooled_features
from merging.audio import read_audio, read_usable
from merging.forward import frame_mask, pad_batch
from merging.loader import length_batches, plan, planned_samples, stream
from tests.test_eval import LOGMEL, make_two_class_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Mixed formats and rates, a corrupt file and one too short: all known from headers."""
    root = make_two_class_folder(tmp_path_factory.mktemp("loader") / "task", per_class=14)
    sf.write(root / "hiss" / "short.wav", np.full(100, 0.1, dtype=np.float32), 16000)
    return root


def test_planned_lengths_are_the_decoded_lengths(folder):
    for path in sorted(folder.rglob("*.*")):
        for rate, limit in ((16000, None), (16000, 0.5), (24000, 0.3)):
            wave = read_audio(path, rate, limit)
            planned = planned_samples(str(path), rate, limit)
            if planned is None:  # an unreadable header: read_audio cannot read it either
                assert wave is None, path
            elif wave is not None:
                assert planned == wave.size, (path, rate, limit)


def in_memory_pooled(upstream, rows, max_seconds, batch_size):
    """The pooled features as computed before streaming: every clip decoded first."""
    waves, index = [], []
    for i, e in enumerate(rows):
        w = read_audio(e.path, upstream.sample_rate, max_seconds)
        if w is not None and w.size >= upstream.min_samples:
            waves.append(torch.from_numpy(w))
            index.append(i)
    pooled = [None] * len(waves)
    for batch in length_batches([w.numel() for w in waves], batch_size):
        layers, frames = upstream.layers(*pad_batch([waves[k] for k in batch]))
        mask = frame_mask(frames, layers[0].shape[1])[:, :, None].float()
        means = torch.stack([(h * mask).sum(1) / mask.sum(1) for h in layers], dim=1)
        for j, k in enumerate(batch):
            pooled[k] = means[j].float()
    return torch.stack(pooled), index


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_features_equal_decoding_everything_first(folder, workers):
    rows = labelled_folder(folder)
    ref, index = in_memory_pooled(LOGMEL, rows, 1.0, 5)
    got = pooled_features(LOGMEL, rows, None, 1.0, 5, progress=False, workers=workers)
    assert torch.equal(got.features, ref)  # bit for bit: the same batches
    assert got.examples == [rows[i] for i in index]
    assert {p.split("/")[-1] for p in got.skipped} == {"corrupt.wav", "short.wav"}


def test_a_silent_file_found_while_decoding_leaves_its_batch(folder, tmp_path):
    """Silence shows only once decoded: the clip leaves its batch (whose padding may then
    differ from decoding everything first, by float rounding) and is skipped by name."""
    import shutil

    folder = shutil.copytree(folder, tmp_path / "task")
    sf.write(folder / "hum" / "silent.wav", np.zeros(8000, dtype=np.float32), 16000)
    rows = labelled_folder(folder)
    got = pooled_features(LOGMEL, rows, None, 1.0, 5, progress=False, workers=0)
    assert str(folder / "hum" / "silent.wav") in got.skipped
    paths = [e.path for e in rows]
    planned = plan(paths, 16000, 1.0, 400)
    silent = paths.index(str(folder / "hum" / "silent.wav"))
    assert silent in planned.index  # its header is fine: only decoding finds it silent
    kept = [paths[i] for i in planned.index]
    seen = [
        (k, w is None)
        for batch in stream(kept, length_batches(planned.samples, 4), 16000, 1.0, 400, 0)
        for k, w in batch
    ]
    assert sorted(k for k, _ in seen) == list(range(len(kept)))
    assert [kept[k] for k, none in seen if none] == [paths[silent]]


def test_extraction_memory_does_not_grow_with_the_number_of_clips(tmp_path):
    """Decoded audio is the part that grew with a task (about 250 MB per hour before any
    feature): traced peak memory at 4x the clips stays within 20% (and 1 MB) of 1x."""
    t = np.arange(32000) / 16000  # 2 s clips
    rows = []
    for i in range(160):
        path = tmp_path / f"c{i:03d}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * (100 + i) * t)).astype(np.float32), 16000)
        rows.append(Example(str(path), "x" if i % 2 else "y", "train"))

    def peak(n: int) -> int:
        tracemalloc.start()
        pooled_features(LOGMEL, rows[:n], None, 2.0, 8, progress=False, workers=0)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(40), peak(160)
    clips_4x = 120 * 32000 * 4  # what 120 more decoded clips would hold: 15 MB
    assert large < 1.2 * small + 2**20, (small, large, clips_4x)


def test_a_file_that_kills_its_decoder_is_named(folder, monkeypatch):
    import os

    from merging import loader
    from merging.audio import AudioError

    victim = str(next((folder / "hiss").glob("s003*")))

    def crashing(path, rate, max_seconds, least):  # what a crash inside libsndfile does
        if path == victim:
            os._exit(11)
        return read_usable(path, rate, max_seconds, least)

    monkeypatch.setattr(loader, "read_usable", crashing)  # the forked workers inherit it
    rows = labelled_folder(folder)
    with pytest.raises(AudioError, match="a process decoding audio died") as err:
        pooled_features(LOGMEL, rows, None, 1.0, 2, progress=False, workers=2)
    assert victim in str(err.value)
