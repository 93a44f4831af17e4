"""Candidate pairs and connected components for near-duplicate removal, as pure functions over
Arrow tables joined by the engine's operations (``engine/global_ops.DatasetOps``).

Nodes are int64 document ids. The steps:

1. **Buckets -> edges.** Rows (node, band key) meet per band key; each bucket links its members
   to its smallest member (star edges). A giant bucket (50,000 copies of one page) never lands
   whole on one worker: it is a hub (``hubs``), its rows are spread over slices of ``hub_degree``,
   each slice links to its own smallest member and sends that head on, and a second shuffle, by
   band key, links the heads to the smallest.
2. **Connected components** with alternating large-star / small-star rounds (Kiveris et al.,
   "Connected Components in MapReduce and Beyond", SoCC 2014): each step is one shuffle by node,
   the components converge to stars around their smallest node in O(log n) rounds in practice
   (O(log^2 n) proven). A round that leaves the edge set unchanged (same count and 64-bit sum of
   edge hashes) is the fixpoint; a run that reaches ``max_rounds`` first raises
   ``GlobalStepError`` rather than writing wrong clusters.
3. **Labels**: at the fixpoint every edge is (smallest node, member).

Memory per worker is bounded by its partition: no bucket, node or component with more than
``hub_degree`` rows meets whole in one call (``hubs``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.global_ops import GlobalStepError

from .hubs import HubLog, Hubs, as_numpy, find_hubs, mix64, partition_by

EDGES = pa.schema([("u", pa.int64()), ("v", pa.int64())])
DIRECTED = pa.schema([("a", pa.int64()), ("b", pa.int64())])
BAND_ROWS = pa.schema([("node", pa.int64()), ("band", pa.int64())])
#: bucket step output: edges (u, v) and the head of each slice of a giant bucket (v null, band set)
LEVEL1 = pa.schema([("u", pa.int64()), ("v", pa.int64()), ("band", pa.int64())])
LABELS = pa.schema([("node", pa.int64()), ("label", pa.int64())])
FINGERPRINT = pa.schema([("edges", pa.int64()), ("hash_sum", pa.uint64())])
#: a bucket, node or component with more rows than this is spread over several calls (160 KB of edges)
HUB_DEGREE = 10_000


def _edges(u: np.ndarray, v: np.ndarray) -> pa.Table:
    """Undirected edges (smaller, larger), self-loops dropped, each edge once."""
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    keep = lo != hi
    pairs = np.unique(np.stack([lo[keep], hi[keep]], axis=1), axis=0) if keep.any() else np.empty((0, 2), np.int64)
    return pa.table({"u": pa.array(pairs[:, 0], pa.int64()), "v": pa.array(pairs[:, 1], pa.int64())}, schema=EDGES)


# -- 1. buckets -> edges ---------------------------------------------------------------------------
def band_rows(keys: pa.Table, bands: str, carry: list[str]) -> pa.Table:
    """One row per band key of each document (a null list gives none): ``band`` and the ``carry``
    columns of the document's row."""
    col = keys[bands].combine_chunks() if isinstance(keys[bands], pa.ChunkedArray) else keys[bands]
    rows = keys.select(carry).take(pc.list_parent_indices(col))
    return rows.append_column("band", pc.list_flatten(col))


def _group_min(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(for each row, the minimum value of its key group; the index of each group's first row)."""
    order = np.lexsort((values, keys))
    k, v = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    group = np.cumsum(np.r_[True, k[1:] != k[:-1]]) - 1
    mins = np.empty_like(values)
    mins[order] = v[starts][group]
    return mins, order[starts]


def bucket_edges(rows: Optional[pa.Table], hubs: Optional[Hubs] = None) -> pa.Table:
    """One partition of band rows -> star edges to each bucket's smallest node here; for a giant
    bucket (a hub, spread over several calls), also the head of its slice here as a row
    (u = head, v = null, band), to be linked to the other slices' heads."""
    if rows is None or rows.num_rows == 0:
        return LEVEL1.empty_table()
    node, band = as_numpy(rows["node"]), as_numpy(rows["band"])
    mins, firsts = _group_min(band, node)
    edges = _edges(node, mins)
    edges = pa.table({"u": edges["u"], "v": edges["v"], "band": pa.nulls(edges.num_rows, pa.int64())}, schema=LEVEL1)
    if hubs is None:
        return edges
    firsts = firsts[hubs.lookup(band[firsts])[0]]
    heads = pa.table({"u": pa.array(node[firsts], pa.int64()), "v": pa.nulls(len(firsts), pa.int64()),
                      "band": pa.array(band[firsts], pa.int64())}, schema=LEVEL1)
    return pa.concat_tables([edges, heads])


def level1_edges(level1: pa.Table) -> pa.Table:
    return level1.filter(pc.is_valid(level1["v"])).select(["u", "v"]).cast(EDGES)


def level1_heads(level1: pa.Table) -> pa.Table:
    heads = level1.filter(pc.is_null(level1["v"]))
    return pa.table({"node": heads["u"], "band": heads["band"]}, schema=BAND_ROWS)


def head_edges(heads: Optional[pa.Table]) -> pa.Table:
    """One partition of sub-bucket heads -> star edges to each bucket's smallest head."""
    if heads is None or heads.num_rows == 0:
        return EDGES.empty_table()
    node, band = as_numpy(heads["node"]), as_numpy(heads["band"])
    mins, _ = _group_min(band, node)
    return _edges(node, mins)


# -- 2. connected components -------------------------------------------------------------------------
def both_directions(edges: pa.Table) -> pa.Table:
    """Undirected edges -> directed (a, b) both ways, so each node's partition sees all its edges."""
    u, v = edges["u"], edges["v"]
    return pa.table({"a": pa.concat_arrays([_arr(u), _arr(v)]), "b": pa.concat_arrays([_arr(v), _arr(u)])},
                    schema=DIRECTED)


def _arr(col) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def toward_smaller(edges: pa.Table) -> pa.Table:
    """Undirected edges -> directed (larger, smaller): all that a small-star step reads."""
    u, v = as_numpy(edges["u"]), as_numpy(edges["v"])
    return pa.table({"a": pa.array(np.maximum(u, v), pa.int64()), "b": pa.array(np.minimum(u, v), pa.int64())},
                    schema=DIRECTED)


def _neighbour_min(a: np.ndarray, b: np.ndarray, hubs: Optional[Hubs]) -> np.ndarray:
    """For each row, the smallest b of its node a: over this call's rows, or for a hub (whose rows
    are spread over several calls) the one found over all of them."""
    mins, _ = _group_min(a, b)
    if hubs is not None:
        heavy, at = hubs.lookup(a)
        mins[heavy] = hubs.mins[at[heavy]]
    return mins


def large_star(d: Optional[pa.Table], hubs: Optional[Hubs] = None) -> pa.Table:
    """For each node a with m = min(a, its neighbours): every larger neighbour b is re-linked to m."""
    if d is None or d.num_rows == 0:
        return EDGES.empty_table()
    a, b = as_numpy(d["a"]), as_numpy(d["b"])
    m = np.minimum(a, _neighbour_min(a, b, hubs))
    larger = b > a
    return _edges(b[larger], m[larger])


def small_star(d: Optional[pa.Table], hubs: Optional[Hubs] = None) -> pa.Table:
    """For each node a with its smaller neighbours S and m = min(S): every node of S and a itself
    is linked to m (a by the row that holds m, so a hub's slices link it once)."""
    if d is None or d.num_rows == 0:
        return EDGES.empty_table()
    a, b = as_numpy(d["a"]), as_numpy(d["b"])
    smaller = b < a
    a, b = a[smaller], b[smaller]
    if len(a) == 0:
        return EDGES.empty_table()
    m = _neighbour_min(a, b, hubs)
    at_min = b == m
    return _edges(np.r_[b, a[at_min]], np.r_[m, m[at_min]])


def star_step(ops, directed, step, hub_degree: int, log: HubLog):
    """One large-star or small-star step: a shuffle of the directed edges by node, hubs spread."""
    hubs = log.record(find_hubs(ops, directed, "a", "b", hub_degree))
    return partition_by(ops, [directed], "a", ["b"], hubs, step, hubs=hubs)


def fingerprint(edges: pa.Table) -> pa.Table:
    """(edge count, 64-bit sum of edge hashes) of a block: equal sets give equal sums."""
    if edges.num_rows == 0:
        return pa.table({"edges": [0], "hash_sum": pa.array([0], pa.uint64())}, schema=FINGERPRINT)
    with np.errstate(over="ignore"):
        h = mix64(as_numpy(edges["u"])) ^ mix64(mix64(as_numpy(edges["v"])))
        total = np.add.reduce(h, dtype=np.uint64)
    return pa.table({"edges": [edges.num_rows], "hash_sum": pa.array([total], pa.uint64())}, schema=FINGERPRINT)


def _total(ops, edges) -> tuple[int, int]:
    t = ops.collect(ops.map(edges, fingerprint))
    if t.num_rows == 0:
        return 0, 0
    with np.errstate(over="ignore"):
        return int(pc.sum(t["edges"]).as_py() or 0), int(np.add.reduce(as_numpy(t["hash_sum"]), dtype=np.uint64))


def connected_components(ops, edges, max_rounds: int = 64, on_round: Optional[Callable[[int, int], None]] = None,
                         hub_degree: int = HUB_DEGREE, log: Optional[HubLog] = None):
    """Star edges (smallest node of the component, member) at the fixpoint, and the rounds it took.
    Each round: large-star then small-star, one shuffle by node each (a node with more than
    ``hub_degree`` edges spread over several calls). ``on_round(round, edges)`` hears the edge
    count before the first round (round 0: the candidate edges) and after each; ``log`` hears of
    the hubs spread."""
    log = log if log is not None else HubLog()
    edges = ops.materialize(edges)
    before = _total(ops, edges)
    if on_round is not None:
        on_round(0, before[0])
    for rounds in range(1, max_rounds + 1):
        edges = ops.materialize(star_step(ops, ops.map(edges, both_directions), large_star, hub_degree, log))
        edges = ops.materialize(star_step(ops, ops.map(edges, toward_smaller), small_star, hub_degree, log))
        after = _total(ops, edges)
        if on_round is not None:
            on_round(rounds, after[0])
        if after == before:
            return edges, rounds
        before = after
    raise GlobalStepError(f"connected components did not converge within {max_rounds} rounds "
                          f"({before[0]} edges left); raise max_rounds or check the input")


def star_labels(stars: pa.Table) -> pa.Table:
    """At the fixpoint each edge is (center, member): the member's label is the center, and each
    center labels itself."""
    u, v = as_numpy(stars["u"]), as_numpy(stars["v"])
    nodes = np.r_[v, np.unique(u)] if len(u) else np.empty(0, np.int64)
    labels = np.r_[u, np.unique(u)] if len(u) else np.empty(0, np.int64)
    return pa.table({"node": pa.array(nodes, pa.int64()), "label": pa.array(labels, pa.int64())}, schema=LABELS)


def candidate_edges(ops, band_rows, hub_degree: int = HUB_DEGREE, log: Optional[HubLog] = None) -> object:
    """Band rows (node, band) -> undirected candidate edges: one shuffle by band key; a giant
    bucket is spread over several calls, and a second, small shuffle links its slices' heads."""
    hubs = (log or HubLog()).record(find_hubs(ops, band_rows, "band", None, hub_degree))
    level1 = partition_by(ops, [band_rows], "band", ["node"], hubs, bucket_edges, hubs=hubs)
    if hubs is None:
        return ops.map(level1, level1_edges)
    level1 = ops.materialize(level1)
    heads = ops.map(level1, level1_heads)
    return ops.union([ops.map(level1, level1_edges), ops.partition_map([heads], "band", head_edges)])
