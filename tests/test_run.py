"""The command-line interface end to end: merge, recovery of a hidden permutation, caching."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

import run  # noqa: F401 - registers the ${repo:} resolver of the default (demo) pair
from eval.s3prl import installed
from merging.forward import encode
from merging.load import load_encoder
from merging.merge import export
from merging.spec import apply_permutations, build_spec, random_exact_perms
from tests.helpers import random_encoder, tiny_config
from tests.test_audio import write_mixed_folder

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["none", "cnn", "ffn", "fnn_attn", "all", "full"]


def run_cli(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "progress=false", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A random encoder A, and B = A with every exact group hidden behind random permutations."""
    root = tmp_path_factory.mktemp("world")
    config = tiny_config()
    a = random_encoder(config, 0)
    spec = build_spec(config, keys=a.model.state_dict().keys())
    gen = torch.Generator().manual_seed(5)
    exact = random_exact_perms(spec, gen, [n for n in spec.names() if n != "res"])
    with_res = random_exact_perms(spec, gen)
    export(a, root / "A")
    for name, perms in (("B", exact), ("B_res", with_res)):
        b = copy.deepcopy(a.model)
        b.load_state_dict(apply_permutations(a.model.state_dict(), spec, perms))
        export(type(a)(b, name), root / name)
    write_mixed_folder(root / "calib")
    return root


def hidden_states(directory: Path) -> tuple[torch.Tensor, ...]:
    enc = load_encoder(directory)
    wave = torch.randn(2, 9000, generator=torch.Generator().manual_seed(1))
    return encode(enc, wave, torch.tensor([9000, 7000]), output_hidden_states=True).hidden_states


def max_diff(x: tuple[torch.Tensor, ...], y: tuple[torch.Tensor, ...]) -> float:
    return max(float((p - q).abs().max()) for p, q in zip(x, y, strict=True))


def common(world: Path, b: str, out: Path) -> list[str]:
    return [
        "pair=local",
        f"pair.a={world / 'A'}",
        f"pair.b={world / b}",
        "merge.alpha=0.5",
        "calibration=default",
        f"calibration.dirs=[{world / 'calib'}]",
        "calibration.size=3",
        "eval=none",
        f"paths.cache={world / 'cache'}",
        f"hydra.run.dir={out}",
    ]


def test_fnn_attn_recovers_a_hidden_permutation_and_none_does_not(world, tmp_path):
    ref = hidden_states(world / "A")
    done = run_cli("permute=fnn_attn", *common(world, "B", tmp_path / "fnn_attn"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "fnn_attn" / "results.json").read_text())
    assert results["status"] == "ok"
    assert results["calibration"] == {
        "clips": 3,
        "requested": 3,
        "skipped": 2,
        "skipped_files": [str(world / "calib" / f) for f in ("broken.wav", "silent.wav")],
        "audio_seconds": pytest.approx(3.5),
        "sources": {str(world / "calib"): {"clips": 3, "seconds": pytest.approx(3.5)}},
        "cached": False,
    }
    assert max_diff(hidden_states(tmp_path / "fnn_attn" / "merged"), ref) < 1e-4
    moved = {row["group"]: row for row in results["alignment"]}
    assert moved["ffn.0"]["corr_after"] > 0.999 > moved["ffn.0"]["corr_before"]
    assert set(results["seconds"]) >= {"loading", "calibration", "matching", "plots", "export"}
    # the default heatmaps are there (what drawing them costs is in results.json's seconds)
    for group in ("conv.0", "ffn.0", "attn_vo.0"):
        with Image.open(tmp_path / "fnn_attn" / "plots" / f"corr_{group}.png") as png:
            assert png.format == "PNG" and png.width > png.height > 300

    done = run_cli("permute=none", *common(world, "B", tmp_path / "none"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "none" / "results.json").read_text())
    assert results["calibration"]["cached"] is True  # same pair and clips: statistics reused
    assert results["alignment"] == []
    assert max_diff(hidden_states(tmp_path / "none" / "merged"), ref) > 1e-2


def test_full_scope_recovers_a_permuted_residual_stream(world, tmp_path):
    done = run_cli("permute=full", *common(world, "B_res", tmp_path / "full"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert max_diff(hidden_states(tmp_path / "full" / "merged"), hidden_states(world / "A")) < 1e-4
    done = run_cli("permute=fnn_attn", *common(world, "B_res", tmp_path / "partial"))
    assert (
        max_diff(hidden_states(tmp_path / "partial" / "merged"), hidden_states(world / "A")) > 1e-2
    )


def test_bad_input_fails_clearly_and_still_writes_results(world, tmp_path):
    out = tmp_path / "bad"
    done = run_cli(*common(world, "B", out), f"pair.b={tmp_path / 'missing'}")
    assert done.returncode == 2
    assert "does not exist" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "failed" and "does not exist" in results["error"]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_permute_preset_composes(preset):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"permute={preset}"])
    assert cfg.permute.name == preset
    assert {"cnn", "ffn", "attn", "res"} <= set(cfg.permute)
    from merging.match import Scope

    Scope(cnn=cfg.permute.cnn, ffn=cfg.permute.ffn, attn=cfg.permute.attn, res=cfg.permute.res)


def test_id9_is_one_override():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["permute=fnn_attn", "permute.cnn=false"])
    assert (cfg.permute.cnn, cfg.permute.ffn, cfg.permute.attn) == (False, True, "heads")


def test_eval_folder_probes_the_merged_encoder_and_reuses_features(world, tmp_path):
    from tests.test_eval import make_two_class_folder

    task = make_two_class_folder(tmp_path / "hum_vs_hiss", per_class=30)
    extra = [
        "eval=folder",
        f"eval.root={task}",
        "eval.domain=music",
        "eval.probe.epochs=15",
        "save_merged=false",
    ]
    for name in ("first", "second"):
        done = run_cli("permute=fnn_attn", *common(world, "B", tmp_path / name), *extra)
        assert done.returncode == 0, done.stderr[-3000:]
    first, second = (
        json.loads((tmp_path / n / "results.json").read_text())["evaluation"]
        for n in ("first", "second")
    )
    task1, task2 = first["tasks"]["hum_vs_hiss"], second["tasks"]["hum_vs_hiss"]
    assert task1["value"] > 90 and task1["skipped"] == 1
    assert (task1["probe_cached"], task2["probe_cached"]) == (False, True)
    assert task1["features_cached"] is False
    assert task2["value"] == task1["value"]
    # music scores are normalised by model B's own result on the task
    refs = first["references"]
    expected = 1000 * task1["value"] / refs["b"]["hum_vs_hiss"]
    assert first["scores"]["music"] == pytest.approx(expected)
    assert "speech" not in first["scores"] and "fbank" not in refs


def test_s3prl_backend_writes_recipes_for_the_merged_checkpoint(world, tmp_path):
    out = tmp_path / "s3prl_job"
    done = run_cli(
        "permute=fnn_attn",
        *common(world, "B", out),
        "eval=paper",
        "eval.backend=s3prl",
        "eval.roots.ic=/data/fsc",
        "eval.roots.esc50=/data/esc",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    evaluation = json.loads((out / "results.json").read_text())["evaluation"]
    script = (out / "s3prl.sh").read_text()
    if installed():  # the s3prl extra runs what it has a recipe config for: not IC
        assert set(evaluation["skipped"]) == {"esc50", "ic"} and evaluation["runs"] == {}
        assert "recipe config" in evaluation["skipped"]["ic"]
    else:  # nothing to run with: the recipes are written, with the merged checkpoint
        assert set(evaluation["skipped"]) == {"esc50"} and "runs" not in evaluation
        assert evaluation["not_run"].startswith("s3prl is not installed")
        assert f"-k {(out / 'merged').resolve()}" in script and "-d fluent_commands" in script


def test_a_large_groups_heatmap_spreads_its_units_over_the_matched_ranks(tmp_path):
    from safetensors.torch import load_file

    from merging.analysis import heatmap_units, plot_alignment
    from merging.calibrate import PointStats
    from merging.spec import PermGroup, PermSpec

    n = 1000
    corr = torch.rand(n, n, generator=torch.Generator().manual_seed(0)) * 2 - 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    units = heatmap_units(corr, perm, 128)
    matched = corr[torch.arange(n), perm]
    assert len(units) == len(set(units.tolist())) == 128
    assert matched[units[0]] == matched.max() and matched[units[-1]] == matched.min()
    assert (matched[units][1:] <= matched[units][:-1]).all()  # strongest first
    spec = PermSpec((PermGroup("ffn.0", "ffn", n, (), ("ffn.0",)),))
    zeros = torch.zeros(n)
    stats = {"ffn.0": PointStats(10, zeros, zeros, zeros, zeros, corr)}
    png = plot_alignment(spec, stats, {"ffn.0": perm}, "ffn.0", tmp_path / "p.png", data=True)
    with Image.open(png) as image:
        assert image.width > image.height > 300
    saved = load_file(str(tmp_path / "p.safetensors"))  # the whole matrix, on request
    assert torch.equal(saved["correlation"], corr) and torch.equal(saved["perm"], perm)
