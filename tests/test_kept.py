"""Choosing the kept document of each near-duplicate component (stages/dedup/kept) on the engines'
dataset operations (local; Ray Data in the full suite):
a component too large for one call is decided in slices, with exactly the decisions it gets whole,
for both keep rules and when an indexed document of an earlier run owns it."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest

from tokenmill.stages.dedup.hubs import find_hubs
from tokenmill.stages.dedup.kept import CLUSTER_SIZE, decide


@pytest.fixture(autouse=True)
def _sort_shuffle(request):
    if "datasets" in request.fixturenames and request.getfixturevalue("datasets").kind == "ray":
        request.getfixturevalue("sort_shuffle")   # the shuffle the executor picks for small runs
    yield


def _labeled(big: int = 30_000) -> pa.Table:
    """One component of ``big`` members (label 0), one owned by an indexed document (label -7, 6,000
    members), and 300 small ones; row keys in shuffled input order, quality with ties."""
    rng = random.Random(5)
    labels = [0] * big + [-7] * 6_000 + [100_000 + i % 300 for i in range(900)]
    n = len(labels)
    offsets = list(range(n))
    rng.shuffle(offsets)
    return pa.table({"node": pa.array(range(n), pa.int64()), "label": pa.array(labels, pa.int64()),
                     "row_key": [f"f{o % 3}.jsonl:{o}" for o in offsets], "id": [f"doc{o}" for o in offsets],
                     "quality_score": [rng.choice([0.1, 0.5, 0.9, None]) for _ in range(n)]})


def _decisions(datasets, table: pa.Table, keep: str, hub_degree: int) -> dict:
    ops = datasets.ops(8)
    labeled = datasets.dataset(table, 5)
    owners = [datasets.dataset(pa.table({"label": pa.array([-7], pa.int64()), "indexed_id": ["old-page"]}))]
    out = ops.collect(decide(ops, labeled, owners, keep, hub_degree))
    return {r["row_key"]: (r["reject_reason"], r[CLUSTER_SIZE]) for r in out.to_pylist()}


@pytest.mark.parametrize("keep", ["first", "quality_score"])
def test_sliced_components_decide_as_whole_ones(datasets, keep):
    table = _labeled()
    ops = datasets.ops(8)
    hubs = find_hubs(ops, datasets.dataset(table, 5), "label", None, 2_000)
    assert hubs.keys.tolist() == [-7, 0] and hubs.counts.tolist() == [6_000, 30_000]
    sliced = _decisions(datasets, table, keep, hub_degree=2_000)
    whole = _decisions(datasets, table, keep, hub_degree=10**9)
    assert sliced == whole and len(sliced) == table.num_rows
    kept = [k for k, (reason, _) in sliced.items() if reason is None]
    assert len(kept) == 1 + 300  # the owned component keeps none
    owned = {sliced[r["row_key"]] for r in table.to_pylist() if r["label"] == -7}
    assert owned == {("near_duplicate_of:old-page", 6_000)}
    if keep == "first":
        first = min((r for r in table.to_pylist() if r["label"] == 0),
                    key=lambda r: (r["row_key"].split(":")[0], int(r["row_key"].split(":")[1])))
        assert sliced[first["row_key"]] == (None, 30_000)
        assert {v for r in table.to_pylist() if r["label"] == 0 and r["row_key"] != first["row_key"]
                for v in [sliced[r["row_key"]]]} == {(f"near_duplicate_of:{first['id']}", 30_000)}
    else:
        best = [r for r in table.to_pylist() if r["label"] == 0 and sliced[r["row_key"]][0] is None]
        assert len(best) == 1 and best[0]["quality_score"] == 0.9


def test_components_under_half_the_hub_degree_are_not_hubs(datasets):
    """6,000 members are reported by the blocks (over 20,000 // 16 each) but stay under half of
    20,000: no hub, so every component is decided whole in one call."""
    data = datasets.dataset(_labeled(big=500), 2)
    assert find_hubs(datasets.ops(8), data, "label", None, 20_000) is None
    assert find_hubs(datasets.ops(8), data, "label", None, 12_000).keys.tolist() == [-7]
