"""The interfaces table: rows by upstream and interface, normalised by the weighted-sum
parents, each tested against its weighted-sum row, fusions against the better parent."""

from __future__ import annotations

import pytest

from eval.interface import HConv
from merging.merge import export
from report import interfaces
from tests.helpers import random_encoder, tiny_config
from tests.test_routes import job, outcomes_at


@pytest.fixture
def sweep(tmp_path):
    ckpt = tmp_path / "checkpoints"
    for seed, name in enumerate(("A", "B")):
        export(random_encoder(tiny_config(), seed), ckpt / name)
    pair = {"name": "pair", "anchor": "a", "members": {"a": str(ckpt / "A"), "b": str(ckpt / "B")}}
    a, b = outcomes_at({"ks": 0.9, "genre": 0.5}, 0), outcomes_at({"ks": 0.4, "genre": 0.9}, 1)
    fusion = {
        "weighted_sum": outcomes_at({"ks": 0.85, "genre": 0.85}, 2),
        "hconv": outcomes_at({"ks": 0.45, "genre": 0.9}, 3),  # far below A on ks
    }
    root = tmp_path / "sweep"
    for name, fused in fusion.items():
        job(root, name, pair, {"merged": a, "a": a, "b": b, "fusion": fused}, parent="a",
            eval={"interface": {"name": name}})  # fmt: skip
    return root


def test_rows_are_scored_by_the_weighted_sum_parents_and_fusions_against_the_better_one(sweep):
    rows, costs, baseline = interfaces.gather(sweep)
    keys = [r.key for r in rows]
    assert keys == [
        "A-weighted_sum", "B-weighted_sum", "fusion-weighted_sum", "A-hconv", "B-hconv",
        "fusion-hconv",
    ]  # fmt: skip
    assert costs["A-weighted_sum"]["parameters"] == 3  # tiny encoders: 2 layers + the input
    assert costs["fusion-hconv"]["parameters"] == sum(p.numel() for p in HConv(6, 32).parameters())
    interfaces.rescore(rows, costs, baseline)
    by_key = {r.key: r for r in rows}
    assert by_key["A-hconv"].scores["speech"] == pytest.approx(1000)
    below = interfaces.against_better_parent(rows, baseline)
    worse = {(t.row, t.column) for t in below if t.significant and t.difference < 0}
    assert worse == {("fusion-hconv", "ks")}
    text = interfaces.build(sweep)["md"].read_text()
    assert "fusion-hconv: significantly below it on ks" in text
    assert "fusion-weighted_sum: never below it" in text


def test_without_the_weighted_sum_job_it_says_what_to_run(sweep):
    (sweep / "weighted_sum" / "results.json").unlink()
    with pytest.raises(ValueError, match="eval.interface.name=weighted_sum,hconv,chconv"):
        interfaces.gather(sweep)
