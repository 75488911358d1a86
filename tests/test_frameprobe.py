"""Utterance probes over frame features with a learned interface, on one or two upstreams."""

from __future__ import annotations

import pytest
import torch

from eval.ctc import frame_features
from eval.data import labelled_folder
from eval.features import EncoderUpstream
from eval.frameprobe import Clips, FrameParts, FrameProbeSettings, fit_frame_probes, logits
from tests.helpers import random_encoder, tiny_config
from tests.test_eval import make_two_class_folder


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Two random encoders' frame features of a hum-vs-hiss task."""
    root = tmp_path_factory.mktemp("frameprobe")
    rows = labelled_folder(make_two_class_folder(root / "task", per_class=40))
    return [
        frame_features(
            EncoderUpstream(random_encoder(tiny_config(), s)), rows, root / "cache", progress=False
        )
        for s in (0, 1)
    ]


@pytest.mark.parametrize("name", ["weighted_sum", "hconv", "chconv"])
def test_each_interface_learns_an_easy_task_on_one_and_on_two_upstreams(frames, name):
    settings = FrameProbeSettings(interface=name, lrs=(1e-2,), epochs=12)
    for parts in (frames[:1], frames):
        (result,) = fit_frame_probes(FrameParts.join(parts), settings)
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
    alone = torch.cat(
        [logits(model, Clips([store.select([i])], [(mean, std)], "hconv", [0])) for i in idx[:10]]
    )
    torch.testing.assert_close(logits(model, data, batch_size=16)[:10], alone)


def test_early_stopping_ends_with_the_best_validation_epochs_weights(frames):
    """With validation batches the probe stops ``patience`` epochs after its best validation
    accuracy and ends with that epoch's weights; layer dropout acts in training only."""
    from lightning.pytorch.callbacks import EarlyStopping
    from torch.utils.data import DataLoader

    from eval.frameprobe import FrameProbe, collate, predict
    from eval.interface import build
    from eval.probe import fit_quietly

    store = frames[0].frames
    labels = [int(e.label == frames[0].examples[0].label) for e in frames[0].examples]
    moments = (torch.zeros(store.layers, store.dim), torch.ones(store.layers, store.dim))
    train, valid = list(range(0, len(labels), 2)), list(range(1, len(labels), 2))
    data = {
        n: Clips([store.select(idx)], [moments], "hconv", [labels[i] for i in idx])
        for n, idx in (("train", train), ("valid", valid))
    }
    torch.manual_seed(0)
    model = FrameProbe(build("hconv", [store.layers], [store.dim]), 2, 0, 0.05, 0.0, 0.3)
    fit_quietly(
        model,
        DataLoader(data["train"], 8, shuffle=True, collate_fn=collate),
        50,
        valid=DataLoader(data["valid"], 8, collate_fn=collate),
        callbacks=[EarlyStopping("valid_accuracy", patience=2, mode="max")],
    )
    best, epoch, _ = model.best
    assert model.trainer.current_epoch <= epoch + 3 < 50  # stopped two epochs after the best
    held = torch.tensor(data["valid"].labels)
    assert float((predict(model, data["valid"]) == held).double().mean()) == best
    x, frames_, _ = collate([data["valid"][i] for i in range(4)])
    model.train()
    assert not torch.equal(model(x, frames_), model(x, frames_))  # layers dropped at random
    model.eval()
    torch.testing.assert_close(model(x, frames_), model(x, frames_))


def test_probing_through_a_learned_interface_reads_each_parts_frames(tmp_path):
    """``eval.interface``: hconv/chconv probes train on frames (a fusion on each part's own
    store), are cached under keys of their own; the weighted sum stays the pooled probe, keyed
    as without the setting."""
    from omegaconf import OmegaConf

    from eval.features import LayerFusion
    from eval.probing import probe_task
    from eval.tasks import Task

    rows = labelled_folder(make_two_class_folder(tmp_path / "task", per_class=20))
    task = Task("hum", "Hum", "music", "utterance", "accuracy", None, 1.0)
    a, b = (EncoderUpstream(random_encoder(tiny_config(), s), f"u{s}") for s in (0, 1))
    probe = {"hidden": 0, "lrs": [0.01], "epochs": 8, "batch_size": 16, "seeds": [0, 1]}

    def cfg(name: str | None):
        chosen = {"interface": {"name": name, "weight_decay": 0.0}} if name else {}
        return OmegaConf.create({"batch_size": 8, "workers": 0, "probe": probe, **chosen})

    cache = tmp_path / "cache"
    hconv = probe_task(a, task, rows, cfg("hconv"), cache, progress=False)
    assert hconv["value"] >= 80 and len(hconv["test"]["predictions"]) == 2
    assert hconv["layer_weights"] == []  # no weights to show: the interface is a conv stack
    assert probe_task(a, task, rows, cfg("hconv"), cache, progress=False)["probe_cached"]
    pooled = probe_task(a, task, rows, cfg("weighted_sum"), cache, progress=False)
    assert not pooled["probe_cached"] and len(pooled["layer_weights"]) == 3
    assert probe_task(a, task, rows, cfg(None), cache, progress=False)["probe_cached"]
    fused = probe_task(LayerFusion((a, b)), task, rows, cfg("chconv"), cache, progress=False)
    assert fused["value"] >= 80 and fused["test"]["ids"] == hconv["test"]["ids"]
    stores = sorted(p.name for p in (cache / "features").iterdir() if "-frames-" in p.name)
    assert len(stores) == 2  # one per upstream: the fusion reuses a's and adds b's
    with pytest.raises(ValueError, match="eval.interface.name='conv'"):
        probe_task(a, task, rows, cfg("conv"), cache, progress=False)


def test_kfold_through_an_interface_holds_out_each_fold(frames):
    import dataclasses

    from eval.data import Example
    from eval.probe import fit_kfold

    parts = FrameParts.join(frames[:1])
    folded = dataclasses.replace(
        parts,
        examples=[Example(e.path, e.label, f"fold{i % 3}") for i, e in enumerate(parts.examples)],
    )
    settings = FrameProbeSettings("hconv", (1e-2,), epochs=6)
    (result,) = fit_kfold(folded, (0,), fit_frame_probes, settings=settings)
    assert set(result["folds"]) == {"fold0", "fold1", "fold2"}
    assert len(result["predictions"]) == len(parts.examples) and result["mean"] >= 0.8


def test_a_job_with_a_learned_interface_scores_every_row_through_it(tmp_path):
    """run.py with eval.interface.name=hconv: the merged encoder, each member and the fusion
    are probed through HConv; FBANK (one layer) keeps the pooled probe; the table says so."""
    import json

    from report.table import build
    from tests.helpers import run_py
    from tests.test_pool import shared_base_job, write_shared_base

    write_shared_base(tmp_path)
    task = make_two_class_folder(tmp_path / "task", per_class=12)
    out = tmp_path / "sweep" / "job"
    done = run_py(
        *shared_base_job(tmp_path, out, "merge=task_arithmetic"),
        "eval=folder",
        f"eval.root={task}",
        "eval.probe.epochs=2",
        "eval.probe.seeds=[0]",
        "eval.interface.name=hconv",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    evaluation = json.loads((out / "results.json").read_text())["evaluation"]
    assert set(evaluation["references"]) == {"m1", "m2", "base", "fbank", "fusion"}
    (name,) = evaluation["tasks"]
    assert evaluation["tasks"][name]["layer_weights"] == []  # through HConv, not a weighted sum
    features = sorted(p.name for p in (tmp_path / "cache" / "features").iterdir())
    assert sum("-frames-" in f for f in features) == 4  # merged, m1, m2, base: frames each
    assert (
        "m1 + m2 layer fusion by hconv (2x compute)" in build(tmp_path / "sweep")["md"].read_text()
    )


def test_a_validation_only_job_scores_validation_and_reads_no_test_clip(tmp_path):
    """eval.test=false (what a search runs): validation scores, no test scores, no per-clip
    test outcomes, and the features hold the training and validation clips only."""
    import json

    from eval.data import labelled_folder
    from tests.helpers import run_py
    from tests.test_pool import shared_base_job, write_shared_base

    write_shared_base(tmp_path)
    task = make_two_class_folder(tmp_path / "task", per_class=12)
    out = tmp_path / "job"
    done = run_py(
        *shared_base_job(tmp_path, out, "merge=task_arithmetic"),
        "eval=folder", f"eval.root={task}", "eval.probe.epochs=2", "eval.test=false",
        "optimized_metric=validation.speech",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    evaluation = json.loads((out / "results.json").read_text())["evaluation"]
    assert evaluation["predictions"] == {} and not evaluation.get("scores")
    assert evaluation["validation"]["scores"]["speech"] is not None
    (name,) = evaluation["tasks"]
    readable = [e for e in labelled_folder(task) if e.split != "test"]
    assert evaluation["tasks"][name]["clips"] == len(readable) - 1  # less the corrupt file
    assert evaluation["tasks"][name]["value"] is None
    refused = run_py(
        *shared_base_job(tmp_path, tmp_path / "refused", "merge=task_arithmetic"),
        "eval=folder", f"eval.root={task}", "eval.test=false", "optimized_metric=avg",
    )  # fmt: skip
    assert refused.returncode != 0 and "optimize validation.avg" in refused.stdout + refused.stderr
