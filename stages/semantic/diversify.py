"""D4's pruning step (Tirumala et al., 2023): after SemDeDup, the survivors are clustered again
and each cluster drops its most prototypical documents (closest to its centroid), keeping
``keep`` of them and at least ``min_per_cluster``. Pure functions over Arrow tables; the stage
joins them with the engine's dataset operations."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.stages.dedup.order import input_order_keys, with_input_order

from .kmeans import node_hash, pair_key
from .steps import COS, DECIDED, no_border

REASON = "semantic_prototype"
DKEY = "_dkey"


def survivors(rows: Optional[pa.Table], decided: Optional[pa.Table]) -> pa.Table:
    """One cluster partition: the key rows SemDeDup kept, with their ``sem_max_sim``."""
    if rows is None or decided is None or rows.num_rows == 0:
        return _empty(rows)
    kept = decided.filter(pc.is_null(decided["reject_reason"])).select(["node", "sem_max_sim"])
    return rows.join(kept, "node", join_type="inner").combine_chunks()


def _empty(rows: Optional[pa.Table]) -> pa.Table:
    if rows is None:
        return pa.table({"node": pa.array([], pa.int64())})
    return rows.slice(0, 0).append_column("sem_max_sim", pa.array([], pa.float32()))


def dropped_count(n: int, keep: float, floor: int) -> int:
    """How many of a cluster's ``n`` survivors go: (1 - keep) of them, leaving at least ``floor``."""
    return max(0, min(n - floor, math.floor((1.0 - keep) * n + 1e-9)))


def prune(rows: Optional[pa.Table], keep: float, floor: int) -> pa.Table:
    """One partition of re-clustered survivors (``_dkey``, ``_centroid_cos``): every row's decision,
    ``semantic_prototype`` on the most prototypical of each cluster (ties: the later in input
    order goes first)."""
    if rows is None or rows.num_rows == 0:
        return DECIDED.empty_table()
    rows = with_input_order(rows)
    later_first = [(name, "descending") for name, _ in input_order_keys()]
    rows = rows.take(pc.sort_indices(rows, [(DKEY, "ascending"), (COS, "descending"), *later_first]))
    keys = rows[DKEY].to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    gone = np.zeros(len(keys), bool)
    rank = np.zeros(len(keys), np.int32)
    size = np.zeros(len(keys), np.int32)
    for s, e in zip(starts, ends):
        gone[s:s + dropped_count(e - s, keep, floor)] = True
        rank[s:e] = np.arange(e - s)
        size[s:e] = e - s
    url = rows["url"] if "url" in rows.column_names else pa.nulls(rows.num_rows, pa.string())
    reasons = pc.if_else(pa.array(gone), pa.scalar(REASON), pa.scalar(None, pa.string()))
    return pa.table([rows["row_key"], reasons, rows["sem_max_sim"].cast(pa.float32()), rows["node"], rows["_group"],
                     rows[DKEY], rows["id"].cast(pa.string()), url, pa.array(rank, pa.int32()),
                     pa.array(size, pa.int32()), *no_border(rows.num_rows)], schema=DECIDED)


def removed_only(decided: pa.Table) -> pa.Table:
    return decided.filter(pc.is_valid(decided["reject_reason"]))


def with_dkey(rows: pa.Table) -> pa.Table:
    """The pruning clusters' key: (group, diversify cluster) as one int64."""
    key = node_hash(pair_key(rows["_group"].to_numpy(), rows["_dcluster"].to_numpy()).view(np.int64), 4)
    return rows.append_column(DKEY, pa.array(key.view(np.int64), pa.int64()))


def pruned_counts(decided: pa.Table) -> pa.Table:
    """Per group: survivors and how many were pruned."""
    gone = pc.is_valid(decided["reject_reason"]).cast(pa.int64())
    t = pa.table({"_group": decided["_group"], "n": pa.array(np.ones(decided.num_rows, np.int64)), "gone": gone})
    return t.group_by(["_group"]).aggregate([("n", "sum"), ("gone", "sum")]).rename_columns(["_group", "n", "gone"])
