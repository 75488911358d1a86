"""Nothing silently wrong: caches that see labels, and damaged cache entries that heal."""

from __future__ import annotations

import logging
import random

import pytest
from omegaconf import OmegaConf

from eval.data import Example, labelled_folder
from eval.evaluate import probe_task
from eval.tasks import Task
from tests.test_eval import LOGMEL, make_two_class_folder

CFG = OmegaConf.create(
    {
        "batch_size": 8,
        "probe": {"hidden": 0, "lrs": [0.01], "epochs": 8, "batch_size": 32, "seeds": [0]},
    }
)
TASK = Task("t", "t", "music", "utterance", "accuracy", None, 1.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_two_class_folder(tmp_path_factory.mktemp("faults") / "task", per_class=15)


def test_relabelling_a_dataset_reruns_its_probe_and_only_it(folder, tmp_path):
    rows = labelled_folder(folder)
    first = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    assert first["value"] > 90
    again = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    assert again["probe_cached"]
    labels = [e.label for e in rows]
    random.Random(0).shuffle(labels)  # the same files, other labels: the old 100% is wrong
    shuffled = [Example(e.path, y, e.split) for e, y in zip(rows, labels, strict=True)]
    out = probe_task(LOGMEL, TASK, shuffled, CFG, tmp_path, progress=False)
    assert not out["probe_cached"] and out["features_cached"]  # features do not see labels
    assert out["value"] < first["value"]
    swap = {"train": "test", "test": "train", "valid": "valid"}
    resplit = [Example(e.path, e.label, swap[e.split]) for e in rows]
    assert not probe_task(LOGMEL, TASK, resplit, CFG, tmp_path, progress=False)["probe_cached"]


@pytest.mark.parametrize("kind", ["probes", "features"])
def test_a_damaged_cache_entry_is_named_removed_and_recomputed(folder, tmp_path, caplog, kind):
    rows = labelled_folder(folder)
    first = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    (entry,) = (tmp_path / kind).iterdir()
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # truncated
    if kind == "features":  # the probe result must not hide the damaged features
        for p in (tmp_path / "probes").iterdir():
            p.unlink()
    with caplog.at_level(logging.WARNING):
        again = probe_task(LOGMEL, TASK, rows, CFG, tmp_path, progress=False)
    assert f"damaged cache entry {entry}" in caplog.text
    assert not again[f"{'probe' if kind == 'probes' else 'features'}_cached"]
    assert again["value"] == first["value"] and again["test"] == first["test"]
    assert entry.is_file()  # written anew
