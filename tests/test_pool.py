"""Pools of N encoders: every member aligned to the anchor, combined with a weight each; a
pair is the pool {a, b}; task-vector methods need the shared base."""

from __future__ import annotations

import copy

import pytest
import torch

from merging.audio import synthetic_clips
from merging.calibrate import calibrate
from merging.combine import Linear
from merging.load import EncoderLoadError
from merging.match import Scope
from merging.merge import merge, merge_pool
from merging.mergers.dare import Dare
from merging.mergers.repair import Repair
from merging.mergers.task_arithmetic import TaskArithmetic
from merging.mergers.ties import Ties
from merging.points import Parts
from merging.pool import Pool
from merging.spec import apply_permutations, random_exact_perms
from tests.helpers import random_encoder, tiny_config
from tests.test_families import FAMILIES, hidden

FNN_ATTN = Scope(cnn=True, ffn=True, attn="heads")


def permuted_copy(encoder, seed: int):
    """``encoder`` with its conv channels, FFN units, heads, Q/K and V/O units reordered."""
    spec = encoder.family.build_spec(encoder.config, keys=encoder.model.state_dict().keys())
    names = [n for n in spec.names() if not n.startswith("res")]
    perms = random_exact_perms(spec, torch.Generator().manual_seed(seed), names)
    other = copy.deepcopy(encoder)
    other.model.load_state_dict(apply_permutations(encoder.model.state_dict(), spec, perms))
    return other


def max_diff(x, y) -> float:
    return max((p - q).abs().max().item() for p, q in zip(x, y, strict=True))


@pytest.mark.parametrize("family", FAMILIES)
def test_three_members_aligned_to_the_anchor_give_it_back(family):
    a = random_encoder(tiny_config(family), 0)
    b, c = permuted_copy(a, 7), permuted_copy(a, 8)
    pool = Pool({"a": a, "b": b, "c": c}, anchor="a")
    clips = synthetic_clips(8, a.sample_rate, 0.6, 0)
    stats = {n: calibrate(a, pool.members[n], clips, progress=False) for n in pool.others}
    weights = Linear(weights={"a": 0.4, "b": 0.3, "c": 0.3})
    done = merge_pool(pool, stats, FNN_ATTN, weights)
    assert set(done.perms) == {"b", "c"} and set(done.alignment) == {"b", "c"}
    assert max_diff(hidden(done.encoder), hidden(a)) < 1e-4
    plain = merge_pool(pool, stats, Scope(), weights)  # nothing aligned: no recovery
    assert max_diff(hidden(plain.encoder), hidden(a)) > 1e-2


def test_one_pass_over_a_pool_gives_each_pairs_statistics(tmp_path):
    import dataclasses

    from merging.calibrate import cached_calibrate_pool, calibrate_pool

    a, b, c = (random_encoder(tiny_config(), s) for s in (0, 1, 2))
    clips = synthetic_clips(7, 16000, 0.5, 0)
    pooled = calibrate_pool(a, {"b": b, "c": c}, clips, batch_size=3, progress=False)
    for name, member in (("b", b), ("c", c)):
        pair = calibrate(a, member, clips, batch_size=3, progress=False)
        assert set(pooled[name]) == set(pair)
        for point, want in pair.items():
            for field in dataclasses.fields(want):
                got, expected = getattr(pooled[name][point], field.name), getattr(want, field.name)
                assert torch.equal(got, expected) if torch.is_tensor(got) else got == expected
    members = {"b": b, "c": c}
    first, cached = cached_calibrate_pool(a, members, clips, tmp_path, 3, False)
    again, hit = cached_calibrate_pool(a, members, clips, tmp_path, 3, False)
    assert not cached and hit and torch.equal(first["c"]["ffn.0"].corr, again["c"]["ffn.0"].corr)
    assert len(list((tmp_path / "calibration").glob("pool-*.pt"))) == 1  # one entry, the pool


def test_the_pair_is_the_two_member_pool_bit_for_bit():
    a, b = random_encoder(tiny_config(), 0), random_encoder(tiny_config(), 1)
    stats = calibrate(a, b, synthetic_clips(4, 16000, 0.5, 0), progress=False)
    pair = merge(a, b, stats, FNN_ATTN, 0.9)
    pooled = merge_pool(Pool.pair(a, b), {"b": stats}, FNN_ATTN, Linear(0.9))
    weighted = merge_pool(
        Pool.pair(a, b), {"b": stats}, FNN_ATTN, Linear(weights={"a": 0.9, "b": 0.1})
    )
    want = pair.encoder.model.state_dict()
    for result in (pooled, weighted):
        got = result.encoder.model.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)
    assert all(torch.equal(pair.perms[g], pooled.perms["b"][g]) for g in pair.perms)


def test_a_member_of_another_layout_is_named():
    a = random_encoder(tiny_config(), 0)
    wide = random_encoder(tiny_config(intermediate_size=64), 1)
    Pool({"speech": a, "music": a, "general": a}, "speech").check()  # one layout: fine
    with pytest.raises(
        EncoderLoadError, match=r"models.members.music .* anchor .speech.*intermediate_size"
    ):
        Pool({"speech": a, "music": wide}, "speech").check()
    with pytest.raises(ValueError, match="not a member"):
        Pool({"a": a, "b": a}, "c")


def test_methods_that_cannot_take_the_pool_refuse_it_before_any_work():
    a = random_encoder(tiny_config(), 0)
    pool = Pool({"a": a, "b": a, "c": a}, "a")
    for merger, message in (
        (Linear(0.9), "merge.alpha weighs two encoders"),
        (Repair(0.9), "merge=repair merges two encoders"),
        (Linear(weights={"a": 1.0, "b": 1.0}), "one weight per member"),
        (TaskArithmetic({"a": 1.0, "b": 1.0, "c": 1.0}), "models.base"),
    ):
        with pytest.raises(ValueError, match=message):
            merge_pool(pool, {}, Scope(), merger)
    with pytest.raises(ValueError, match="merge=repair weighs A and B with merge.alpha"):
        Repair(weights={"a": 0.5, "b": 0.5})
    assert "alpha" not in Linear(weights={"a": 1.0, "b": 1.0}).describe()
    assert Linear(0.7).describe() == {"method": "linear", "alpha": 0.7}


def test_task_vector_methods_merge_members_of_a_shared_base():
    base = random_encoder(tiny_config(), 0)
    state = base.model.state_dict()
    members = {}
    for i, name in enumerate(("m1", "m2")):  # disjoint task vectors: even / odd entries
        member = copy.deepcopy(base)
        gen = torch.Generator().manual_seed(10 + i)
        tuned = {}
        for key, t in state.items():
            mask = (torch.arange(t.numel()) % 2 == i).view(t.shape)
            noise = 0.01 * torch.randn(t.shape, generator=gen) * mask
            tuned[key] = t + noise if t.is_floating_point() else t
        member.model.load_state_dict(tuned)
        members[name] = member
    pool = Pool(members, "m1", base=base)
    want = {
        k: members["m1"].model.state_dict()[k] + members["m2"].model.state_dict()[k] - t
        for k, t in state.items()
        if t.is_floating_point()
    }
    weights = {"m1": 1.0, "m2": 1.0}
    for merger in (TaskArithmetic(weights), Ties(weights, density=1.0), Dare(weights, 1.0)):
        got = merge_pool(pool, {}, Scope(), merger).encoder.model.state_dict()
        for k, w in want.items():
            torch.testing.assert_close(got[k], w)
    with pytest.raises(ValueError, match="density"):
        Ties(weights, density=1.5)


def pool_job(root, out, *overrides: str) -> list[str]:
    """run.py's overrides for a quiet job merging the pool {a, b, c} of ``root``."""
    members = ",".join(f"{n}:{root / n.upper()}" for n in "abc")
    return [
        "models=local",
        f"models.members={{{members}}}",
        "models.anchor=a",
        f"calibration.dirs=[{root / 'calib'}]",
        "calibration.size=3",
        "eval=none",
        "logger=none",
        "progress=false",
        f"paths.cache={root / 'cache'}",
        f"hydra.run.dir={out}",
        *overrides,
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_command_line_merges_three_members_back_into_the_anchor(family, tmp_path):
    import json

    from merging.load import load_encoder
    from merging.merge import export
    from tests.helpers import run_py
    from tests.test_audio import write_mixed_folder

    a = random_encoder(tiny_config(family), 0)
    for name, encoder in (("A", a), ("B", permuted_copy(a, 7)), ("C", permuted_copy(a, 8))):
        export(encoder, tmp_path / name)
    write_mixed_folder(tmp_path / "calib")
    weights = "merge.weights={a:0.4,b:0.3,c:0.3}"
    done = run_py(*pool_job(tmp_path, tmp_path / "aligned", "permute=fnn_attn", weights))
    assert done.returncode == 0, done.stderr[-3000:]
    want = hidden(load_encoder(tmp_path / "A"))
    assert max_diff(hidden(load_encoder(tmp_path / "aligned" / "merged")), want) < 1e-4
    record = json.loads((tmp_path / "aligned" / "results.json").read_text())
    assert {row["member"] for row in record["alignment"]} == {"b", "c"}
    assert record["merge"] == {"method": "linear", "weights": {"a": 0.4, "b": 0.3, "c": 0.3}}
    if family == "hubert":  # unaligned, the same weights do not give A back
        done = run_py(*pool_job(tmp_path, tmp_path / "plain", "permute=none", weights))
        assert done.returncode == 0, done.stderr[-3000:]
        merged = hidden(load_encoder(tmp_path / "plain" / "merged"))
        assert max_diff(merged, want) > 1e-2


def test_a_pool_the_method_cannot_merge_is_refused_before_loading(tmp_path):
    import json

    from tests.helpers import run_py
    from tests.test_audio import write_mixed_folder

    write_mixed_folder(tmp_path / "calib")  # and no checkpoints: nothing is loaded
    done = run_py(*pool_job(tmp_path, tmp_path / "job", "merge.alpha=0.5"))
    assert done.returncode == 2
    error = json.loads((tmp_path / "job" / "results.json").read_text())["error"]
    assert "merge.alpha weighs two encoders; the pool has 3 (a, b, c)" in error


def write_shared_base(root) -> dict[str, torch.Tensor]:
    """B0, M1 = B0 + tau1 and M2 = B0 + tau2 (tau1, tau2 on disjoint entries) under ``root``;
    B0 + tau1 + tau2 returned."""
    from merging.merge import export

    base = random_encoder(tiny_config(), 0)
    export(base, root / "B0")
    state = base.model.state_dict()
    want = {k: t.clone() for k, t in state.items()}
    for i in range(2):
        member, gen = copy.deepcopy(base), torch.Generator().manual_seed(20 + i)
        tuned = {}
        for key, t in state.items():
            mask = (torch.arange(t.numel()) % 2 == i).view(t.shape)
            tau = 0.01 * torch.randn(t.shape, generator=gen) * mask if t.is_floating_point() else 0
            tuned[key] = t + tau
            want[key] = want[key] + tau
        member.model.load_state_dict(tuned)
        export(member, root / f"M{i + 1}")
    return want


def shared_base_job(root, out, *overrides: str) -> list[str]:
    """run.py's overrides for a quiet job merging M1 and M2 of ``root`` over their base B0."""
    return [
        "models=local",
        f"models.members={{m1:{root / 'M1'},m2:{root / 'M2'}}}",
        "models.anchor=m1",
        f"models.base={root / 'B0'}",
        "merge.weights={m1:1.0,m2:1.0}",
        "calibration.size=0",
        "eval=none",
        "logger=none",
        "progress=false",
        f"paths.cache={root / 'cache'}",
        f"hydra.run.dir={out}",
        *overrides,
    ]


@pytest.mark.parametrize(
    "method",
    ["merge=task_arithmetic", "merge=ties merge.density=1.0", "merge=dare merge.density=1.0"],
)
def test_task_vectors_of_a_shared_base_from_the_command_line(method, tmp_path):
    """Members B0 + tau1 and B0 + tau2 (disjoint entries), merged with weights 1 and 1 and no
    pass over audio (permute=none is these methods' default, calibration.size=0): B0 + tau1 +
    tau2."""
    import json

    from merging.load import load_encoder
    from tests.helpers import run_py

    want = write_shared_base(tmp_path)
    out = tmp_path / "job"
    done = run_py(*shared_base_job(tmp_path, out, *method.split()))
    assert done.returncode == 0, done.stderr[-3000:]
    got = load_encoder(out / "merged").model.state_dict()
    for key, w in want.items():
        torch.testing.assert_close(got[key], w, atol=1e-6, rtol=1e-5)
    record = json.loads((out / "results.json").read_text())
    assert record["scope"]["name"] == "none" and record["calibration"]["clips"] == 0
    assert record["merge"]["method"] == method.split()[0].split("=")[1]


def test_a_pool_is_scored_against_its_named_references_with_a_row_per_member(tmp_path):
    """Evaluation of a pool: each member alone, the base, one fusion over every member's
    layers; the scores normalised by the member ``models.references`` names; the report's
    rows name them."""
    import json

    from eval.evaluate import scores
    from eval.tasks import Task
    from report.table import build
    from tests.helpers import run_py
    from tests.test_eval import make_two_class_folder

    write_shared_base(tmp_path)
    task = make_two_class_folder(tmp_path / "task", per_class=12)
    out = tmp_path / "sweep" / "job"
    done = run_py(
        *shared_base_job(tmp_path, out, "merge=task_arithmetic"),
        "eval=folder",
        f"eval.root={task}",
        "eval.probe.epochs=2",
        "models.references={speech:m2,music:m1}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    evaluation = json.loads((out / "results.json").read_text())["evaluation"]
    assert evaluation["members"] == ["m1", "m2"]
    assert evaluation["normalisers"] == {"speech": "m2", "music": "m1"}
    refs = evaluation["references"]
    assert set(refs) == {"m1", "m2", "base", "fbank", "fusion"}
    (name,) = refs["m2"]
    suite = [(Task(name, name, "speech", "utterance", "accuracy", None), [])]
    merged = {name: evaluation["tasks"][name]["value"]}
    want = scores(merged, suite, refs["m2"], refs["m1"], evaluation["floors"])
    assert evaluation["scores"]["speech"] == pytest.approx(want["speech"])
    valid = evaluation["validation"]  # the same formula on the validation split
    floor = valid["floors"][name]
    m2 = valid["references"]["m2"][name]
    low = floor if m2 > floor else 0.0  # a floor m2 does not beat is dropped
    expected = 1000 * (valid["tasks"][name] - low) / (m2 - low)
    assert valid["scores"]["speech"] == pytest.approx(expected)
    assert 0 < floor < 100
    table = build(tmp_path / "sweep")["md"].read_text()
    for row in ("m1 alone (M1)", "m2 alone (M2)", "base alone (B0)", "m1 + m2 layer fusion"):
        assert row in table


def test_the_references_are_named_members():
    import run
    from tests.test_runner import composed

    pool = ["models=local", "models.members={s:/x,m:/y,g:/z}", "models.anchor=g"]
    assert run.references(composed()) == ("a", "b")  # the pair: A for speech, B for music
    assert run.references(composed(*pool)) == ("g", "s")  # the anchor, then the next member
    assert run.references(composed(*pool, "models.references={speech:s,music:m}")) == ("s", "m")
    for bad, message in (
        ("models.references={music:x}", "models.references.music=x is not a member"),
        ("models.references={speech:g,music:g}", "cannot normalise both"),
        ("models.references={sound:g}", "unknown domains"),
    ):
        with pytest.raises(ValueError, match=message):
            run.references(composed(*pool, bad))


def test_fusion_stacks_every_members_layers_on_the_clips_all_of_them_read():
    from eval.data import Example
    from eval.features import PooledFeatures, fuse

    clips = [Example(f"/x/{i}.wav", "l", "train") for i in range(4)]

    def part(value: float, keep: list[int], skipped: list[str]) -> PooledFeatures:
        feats = torch.stack([torch.full((2, 3), value + i) for i in keep])  # 2 layers, dim 3
        return PooledFeatures(feats, [clips[i] for i in keep], skipped, 0.0, True)

    one = part(0, [0, 1, 2, 3], [])
    two = part(10, [3, 1, 0], ["/x/2.wav"])  # another order, one clip unreadable
    three = part(20, [0, 1, 3], ["/x/2.wav"])
    fused = fuse([one, two, three])
    assert [e.path for e in fused.examples] == ["/x/0.wav", "/x/1.wav", "/x/3.wav"]
    assert fused.features.shape == (3, 6, 3) and fused.skipped == ["/x/2.wav"]
    assert fused.features[2, :, 0].tolist() == [3, 3, 13, 13, 23, 23]  # clip 3 in each part
    pair = fuse([one, two])
    assert pair.features.shape == (3, 4, 3)


def test_the_family_says_where_the_parts_a_weight_names_are():
    """Weights per part follow the anchor family's ``parts``: a family whose conv stack is the
    feature extractor alone weighs the feature projection as everything else."""
    import dataclasses

    a, b = random_encoder(tiny_config(), 0), random_encoder(tiny_config(), 1)
    alpha = Linear({"cnn": 1.0, "default": 0.0})
    key = "feature_projection.projection.weight"
    merged = merge(a, b, {}, Scope(), alpha).encoder.model.state_dict()
    torch.testing.assert_close(merged[key], a.model.state_dict()[key])  # cnn: A's
    family = dataclasses.replace(a.family, parts=Parts(cnn=("feature_extractor.",)))
    a.family = b.family = family
    merged = merge(a, b, {}, Scope(), alpha).encoder.model.state_dict()
    torch.testing.assert_close(merged[key], b.model.state_dict()[key])  # default: B's
    conv = "feature_extractor.conv_layers.0.conv.weight"
    torch.testing.assert_close(merged[conv], a.model.state_dict()[conv])
