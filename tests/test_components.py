"""Connected components on the engine's dataset operations (the local executor's, and Ray Data's in
the full suite): the algorithm of stages/dedup/components
against a union-find oracle; a 2,000-hop chain and a 20,000-node hub converge within the cap; a
round cap that is too small fails loudly instead of writing wrong clusters.

The algorithm's properties (chains, hubs) are checked on the local operations only: Ray Data's
operations are checked by the same oracle on random graphs with hubs, giant buckets and the
round cap (each round is several Ray Data operations: 15-50 s a test on 2 cores)."""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from tokenmill.engine.global_ops import GlobalStepError, pack_partitions, partition_ids, unpack_partition
from tokenmill.stages.dedup.components import (
    BAND_ROWS,
    DIRECTED,
    EDGES,
    HUB_DEGREE,
    both_directions,
    candidate_edges,
    connected_components,
    large_star,
    small_star,
    star_labels,
)
from tokenmill.stages.dedup.hubs import SALTED_KEY, Hubs, find_hubs, salted


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
def _sort_shuffle(request):
    if "datasets" in request.fixturenames and request.getfixturevalue("datasets").kind == "ray":
        request.getfixturevalue("sort_shuffle")   # the shuffle the executor picks for small runs
    yield


def _edges(datasets, pairs, blocks=3):
    u = np.array([p[0] for p in pairs], np.int64)
    v = np.array([p[1] for p in pairs], np.int64)
    return datasets.dataset(pa.table({"u": u, "v": v}, schema=EDGES), blocks)


def _labels(datasets, pairs, max_rounds=64, parts=4, hub_degree=HUB_DEGREE):
    ops = datasets.ops(parts)
    stars, rounds = connected_components(ops, _edges(datasets, pairs), max_rounds, hub_degree=hub_degree)
    table = ops.collect(ops.map(stars, star_labels))
    return dict(zip(table["node"].to_pylist(), table["label"].to_pylist())), rounds


def test_random_graphs_match_union_find(datasets):
    """With almost every node a hub (hub_degree 4: a node's edges spread over several calls)."""
    _random_graph(datasets, 4)


def test_random_graphs_without_hubs_match_union_find(local_datasets):
    _random_graph(local_datasets, HUB_DEGREE)


def _random_graph(datasets, hub_degree):
    rng = random.Random(7)
    pairs = [(rng.randrange(3000), rng.randrange(3000)) for _ in range(2500)]
    pairs = [(a, b) for a, b in pairs if a != b]
    got, rounds = _labels(datasets, pairs, hub_degree=hub_degree)
    want = dict(_oracle(pairs).items())
    assert got == want
    assert rounds <= 20


def test_chain_of_2000_is_one_cluster_in_few_rounds(local_datasets):
    order = list(range(2000))
    random.Random(3).shuffle(order)  # labels must travel 2,000 hops, in no helpful order
    pairs = list(zip(order, order[1:]))
    got, rounds = _labels(local_datasets, pairs)
    assert set(got.values()) == {0} and len(got) == 2000
    assert rounds <= 25, rounds


def test_hub_of_20000(local_datasets):
    hub = 12_345
    pairs = [(hub, i) for i in range(20_000) if i != hub] + [(20_000 + i, 20_001 + i) for i in range(10)]
    got, rounds = _labels(local_datasets, pairs)
    assert {got[i] for i in range(20_000)} == {0}
    assert {got[20_000 + i] for i in range(11)} == {20_000}


def test_hub_is_spread_over_partitions_and_still_one_cluster(local_datasets):
    """A node with 50,000 edges, whose neighbours also chain among themselves: with hub_degree
    5,000 its edges are cut into 10 slices hashed over 8 partitions (none holds more than a few
    slices, where unsalted one would hold all 50,000), and the labels equal union-find's."""
    datasets = local_datasets
    hub, n = 3, 50_000
    pairs = [(hub, 10 + i) for i in range(n)] + [(10 + i, 11 + i) for i in range(0, n, 7)] + [(1, 2)]
    ops = datasets.ops(8)
    directed = ops.map(_edges(datasets, pairs, blocks=6), both_directions)
    hubs = find_hubs(ops, directed, "a", "b", 5_000)
    assert hubs.keys.tolist() == [hub] and hubs.counts.tolist() == [n] and hubs.mins.tolist() == [10]
    assert hubs.slices.tolist() == [10]
    rows = ops.collect(ops.map(directed, salted, key="a", by="b", hubs=hubs))
    of_hub = rows.filter(pa.compute.equal(rows["a"], hub))
    per_part = np.bincount(partition_ids(of_hub[SALTED_KEY], 8), minlength=8)
    assert (per_part > 0).sum() >= 5 and per_part.max() <= 3 * 5_000 + 100, per_part
    got, _ = _labels(datasets, pairs, parts=8, hub_degree=5_000)
    assert got == _oracle(pairs)


def test_round_cap_fails_loudly(datasets):
    pairs = [(i, i + 1) for i in range(200)]
    with pytest.raises(GlobalStepError, match="did not converge within 1 rounds"):
        _labels(datasets, pairs, max_rounds=1)


@pytest.mark.parametrize("hub_degree", [HUB_DEGREE, 5_000])
def test_giant_bucket_is_split_across_partitions(datasets, hub_degree):
    """50,000 copies in one band bucket (and a bucket of 3): the giant bucket is a hub, cut into
    slices of hub_degree rows that each link to their own smallest copy, whose heads then link to
    the smallest of all; every copy ends in one component."""
    n = 50_000
    rows = pa.table({"node": np.r_[np.arange(n), [n, n + 1, n + 2]], "band": np.r_[np.full(n, 42), [7, 7, 7]]},
                    schema=BAND_ROWS)
    ops = datasets.ops(8)
    data = datasets.dataset(rows, 4)
    hubs = find_hubs(ops, data, "band", None, hub_degree)
    assert hubs.keys.tolist() == [42] and hubs.slices.tolist() == [-(-n // hub_degree)]
    edges = ops.collect(candidate_edges(ops, data, hub_degree))
    assert edges.num_rows == n - 1 + 2
    centers = set(edges["u"].to_pylist())
    assert n in centers and len(centers - {n}) <= hubs.slices[0]  # one head per slice at most
    got = _oracle(list(zip(edges["u"].to_pylist(), edges["v"].to_pylist())))
    assert set(got.values()) == {0, n} and sum(1 for v in got.values() if v == 0) == n


def test_star_steps_on_one_partition():
    triangle = pa.table({"u": [5, 5, 7], "v": [7, 9, 9]}, schema=EDGES)
    d = both_directions(triangle)
    # large star: every node's larger neighbours go to the smallest node of its neighbourhood (5)
    assert sorted(zip(*large_star(d).to_pydict().values())) == [(5, 7), (5, 9)]
    # small star at 9 (smaller neighbours 5 and 7): 7 and 9 both linked to 5
    d9 = pa.table({"a": [9, 9], "b": [5, 7]}, schema=DIRECTED)
    assert sorted(zip(*small_star(d9).to_pydict().values())) == [(5, 7), (5, 9)]
    # a hub's slice decides alone with the minimum found over all its rows: node 9's slice that
    # holds only neighbour 7 still links 7 and 9 to 5, and 9 itself only where its row holds 5
    hubs = Hubs(np.array([9]), np.array([2]), np.array([5]), np.array([2]))
    slice7 = pa.table({"a": [9], "b": [7]}, schema=DIRECTED)
    assert sorted(zip(*small_star(slice7, hubs).to_pydict().values())) == [(5, 7)]
    assert sorted(zip(*small_star(d9.slice(0, 1), hubs).to_pydict().values())) == [(5, 9)]


def test_pieces_round_trip():
    t = pa.table({"node": pa.array(range(100), pa.int64()), "x": [str(i) for i in range(100)]})
    pieces = pack_partitions(t, "node", 4, src=1)
    assert pieces.num_rows == 4
    back = [unpack_partition(pieces.slice(i, 1), 2)[1] for i in range(4)]
    assert sorted(pa.concat_tables(back)["node"].to_pylist()) == list(range(100))
