"""A matcher, a merge method, a suite, a task and an encoder family added from outside the
project (one module, this one, plus one YAML each under tests/plugin_conf/), run end to end
through run.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import HubertConfig, HubertModel

from eval.data import Example
from eval.tasks import Task
from merging.combine import Merger, interpolate
from merging.families import Family, untouched
from merging.match import MatchProblem
from merging.spec import PermSpec, build_spec

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugin_conf"


class Identity:
    """Leaves every unit where it is."""

    name = "identity"

    def __call__(self, problem: MatchProblem) -> dict[str, torch.Tensor]:
        return {
            g.name: torch.arange(g.size) for g in problem.spec.groups if problem.scope.selects(g)
        }


@dataclass(frozen=True)
class TowardB(Merger):
    """Linear interpolation, then a look at the calibration clips."""

    alpha: float = 0.5
    name = "toward_b"
    needs_clips = True

    def combine(self, a, b):
        return interpolate(a, b, self.alpha)

    def refine(self, merged, a, b, clips):
        return {"clips": len(clips), "seconds": sum(c.wave.numel() for c in clips) / 16000}


def alternate(root: str) -> list[Example]:
    """A dataset adapter of its own: clips labelled by folder, every other one a test clip."""
    files = sorted(Path(root).rglob("*.wav"))
    return [Example(str(f), f.parent.name, ("train", "test")[i % 2]) for i, f in enumerate(files)]


def toy_suite(root: str) -> list[tuple[Task, list[Example]]]:
    task = Task("toy", "Toy", "music", "utterance", "accuracy", alternate, 1.0)
    return [(task, alternate(root))]


def toy_family() -> Family:
    """HuBERT's layout, with conv channels that must stay where they are."""

    def spec(config, split_qkv=False, keys=None, vo_point="v") -> PermSpec:
        groups = build_spec(config, split_qkv=split_qkv, keys=keys, vo_point=vo_point).groups
        return PermSpec(tuple(g for g in groups if g.kind != "conv"))

    def invariant(config, keys):
        return untouched(config, keys) | {k for k in keys if "conv_layers" in k}

    return Family("toy_hubert", HubertModel, HubertConfig, "", spec=spec, invariant_keys=invariant)


def test_plugins_from_outside_the_project_run_end_to_end(tmp_path):
    from merging.merge import export
    from tests.helpers import local_job, random_encoder, run_py, tiny_config
    from tests.test_audio import write_mixed_folder
    from tests.test_eval import make_two_class_folder

    for name, seed in (("A", 0), ("B", 1)):
        config = export(random_encoder(tiny_config(), seed), tmp_path / name) / "config.json"
        config.write_text(config.read_text().replace('"hubert"', '"toy_hubert"'))
    write_mixed_folder(tmp_path / "calib")
    make_two_class_folder(tmp_path / "task", per_class=8)
    out = tmp_path / "job"
    done = run_py(
        *local_job(
            tmp_path,
            out,
            f"hydra.searchpath=[file://{PLUGINS}]",
            "match=identity",
            "merge=toward_b",
            "eval=toy",
            f"eval.root={tmp_path / 'task'}",
            "pair=toy",
        )
    )
    record = json.loads((out / "results.json").read_text())
    assert record["status"] == "ok", record.get("traceback") or done.stderr[-3000:]
    assert record["match"] == "identity"
    assert record["merge"]["method"] == "toward_b" and record["merge"]["alpha"] == 0.25
    assert record["merge"]["refined"]["clips"] == record["calibration"]["clips"] == 3
    perms = load_file(out / "permutations.safetensors")
    assert perms and all(torch.equal(p, torch.arange(len(p))) for p in perms.values())
    assert not [g for g in perms if g.startswith("conv")]  # the family's own spec
    merged = json.loads((out / "merged" / "config.json").read_text())
    assert merged["model_type"] == "toy_hubert"
    assert set(record["evaluation"]["tasks"]) == {"toy"}
    assert record["evaluation"]["suite"][0]["domain"] == "music"
    assert "scores" in record["evaluation"]  # scored like any suite: parents, floor, intervals


REFUSE_DEMO = """
import runpy, sys
from importlib.abc import MetaPathFinder

class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "demo":  # (its sound-source libraries: the import contracts)
            raise ImportError(f"{name} is refused")

sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_merging_and_eval_run_with_every_demo_import_refused(tmp_path):
    from merging.merge import export
    from tests.helpers import local_job, random_encoder, run_py, tiny_config
    from tests.test_audio import write_mixed_folder
    from tests.test_eval import make_two_class_folder

    export(random_encoder(tiny_config(), 0), tmp_path / "A")
    export(random_encoder(tiny_config(), 1), tmp_path / "B")
    write_mixed_folder(tmp_path / "calib")
    make_two_class_folder(tmp_path / "task", per_class=6)
    out = tmp_path / "job"
    args = local_job(
        tmp_path,
        out,
        "eval=folder",
        f"eval.root={tmp_path / 'task'}",
        "eval.probe.epochs=2",
        "eval.probe.seeds=[0]",
    )
    done = run_py(*args, before=("-c", REFUSE_DEMO))
    assert (out / "results.json").is_file(), done.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    assert record["status"] == "ok", record.get("error")
    refused = run_py(
        *args, "calibration=demo", f"hydra.run.dir={tmp_path / 'demo'}", before=("-c", REFUSE_DEMO)
    )
    demo_job = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert refused.returncode == 2 and "demo" in demo_job["error"]  # the refusal is real
