"""Distillation (DistilHuBERT's recipe): the student learns its teachers' layers, saves with
its base for task-vector merges, and a killed run resumes to the same end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from distill.student import distil_loss, student_from, target_layers
from merging.load import load_encoder
from merging.merge import export
from tests.helpers import ROOT, random_encoder, run_py, tiny_config

RATE = 16000


def write_audio(root, n: int = 6, seed: int = 0):
    """``n`` clips of 1 s: chirps over noise."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t = np.arange(RATE) / RATE
    for i in range(n):
        f0, f1 = rng.uniform(100, 2000, 2)
        wave = 0.4 * np.sin(2 * np.pi * (f0 + (f1 - f0) * t / 2) * t) + 0.05 * rng.normal(size=RATE)
        sf.write(root / f"c{i}.wav", wave.astype(np.float32), RATE)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny teachers of 3 layers (the first also the initialisation) and a folder each."""
    root = tmp_path_factory.mktemp("distill")
    export(random_encoder(tiny_config(num_hidden_layers=3), 0), root / "T1")
    export(random_encoder(tiny_config(num_hidden_layers=3), 1), root / "T2")
    write_audio(root / "d1", seed=0)
    write_audio(root / "d2", seed=1)
    return root


def args(world, out, teacher="T1", data="d1", *extra: str) -> list[str]:
    return [
        f"teachers={{t:{{path:{world / teacher},data:[{world / data}]}}}}",
        f"init={world / 'T1'}",
        f"out={out}",
        f"base_out={world / 'base'}",
        "layers=1",
        "heads=3",
        "crop_seconds=0.5",
        "batch_size=4",
        "lr=3e-3",
        "progress=false",
        *extra,
    ]


def distill_py(*argv: str, env: dict | None = None, kill: str | None = None):
    cmd = [sys.executable, "-m", "distill", *argv]
    if kill is not None:
        cmd = [sys.executable, str(ROOT / "tests" / "killed_run.py"), kill, *argv]
        env = {**(env or {}), "KILLED_MODULE": "distill"}
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled", **(env or {})},
    )  # fmt: skip


def test_target_layers_are_evenly_spaced_and_end_at_the_last():
    assert target_layers(12, 3) == [4, 8, 12]
    assert target_layers(4, 2) == [2, 4]
    assert target_layers(3, 3) == [1, 2, 3]
    with pytest.raises(ValueError, match="heads"):
        target_layers(4, 5)


def test_the_student_keeps_the_first_layers_of_its_initialisation():
    init = random_encoder(tiny_config(num_hidden_layers=3), 0)
    student = student_from(init, 2)
    assert student.config.num_hidden_layers == 2 and init.config.num_hidden_layers == 3
    mine, theirs = student.model.state_dict(), init.model.state_dict()
    assert set(mine) == {k for k in theirs if not k.startswith("encoder.layers.2.")}
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    with pytest.raises(ValueError, match="distill.layers"):
        student_from(init, 4)


def test_the_loss_is_distilhuberts():
    x = torch.randn(2, 5, 8)
    loss, cos = distil_loss(x, x)  # identical: no L1, cosine 1
    assert cos.item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(1.0)).item())
    y = torch.randn(2, 5, 8)
    want = (x - y).abs().mean() - 0.5 * torch.nn.functional.logsigmoid(
        torch.nn.functional.cosine_similarity(x, y, dim=-1)
    ).mean()
    assert distil_loss(x, y, 0.5)[0].item() == pytest.approx(want.item())


def test_distillation_learns_the_teacher_and_its_students_merge_over_their_base(world, tmp_path):
    """Two students of two teachers from one initialisation: each lowers its loss and raises
    its cosine similarity; both load with their shared base and merge by task arithmetic."""
    for name, teacher, data in (("s1", "T1", "d1"), ("s2", "T2", "d2")):
        done = distill_py(*args(world, tmp_path / name, teacher, data, "steps=40"))
        assert done.returncode == 0, done.stderr[-3000:]
        history = _rows(tmp_path / name / "loss.csv")
        first, last = history[:5], history[-5:]
        assert np.mean([r["loss"] for r in last]) < np.mean([r["loss"] for r in first]) - 0.05
        assert np.mean([r["cos"] for r in last]) > np.mean([r["cos"] for r in first]) + 0.05
        card = (tmp_path / name / "README.md").read_text()
        assert "Final loss" in card and (tmp_path / name / "loss.png").is_file()
        assert not (tmp_path / f"{name}.resume").exists()  # finished: no checkpoints kept
    base = load_encoder(world / "base")
    students = {n: load_encoder(tmp_path / n) for n in ("s1", "s2")}
    assert base.config.num_hidden_layers == 1 and base.family.model_type == "hubert"
    for student in students.values():  # the encoder itself learned, not only its heads
        moved = {
            k: (t - base.model.state_dict()[k]).abs().max().item()
            for k, t in student.model.state_dict().items()
            if t.is_floating_point()
        }
        assert moved["encoder.layers.0.feed_forward.output_dense.weight"] > 1e-3, moved
        assert moved["feature_extractor.conv_layers.0.conv.weight"] > 1e-3, moved
    out = tmp_path / "merged"
    done = run_py(
        "models=local",
        f"models.members={{s1:{tmp_path / 's1'},s2:{tmp_path / 's2'}}}",
        "models.anchor=s1",
        f"models.base={world / 'base'}",
        "merge=task_arithmetic",
        "merge.weights={s1:1.0,s2:1.0}",
        "calibration.size=0",
        "eval=none",
        "logger=none",
        "progress=false",
        f"paths.cache={tmp_path / 'cache'}",
        f"hydra.run.dir={out}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    merged = load_encoder(out / "merged").model.state_dict()
    b = base.model.state_dict()
    s1, s2 = (students[n].model.state_dict() for n in ("s1", "s2"))
    for key, t in b.items():
        if t.is_floating_point():
            torch.testing.assert_close(merged[key], s1[key] + s2[key] - t, atol=1e-5, rtol=1e-4)


def _rows(path):
    import csv

    with open(path) as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def test_a_killed_distillation_resumes_and_ends_where_an_uninterrupted_one_ends(world, tmp_path):
    common = ("steps=24", "checkpoint_every=5")
    whole = distill_py(*args(world, tmp_path / "whole", "T1", "d1", *common))
    assert whole.returncode == 0, whole.stderr[-3000:]
    kill = "distill.train:Distiller.training_step:14:before"  # after the checkpoint of step 10
    killed = distill_py(*args(world, tmp_path / "cut", "T1", "d1", *common), kill=kill)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (tmp_path / "cut.resume" / "last.ckpt").is_file()
    assert not (tmp_path / "cut" / "loss.csv").exists()
    resumed = distill_py(*args(world, tmp_path / "cut", "T1", "d1", *common))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "cut" / "training.json").read_text())
    assert summary["resumed_at_step"] == 10 and not (tmp_path / "cut.resume").exists()
    whole_seconds = json.loads((tmp_path / "whole" / "training.json").read_text())["train_seconds"]
    assert summary["train_seconds"] > 0.3 * whole_seconds  # both runs' training counted
    a, b = _rows(tmp_path / "whole" / "loss.csv"), _rows(tmp_path / "cut" / "loss.csv")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(24))
    for x, y in zip(a, b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4, abs=1e-5)
    weights = [load_encoder(tmp_path / d).model.state_dict() for d in ("whole", "cut")]
    for key, t in weights[0].items():
        torch.testing.assert_close(weights[1][key], t, atol=1e-4, rtol=1e-4)


def test_the_batches_do_not_depend_on_the_workers_and_a_later_start_continues_them(world):
    from torch.utils.data import DataLoader

    from distill.train import CropBatches, usable_files

    files, lengths = usable_files([str(world / "d1"), str(world / "d2")], RATE, 8000)
    assert len(files) == 12

    def batches(first: int, count: int, workers: int) -> list[torch.Tensor]:
        data = CropBatches(files, lengths, 8000, RATE, 3, 4, first, count)
        return list(DataLoader(data, batch_size=None, num_workers=workers))

    alone, spread = batches(0, 5, 0), batches(0, 5, 2)
    assert len(alone) == 5 and all(x.shape == (4, 8000) for x in alone)
    assert all(torch.equal(x, y) for x, y in zip(alone, spread, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(alone[2:], batches(2, 3, 0), strict=True))
    assert not torch.equal(alone[0], alone[1])
