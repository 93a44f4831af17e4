"""The pure functions of ``semantic_dedup``'s global step, over Arrow tables of key rows
(node, row_key, id, url, sem_language, sem_embedding [, quality_score]).

group rows -> count per group -> sample -> k-means per group (driver) -> assign -> count per
cluster -> split giant clusters (sample, k-means, assign again) -> [per pair of clusters, the
documents near their border (``boundary.py``)] -> per cluster SemDeDup (``semdedup.py``, with
what the border pass found: ``chains.py``) -> decisions and what the report shows.
"""
from __future__ import annotations

import zlib
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.schema import set_column
from tokenmill.stages.dedup.order import input_order_keys, with_input_order

from . import chains, kmeans, semdedup, vectors

EMBEDDING, LANGUAGE, MAX_SIM = "sem_embedding", "sem_language", "sem_max_sim"
GROUP, CLUSTER, SUB, KEY, COS = "_group", "_cluster", "_sub", "_ckey", "_centroid_cos"
NEAR, MARGIN, BOUNDARY = "_near", "_margin", "_boundary"
SUB_NEAR, SUB_MARGIN = "_sub_near", "_sub_margin"
REASON_PREFIX = "semantic_duplicate_of:"
DECISIONS = pa.schema([("row_key", pa.string()), ("reject_reason", pa.string()), (MAX_SIM, pa.float32()),
                       ("node", pa.int64())])
#: decided rows: the decisions, what the report shows (cluster, id, url, rank and size in it), and
#: what the boundary pass resolves (near a boundary; removed across one; the node the row's name
#: comes from; whether that name is still open: see ``boundary.py``)
DECIDED = pa.schema(list(DECISIONS) + [(GROUP, pa.int64()), (KEY, pa.int64()), ("_id", pa.string()),
                                       ("_url", pa.string()), ("_rank", pa.int32()), ("_size", pa.int32()),
                                       ("_boundary", pa.bool_()), ("_across", pa.bool_()), ("_to", pa.int64()),
                                       ("_open", pa.bool_())])


def group_id(languages: pa.Array) -> np.ndarray:
    """A stable int64 per language name."""
    langs = pc.fill_null(languages.cast(pa.string()), "und")
    uniq = pc.unique(langs)
    ids = np.array([zlib.crc32(s.encode()) for s in uniq.to_pylist()], np.int64)
    return ids[pc.index_in(langs, uniq).to_numpy(zero_copy_only=False)] if len(uniq) else np.zeros(0, np.int64)


def with_group(keys: pa.Table) -> pa.Table:
    return keys.append_column(GROUP, pa.array(group_id(keys[LANGUAGE].combine_chunks()), pa.int64()))


def counts_by(rows: pa.Table, columns: list[str]) -> pa.Table:
    """Rows per value of ``columns`` in this block (``n``); ``sum_counts`` adds the blocks up."""
    return rows.group_by(columns).aggregate([("node", "count")]).rename_columns([*columns, "n"])


def group_counts(rows: pa.Table) -> pa.Table:
    return counts_by(rows, [GROUP, LANGUAGE])


def sum_counts(table: pa.Table, by: list[str]) -> pa.Table:
    return table.group_by(by).aggregate([("n", "sum")]).rename_columns([*by, "n"])


def sample_rows(rows: pa.Table, rates: dict, by: str = GROUP) -> pa.Table:
    """Rows of each group (or cluster) in its sample: (by, node, embedding); ``rates``: {id: rate}."""
    ids = rows[by].to_numpy()
    rate = np.array([rates.get(int(g), 0.0) for g in ids], np.float64) if len(ids) else np.zeros(0)
    nodes = rows["node"].to_numpy()
    pick = np.zeros(len(ids), bool)
    for r in np.unique(rate[rate > 0]):
        m = rate == r
        pick[m] = kmeans.sampled(nodes[m], float(r))
    return rows.filter(pa.array(pick)).select([by, "node", EMBEDDING])


def fit_groups(sample: pa.Table, ks: dict, by: str, seed: int, iterations: int) -> dict[int, np.ndarray]:
    """Centroids per group of a collected sample, each fitted on its rows sorted by node hash."""
    out = {}
    if sample.num_rows == 0:
        return out
    dim = embedding_dim(sample[EMBEDDING])
    ids = sample[by].to_numpy()
    nodes = sample["node"].to_numpy()
    for g in np.unique(ids):
        idx = np.flatnonzero(ids == g)
        idx = idx[np.lexsort((nodes[idx], kmeans.node_hash(nodes[idx], 2)))]
        x = vectors.decode(sample[EMBEDDING].take(pa.array(idx)), dim)
        out[int(g)] = kmeans.fit(x, ks[int(g)], seed, iterations)
    return out


def embedding_dim(column) -> int:
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.binary_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise ValueError("semantic_dedup: embeddings of different sizes in one run (the encoder changed?)")
    return int(lengths[0]) // 2 if len(lengths) else 0


def assign_rows(rows: pa.Table, centroids: dict, by: str = GROUP, out: str = CLUSTER, second: bool = False,
                near_out: str = NEAR, margin_out: str = MARGIN) -> pa.Table:
    """``rows`` with their nearest centroid of their group (``out``) and the cosine to it
    (``_centroid_cos``); with ``second``, also the second-nearest centroid (``near_out``, -1 where
    there is none) and how much nearer the nearest is (``margin_out``, a cosine difference)."""
    n = rows.num_rows
    label, near = np.zeros(n, np.int32), np.full(n, -1, np.int32)
    cos = rows[COS].to_numpy(zero_copy_only=False).copy() if COS in rows.column_names else np.zeros(n, np.float32)
    cos2 = np.full(n, -np.inf, np.float32)
    if n:
        ids = rows[by].to_numpy()
        x = vectors.decode(rows[EMBEDDING], embedding_dim(rows[EMBEDDING]))
        for g, c in centroids.items():
            idx = np.flatnonzero(ids == g)
            if len(idx):
                label[idx], cos[idx], near[idx], cos2[idx] = kmeans.assign_two(x[idx], c, second=second)
    rows = set_column(rows, out, pa.array(label, pa.int32()))
    rows = set_column(rows, COS, pa.array(cos.astype(np.float32), pa.float32()))
    if not second:
        return rows
    margin = cos.astype(np.float64) - cos2.astype(np.float64)
    rows = set_column(rows, near_out, pa.array(near, pa.int32()))
    return set_column(rows, margin_out, pa.array(margin.astype(np.float32), pa.float32()))


def cluster_ids(rows: pa.Table) -> pa.Table:
    """``rows`` with ``_ckey``: one int64 per (group, cluster) and per sub-cluster of a split one;
    and ``_gcluster``: (group, cluster) as one int64, what a split is keyed by."""
    gc = kmeans.pair_key(rows[GROUP].to_numpy(), rows[CLUSTER].to_numpy())
    s = rows[SUB].to_numpy().astype(np.uint64) if SUB in rows.column_names else np.zeros(len(gc), np.uint64)
    with np.errstate(over="ignore"):
        key = kmeans.node_hash((gc * np.uint64(0x9E3779B1) ^ s).view(np.int64), 3)
    rows = set_column(rows, "_gcluster", pa.array(gc.view(np.int64), pa.int64()))
    return set_column(rows, KEY, pa.array(key.view(np.int64), pa.int64()))


def keep_order(rows: pa.Table, keep: str, by: str = KEY) -> pa.Table:
    """``rows`` sorted by cluster (``by``), then by the keep rule (ties: input order). Within any
    set of clusters it is one order: that of (earlier runs first, the rule, input order)."""
    rows = with_input_order(rows)
    rule = {"hard": [(COS, "ascending")], "easy": [(COS, "descending")], "first": [],
            "quality_score": [("quality_score", "descending")]}[keep]
    first = [("_indexed", "descending")] if "_indexed" in rows.column_names else []   # earlier runs' documents
    return rows.take(pc.sort_indices(rows, sort_keys=[(by, "ascending"), *first, *rule, *input_order_keys(),
                                                      ("id", "ascending")]))


def earlier_rows(indexed: np.ndarray) -> int:
    """How many rows of a run in keep order are earlier runs' (they come first: ``keep_order``)."""
    k = int(indexed.sum())
    if indexed[:k].sum() != k:
        raise ValueError("semantic_dedup: earlier runs' documents are not first in their cluster")
    return k


def runs_of(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of equal values in a sorted array."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
    return starts, np.r_[starts[1:], len(keys)].astype(np.int64)


def dedup_clusters(rows: Optional[pa.Table], across: Optional[pa.Table] = None, *, eps: float, keep: str,
                   block: int) -> pa.Table:
    """One partition: every new row's ``sem_max_sim`` and, for the removed,
    ``semantic_duplicate_of:<kept id>``. Rows of earlier runs (``_indexed``) come first in their
    cluster, count as earlier documents and are never removed nor decided on. ``across``: what the
    boundary pass found for this partition's rows (``boundary.py``); a row whose chain of closest
    earlier documents leaves its cluster is marked ``_open`` and named by ``boundary.resolve``."""
    if rows is None or rows.num_rows == 0:
        return DECIDED.empty_table()
    rows = keep_order(rows, keep)
    n = rows.num_rows
    x = vectors.decode(rows[EMBEDDING], embedding_dim(rows[EMBEDDING]))
    indexed = rows["_indexed"].to_numpy(zero_copy_only=False) if "_indexed" in rows.column_names else np.zeros(n, bool)
    best, arg = np.zeros(n, np.float32), np.full(n, -1, np.int64)
    rank, size = np.zeros(n, np.int32), np.zeros(n, np.int32)
    readable = np.flatnonzero(np.any(x != 0, axis=1))   # a zero embedding's cosines are all 0: it takes no part
    for s, e in zip(*runs_of(rows[KEY].to_numpy())):
        idx = readable[np.searchsorted(readable, s):np.searchsorted(readable, e)]
        best[idx], a = semdedup.max_similarity(x[idx], block, first=earlier_rows(indexed[idx]))
        arg[idx] = np.where(a >= 0, idx[np.maximum(a, 0)], -1)
        rank[s:e], size[s:e] = np.arange(e - s), e - s
    far = chains.merge(rows, best, across)
    gone = semdedup.removed(best, eps) & ~indexed
    named, to, opened = chains.chains(rows, arg, gone, far)
    reasons = pc.binary_join_element_wise(pa.scalar(REASON_PREFIX), named, "")
    reasons = pc.if_else(pa.array(gone), reasons, pa.scalar(None, pa.string()))
    url = rows["url"] if "url" in rows.column_names else pa.nulls(n, pa.string())
    on_border = rows[BOUNDARY] if BOUNDARY in rows.column_names else pa.array(np.zeros(n, bool))
    out = pa.table([rows["row_key"], reasons, pa.array(best, pa.float32()), rows["node"], rows[GROUP], rows[KEY],
                    rows["id"].cast(pa.string()), url, pa.array(rank, pa.int32()), pa.array(size, pa.int32()),
                    on_border, pa.array(far.won & gone), pa.array(np.where(gone, to, 0), mask=~gone), pa.array(opened)],
                   schema=DECIDED)
    return out.filter(pa.array(~indexed)) if indexed.any() else out


def no_border(n: int) -> list[pa.Array]:
    """DECIDED's boundary columns for ``n`` rows decided without the boundary pass."""
    no = pa.array(np.zeros(n, bool))
    return [no, no, pa.nulls(n, pa.int64()), no]


def decisions(decided: pa.Table) -> pa.Table:
    return decided.select(DECISIONS.names)


def eps_counts(decided: pa.Table, eps_list: tuple) -> pa.Table:
    """Per group: documents and how many ``max_sim`` would remove at each eps."""
    sims = decided[MAX_SIM].to_numpy(zero_copy_only=False)
    groups = decided[GROUP].to_numpy()
    rows = {"group": [], "eps": [], "removed": [], "n": []}
    for g in np.unique(groups):
        s = sims[groups == g]
        for eps in eps_list:
            rows["group"].append(int(g))
            rows["eps"].append(float(eps))
            rows["removed"].append(int((s > 1.0 - eps).sum()))
            rows["n"].append(len(s))
    return pa.table({"group": pa.array(rows["group"], pa.int64()), "eps": pa.array(rows["eps"], pa.float64()),
                     "removed": pa.array(rows["removed"], pa.int64()), "n": pa.array(rows["n"], pa.int64())})


def examples(decided: pa.Table, ckeys: list[int], per: int) -> pa.Table:
    """The first ``per`` documents (in keep order) of the clusters ``ckeys`` in this block."""
    rows = decided.filter(pc.is_in(decided[KEY], pa.array(ckeys, pa.int64())))
    rows = rows.take(pc.sort_indices(rows, [(KEY, "ascending"), ("_rank", "ascending")]))
    keys = rows[KEY].to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
    position = np.arange(len(keys)) - np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    return rows.filter(pa.array(position < per)).select([GROUP, KEY, "_rank", "_size", "_id", "_url", MAX_SIM,
                                                          "reject_reason"])


def largest(decided: pa.Table, top: int) -> pa.Table:
    """Each block's ``top`` largest clusters: (key, group, size)."""
    sizes = decided.group_by([KEY, GROUP]).aggregate([("_size", "max")]).rename_columns([KEY, GROUP, "_size"])
    return sizes.take(pc.sort_indices(sizes, [("_size", "descending"), (KEY, "ascending")])).slice(0, top)
