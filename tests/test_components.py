"""Connected components on the engine's shuffle (Ray Data): the algorithm of stages/dedup/components
against a union-find oracle; a 2,000-hop chain and a 20,000-node hub converge within the cap; a
round cap that is too small fails loudly instead of writing wrong clusters."""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from tokenmill.engine.executors.ray_ops import RayDatasetOps
from tokenmill.engine.global_ops import GlobalStepError, pack_partitions, unpack_partition
from tokenmill.stages.dedup.components import (BAND_ROWS, EDGES, candidate_edges, connected_components, large_star,
                                               small_star, star_labels, DIRECTED, both_directions)


def _oracle(pairs: list[tuple[int, int]]) -> dict[int, int]:
    """Union-find: node -> smallest node of its component."""
    parent: dict[int, int] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


@pytest.fixture(autouse=True)
def sort_shuffle(ray_local):
    """The shuffle the executor picks for small runs (the hash shuffle starts actors per step)."""
    from ray.data.context import ShuffleStrategy

    ctx = ray_local.data.DataContext.get_current()
    before = ctx.shuffle_strategy
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    yield
    ctx.shuffle_strategy = before


def _labels(ray_local, pairs, max_rounds=64, parts=4):
    import ray

    ops = RayDatasetOps(parts)
    u = np.array([p[0] for p in pairs], np.int64)
    v = np.array([p[1] for p in pairs], np.int64)
    edges = ray.data.from_arrow(pa.table({"u": u, "v": v}, schema=EDGES)).repartition(3)
    stars, rounds = connected_components(ops, edges, max_rounds)
    table = ops.collect(ops.map(stars, star_labels))
    return dict(zip(table["node"].to_pylist(), table["label"].to_pylist())), rounds


def test_random_graphs_match_union_find(ray_local):
    rng = random.Random(7)
    pairs = [(rng.randrange(3000), rng.randrange(3000)) for _ in range(2500)]
    pairs = [(a, b) for a, b in pairs if a != b]
    got, rounds = _labels(ray_local, pairs)
    want = {n: l for n, l in _oracle(pairs).items()}
    assert got == want
    assert rounds <= 20


def test_chain_of_2000_is_one_cluster_in_few_rounds(ray_local):
    order = list(range(2000))
    random.Random(3).shuffle(order)  # labels must travel 2,000 hops, in no helpful order
    pairs = list(zip(order, order[1:]))
    got, rounds = _labels(ray_local, pairs)
    assert set(got.values()) == {0} and len(got) == 2000
    assert rounds <= 25, rounds


def test_hub_of_20000(ray_local):
    hub = 12_345
    pairs = [(hub, i) for i in range(20_000) if i != hub] + [(20_000 + i, 20_001 + i) for i in range(10)]
    got, rounds = _labels(ray_local, pairs)
    assert {got[i] for i in range(20_000)} == {0}
    assert {got[20_000 + i] for i in range(11)} == {20_000}


def test_round_cap_fails_loudly(ray_local):
    pairs = [(i, i + 1) for i in range(200)]
    with pytest.raises(GlobalStepError, match="did not converge within 1 rounds"):
        _labels(ray_local, pairs, max_rounds=1)


def test_giant_bucket_is_split_across_partitions(ray_local):
    """50,000 copies in one band bucket: no partition holds more than a share of the bucket, and
    all copies end in one component."""
    import ray

    n = 50_000
    rows = pa.table({"node": np.arange(n, dtype=np.int64), "band": np.full(n, 42, np.int64)}, schema=BAND_ROWS)
    ops = RayDatasetOps(8)
    edges = ops.collect(candidate_edges(ops, ray.data.from_arrow(rows).repartition(4)))
    assert edges.num_rows == n - 1 and set(edges["u"].to_pylist()) <= set(range(16))
    # the salted shuffle spreads the bucket: each of its 16 sub-buckets is its own partition key
    from tokenmill.stages.dedup.components import salt_buckets
    salted = salt_buckets(rows)
    assert len(set(salted["bucket"].to_pylist())) == 16


def test_star_steps_on_one_partition(ray_local):
    triangle = pa.table({"u": [5, 5, 7], "v": [7, 9, 9]}, schema=EDGES)
    d = both_directions(triangle)
    # large star: every node's larger neighbours go to the smallest node of its neighbourhood (5)
    assert sorted(zip(*large_star(d).to_pydict().values())) == [(5, 7), (5, 9)]
    # small star at 9 (smaller neighbours 5 and 7): 7 and 9 both linked to 5
    d9 = pa.table({"a": [9, 9], "b": [5, 7]}, schema=DIRECTED)
    assert sorted(zip(*small_star(d9).to_pydict().values())) == [(5, 7), (5, 9)]


def test_pieces_round_trip(ray_local):
    t = pa.table({"node": pa.array(range(100), pa.int64()), "x": [str(i) for i in range(100)]})
    pieces = pack_partitions(t, "node", 4, src=1)
    assert pieces.num_rows == 4
    back = [unpack_partition(pieces.slice(i, 1), 2)[1] for i in range(4)]
    assert sorted(pa.concat_tables(back)["node"].to_pylist()) == list(range(100))
