"""The document each near-duplicate component keeps, and the decision for every member.

Per component (label): keep one document by the rule (``first`` in input order: source, then
offset; or highest ``quality_score``, then first), reject the others as
``near_duplicate_of:<kept id>``; every member gets the component's size (``dup_cluster_size``). A
component that holds an indexed document of an earlier run keeps none: the indexed document wins.

A component too large for one call (a page copied a million times) is decided in slices: its
label is a hub (``hubs``), the driver finds its kept document from each block's best member and
its size from the counts, and every slice applies them (``heavy`` in ``choose_kept``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.schema import set_column

from .hubs import HubLog, find_hubs, partition_by
from .order import input_order_keys, with_input_order

CLUSTER_SIZE = "dup_cluster_size"
REASON_PREFIX = "near_duplicate_of:"
DECISIONS = pa.schema([("row_key", pa.string()), ("reject_reason", pa.string()), (CLUSTER_SIZE, pa.int32()),
                       ("node", pa.int64())])
#: what the driver passes every slice of a heavy component: its kept reference and size
HEAVY = pa.schema([("label", pa.int64()), ("kept_ref", pa.string()), ("kept_row_key", pa.string()),
                   ("size", pa.int32())])


def decide(ops, labeled, owners: list, keep: str, hub_degree: int, log: Optional[HubLog] = None):
    """Decisions for every member of ``labeled`` (node, label, row_key, id[, quality_score]);
    ``owners``: none, or one dataset of (label, indexed_id) for components with indexed documents;
    ``log`` hears of the components spread."""
    labeled = ops.materialize(labeled)
    hubs = (log or HubLog()).record(find_hubs(ops, labeled, "label", None, hub_degree))
    heavy = heavy_components(ops, labeled, owners, hubs, keep) if hubs is not None else None
    return partition_by(ops, [labeled] + owners, "label", ["node"] + [None] * len(owners), hubs, choose_kept,
                        keep=keep, heavy=heavy)


def heavy_components(ops, labeled, owners: list, hubs, keep: str) -> pa.Table:
    """For each heavy label: the kept reference (the indexed owner's id, or the best member's id),
    the kept member's row_key (null when an indexed document wins) and the size."""
    best = best_members(ops.collect(ops.map(labeled, best_members, labels=hubs.keys, keep=keep)), hubs.keys, keep)
    pos = pc.index_in(pa.array(hubs.keys, pa.int64()), best["label"])
    ids = pc.take(best["id"], pos).cast(pa.string())
    kept_row_key = pc.take(best["row_key"], pos)
    if owners:
        owned = ops.collect(ops.map(owners[0], _owners_of, labels=hubs.keys))
        if owned.num_rows:
            owned = owned.group_by("label").aggregate([("indexed_id", "min")])
            owner = pc.take(owned["indexed_id_min"], pc.index_in(pa.array(hubs.keys, pa.int64()), owned["label"]))
            ids = pc.coalesce(owner, ids)
            kept_row_key = pc.if_else(pc.is_valid(owner), pa.scalar(None, pa.string()), kept_row_key)
    return pa.table({"label": pa.array(hubs.keys, pa.int64()), "kept_ref": ids, "kept_row_key": kept_row_key,
                     "size": pa.array(hubs.counts.astype(np.int32), pa.int32())}, schema=HEAVY)


def _owners_of(owners: pa.Table, labels: np.ndarray) -> pa.Table:
    return owners.filter(pc.is_in(owners["label"], pa.array(labels, pa.int64()))).select(["label", "indexed_id"])


def _in_keep_order(labeled: pa.Table, keep: str) -> pa.Table:
    """Rows sorted by label, then by the keep rule: the first row of each label is the one kept."""
    columns = labeled.column_names
    sort = [("label", "ascending")]
    if keep == "quality_score":
        labeled = set_column(labeled, "_q", pc.fill_null(pc.negate(labeled["quality_score"].cast(pa.float64())),
                                                        float("inf")))
        sort.append(("_q", "ascending"))
    labeled = with_input_order(labeled)
    return labeled.take(pc.sort_indices(labeled, sort + input_order_keys())).select(columns)


def _firsts(labels: np.ndarray) -> np.ndarray:
    return np.r_[True, labels[1:] != labels[:-1]] if len(labels) else np.zeros(0, bool)


def best_members(labeled: pa.Table, labels: np.ndarray, keep: str) -> pa.Table:
    """The best member (by the keep rule) of each of ``labels`` among these rows; applied again to
    every block's best, the best of the component."""
    cols = ["label", "row_key", "id"] + (["quality_score"] if keep == "quality_score" else [])
    rows = labeled.select(cols).filter(pc.is_in(labeled["label"], pa.array(labels, pa.int64())))
    t = _in_keep_order(rows, keep)
    return t.filter(pa.array(_firsts(t["label"].to_numpy())))


def choose_kept(labeled: Optional[pa.Table], owners: Optional[pa.Table] = None, keep: str = "first",
                heavy: Optional[pa.Table] = None) -> pa.Table:
    """Decisions for one partition's members: components decided here, and slices of heavy ones
    (``heavy``: decided on the driver)."""
    if labeled is None or labeled.num_rows == 0 or "row_key" not in labeled.column_names:
        return DECISIONS.empty_table()
    if heavy is None:
        return _decide(labeled, owners, keep)
    is_heavy = pc.is_in(labeled["label"], heavy["label"])
    return pa.concat_tables([_decide(labeled.filter(pc.invert(is_heavy)), owners, keep),
                             _decide_heavy(labeled.filter(is_heavy), heavy)])


def _decide(labeled: pa.Table, owners: Optional[pa.Table], keep: str) -> pa.Table:
    """Components whose members are all in this call."""
    if labeled.num_rows == 0:
        return DECISIONS.empty_table()
    if owners is not None and owners.num_rows:
        labeled = _against_index(labeled, owners)
    t = _in_keep_order(labeled, keep)
    first = _firsts(t["label"].to_numpy())
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    sizes = np.diff(np.r_[starts, len(first)])
    kept_ids = pc.take(t["id"], pa.array(starts[group]))
    owner = t["_owner"] if "_owner" in t.column_names else pa.nulls(t.num_rows, pa.string())
    kept_ids = pc.coalesce(owner, kept_ids.cast(pa.string()))
    reasons = pc.binary_join_element_wise(pa.scalar(REASON_PREFIX), kept_ids, "")
    reasons = pc.if_else(pc.and_(pa.array(first), pc.is_null(owner)), pa.scalar(None, pa.string()), reasons)
    return _decisions(t, reasons, pa.array(sizes[group].astype(np.int32), pa.int32()))


def _decide_heavy(rows: pa.Table, heavy: pa.Table) -> pa.Table:
    """Slices of heavy components: their kept reference and size come from the driver."""
    if rows.num_rows == 0:
        return DECISIONS.empty_table()
    pos = pc.index_in(rows["label"], heavy["label"])
    kept = pc.fill_null(pc.equal(rows["row_key"], pc.take(heavy["kept_row_key"], pos)), False)
    reasons = pc.binary_join_element_wise(pa.scalar(REASON_PREFIX), pc.take(heavy["kept_ref"], pos), "")
    reasons = pc.if_else(kept, pa.scalar(None, pa.string()), reasons)
    return _decisions(rows, reasons, pc.take(heavy["size"], pos))


def _decisions(rows: pa.Table, reasons, sizes) -> pa.Table:
    return pa.table({"row_key": rows["row_key"], "reject_reason": reasons, CLUSTER_SIZE: sizes, "node": rows["node"]}, schema=DECISIONS)


def _against_index(labeled: pa.Table, owners: pa.Table) -> pa.Table:
    """``_owner``: the indexed document's id for members of a component that holds one."""
    owners = owners.group_by("label").aggregate([("indexed_id", "min")])
    pos = pc.index_in(labeled["label"], owners["label"])
    return labeled.append_column("_owner", pc.take(owners["indexed_id_min"], pos))
