"""Utterance probes over frame features with a learned interface, on one or two upstreams."""

from __future__ import annotations

import pytest
import torch

from eval.ctc import frame_features
from eval.data import labelled_folder
from eval.features import EncoderUpstream
from eval.frameprobe import Clips, FrameProbeSettings, fit_frame_probes, logits
from tests.helpers import random_encoder, tiny_config
from tests.test_eval import make_two_class_folder


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Two random encoders' frame features of a hum-vs-hiss task."""
    root = tmp_path_factory.mktemp("frameprobe")
    rows = labelled_folder(make_two_class_folder(root / "task", per_class=40))
    return [
        frame_features(EncoderUpstream(random_encoder(tiny_config(), s)), rows, root / "cache",
                       progress=False)  # fmt: skip
        for s in (0, 1)
    ]


@pytest.mark.parametrize("name", ["weighted_sum", "hconv", "chconv"])
def test_each_interface_learns_an_easy_task_on_one_and_on_two_upstreams(frames, name):
    settings = FrameProbeSettings(interface=name, lrs=(1e-2,), epochs=12)
    for parts in (frames[:1], frames):
        (result,) = fit_frame_probes(parts, settings)
        assert result.test_accuracy >= 0.8, (name, len(parts), result.test_accuracy)
        assert len(result.test_paths) == len(result.test_predictions) > 0


def test_a_clips_prediction_does_not_depend_on_its_batch(frames):
    from eval.frameprobe import FrameProbe
    from eval.interface import build

    torch.manual_seed(0)
    store = frames[0].frames
    model = FrameProbe(build("hconv", [store.layers], [store.dim]), 2, 0, 1e-3, 0.0)
    idx = list(range(len(store)))
    mean, std = torch.zeros(store.layers, store.dim), torch.ones(store.layers, store.dim)
    data = Clips([store], [(mean, std)], "hconv", [0] * len(idx))
    lengths = {store[i].shape[1] for i in idx}
    assert len(lengths) > 1  # clips of several lengths: batches are padded
    alone = torch.cat([logits(model, Clips([store.select([i])], [(mean, std)], "hconv", [0]))
                       for i in idx[:10]])  # fmt: skip
    torch.testing.assert_close(logits(model, data, batch_size=16)[:10], alone)
