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

from .guard import BROKEN, KEEPER, OWNER, SKETCH_COLUMN, SPLIT, UNCHECKED, estimate, guard_members, sketch_matrix
from .hubs import HubLog, find_hubs, partition_by
from .order import input_order_keys, with_input_order

CLUSTER_SIZE = "dup_cluster_size"
REASON_PREFIX = "near_duplicate_of:"
DECISIONS = pa.schema([("row_key", pa.string()), ("reject_reason", pa.string()), (CLUSTER_SIZE, pa.int32()),
                       ("node", pa.int64())])
#: what the step reports from (dropped before decisions are written): the component, the member's
#: id, source and url, how the guard checked it (``guard.py`` codes) and its estimate to the kept one
REPORTED = pa.schema([("_label", pa.int64()), ("_id", pa.string()), ("_source", pa.string()), ("_url", pa.string()),
                      ("_guard", pa.int8()), ("_jaccard", pa.float32())])
FULL_DECISIONS = pa.schema(list(DECISIONS) + list(REPORTED))
#: what the driver passes every slice of a heavy component: its kept reference, size and sketch
HEAVY = pa.schema([("label", pa.int64()), ("kept_ref", pa.string()), ("kept_row_key", pa.string()),
                   ("size", pa.int32()), ("kept_sketch", pa.binary())])


def decide(ops, labeled, owners: list, keep: str, hub_degree: int, log: Optional[HubLog] = None,
           guard: float = 0.0, hops: int = 2):
    """Decisions (``FULL_DECISIONS``) for every member of ``labeled`` (node, label, row_key, id
    [, quality_score, source, url, minhash_sketch]); ``owners``: none, or one dataset of (label,
    indexed_id) for components with indexed documents; ``log`` hears of the components spread;
    ``guard`` > 0: members checked against the kept document (``guard.py``)."""
    labeled = ops.materialize(labeled)
    hubs = (log or HubLog()).record(find_hubs(ops, labeled, "label", None, hub_degree))
    heavy = heavy_components(ops, labeled, owners, hubs, keep) if hubs is not None else None
    return partition_by(ops, [labeled] + owners, "label", ["node"] + [None] * len(owners), hubs, choose_kept,
                        keep=keep, heavy=heavy, guard=guard, hops=hops)


def heavy_components(ops, labeled, owners: list, hubs, keep: str) -> pa.Table:
    """For each heavy label: the kept reference (the indexed owner's id, or the best member's id),
    the kept member's row_key (null when an indexed document wins) and the size."""
    best = best_members(ops.collect(ops.map(labeled, best_members, labels=hubs.keys, keep=keep)), hubs.keys, keep)
    pos = pc.index_in(pa.array(hubs.keys, pa.int64()), best["label"])
    ids = pc.take(best["id"], pos).cast(pa.string())
    kept_row_key = pc.take(best["row_key"], pos)
    kept_sketch = (pc.take(best[SKETCH_COLUMN], pos).cast(pa.binary()) if SKETCH_COLUMN in best.column_names
                   else pa.nulls(len(hubs.keys), pa.binary()))
    if owners:
        owned = ops.collect(ops.map(owners[0], _owners_of, labels=hubs.keys))
        if owned.num_rows:
            owned = owned.group_by("label").aggregate([("indexed_id", "min")])
            owner = pc.take(owned["indexed_id_min"], pc.index_in(pa.array(hubs.keys, pa.int64()), owned["label"]))
            ids = pc.coalesce(owner, ids)
            kept_row_key = pc.if_else(pc.is_valid(owner), pa.scalar(None, pa.string()), kept_row_key)
            kept_sketch = pc.if_else(pc.is_valid(owner), pa.scalar(None, pa.binary()), kept_sketch)
    return pa.table({"label": pa.array(hubs.keys, pa.int64()), "kept_ref": ids, "kept_row_key": kept_row_key,
                     "size": pa.array(hubs.counts.astype(np.int32), pa.int32()), "kept_sketch": kept_sketch},
                    schema=HEAVY)


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
    cols += [SKETCH_COLUMN] if SKETCH_COLUMN in labeled.column_names else []
    rows = labeled.select(cols).filter(pc.is_in(labeled["label"], pa.array(labels, pa.int64())))
    t = _in_keep_order(rows, keep)
    return t.filter(pa.array(_firsts(t["label"].to_numpy())))


def choose_kept(labeled: Optional[pa.Table], owners: Optional[pa.Table] = None, keep: str = "first",
                heavy: Optional[pa.Table] = None, guard: float = 0.0, hops: int = 2) -> pa.Table:
    """Decisions for one partition's members: components decided here, and slices of heavy ones
    (``heavy``: decided on the driver)."""
    if labeled is None or labeled.num_rows == 0 or "row_key" not in labeled.column_names:
        return FULL_DECISIONS.empty_table()
    if heavy is None:
        return _decide(labeled, owners, keep, guard, hops)
    is_heavy = pc.is_in(labeled["label"], heavy["label"])
    return pa.concat_tables([_decide(labeled.filter(pc.invert(is_heavy)), owners, keep, guard, hops),
                             _decide_heavy(labeled.filter(is_heavy), heavy, guard)])


def _decide(labeled: pa.Table, owners: Optional[pa.Table], keep: str, guard: float = 0.0, hops: int = 2) -> pa.Table:
    """Components whose members are all in this call."""
    if labeled.num_rows == 0:
        return FULL_DECISIONS.empty_table()
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
    indexed = pc.is_valid(owner).to_numpy(zero_copy_only=False)
    reasons = pc.if_else(pc.and_(pa.array(first), pa.array(~indexed)), pa.scalar(None, pa.string()), reasons)
    code = np.full(t.num_rows, UNCHECKED, np.int8)
    jac = np.full(t.num_rows, np.nan, np.float32)
    if guard > 0 and SKETCH_COLUMN in t.column_names:
        code, jac, reasons = _guarded(t, starts, group, indexed, guard, hops, reasons)
    return _decisions(t, reasons, pa.array(sizes[group].astype(np.int32), pa.int32()), code, jac)


def _guarded(t: pa.Table, starts: np.ndarray, group: np.ndarray, indexed: np.ndarray, guard: float, hops: int,
             reasons) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """The guard over rows in keep order (``guard.py``): codes, estimates and the reasons they
    give. A component an indexed document wins is checked against its sketch; one whose indexed
    document has no sketch (an index of an earlier version) is left as it was: unchecked."""
    sketches = sketch_matrix(t[SKETCH_COLUMN])
    owner = None
    no_sketch = np.zeros(len(starts), bool)
    if indexed.any():
        owner_col = (t["_owner_sketch"] if "_owner_sketch" in t.column_names
                     else pa.nulls(t.num_rows, pa.binary())).take(pa.array(starts))
        owner = sketch_matrix(owner_col, sketches.shape[1])
        no_sketch = indexed[starts] & ~pc.is_valid(owner_col).to_numpy(zero_copy_only=False)
        if not owner.shape[1]:
            owner = np.zeros((len(starts), sketches.shape[1]), np.uint16)
    code, keeper, jac = guard_members(sketches, starts, guard, hops, owner)
    ids = t["id"].cast(pa.string())
    behind = pc.binary_join_element_wise(pa.scalar(REASON_PREFIX), pc.take(ids, pa.array(np.maximum(keeper, 0))), "")
    own = (code == KEEPER) | (code == SPLIT) | (code == BROKEN)
    guarded = pc.if_else(pa.array(keeper == OWNER), reasons, behind)        # the owner's reason as it was
    guarded = pc.if_else(pa.array(own), pa.scalar(None, pa.string()), guarded)
    skip = no_sketch[group]
    code[skip], jac[skip] = UNCHECKED, np.nan
    return code, jac, pc.if_else(pa.array(skip), reasons, guarded)


def _decide_heavy(rows: pa.Table, heavy: pa.Table, guard: float = 0.0) -> pa.Table:
    """Slices of heavy components: their kept reference, size and sketch come from the driver;
    the guard checks hop 1 only."""
    if rows.num_rows == 0:
        return FULL_DECISIONS.empty_table()
    pos = pc.index_in(rows["label"], heavy["label"])
    kept = pc.fill_null(pc.equal(rows["row_key"], pc.take(heavy["kept_row_key"], pos)), False)
    reasons = pc.binary_join_element_wise(pa.scalar(REASON_PREFIX), pc.take(heavy["kept_ref"], pos), "")
    reasons = pc.if_else(kept, pa.scalar(None, pa.string()), reasons)
    code = np.full(rows.num_rows, UNCHECKED, np.int8)
    jac = np.full(rows.num_rows, np.nan, np.float32)
    kept_sketch = pc.take(heavy["kept_sketch"], pos)
    checked = pc.is_valid(kept_sketch).to_numpy(zero_copy_only=False)   # null: an indexed document wins
    if guard > 0 and SKETCH_COLUMN in rows.column_names and checked.any():
        idx = np.flatnonzero(checked)
        est = estimate(sketch_matrix(rows[SKETCH_COLUMN].take(pa.array(idx))),
                       sketch_matrix(kept_sketch.take(pa.array(idx))))
        is_kept = kept.to_numpy(zero_copy_only=False)[idx]
        jac[idx] = np.where(is_kept, 1.0, est)
        code[idx] = np.where(is_kept, KEEPER, np.where(est >= guard, 1, BROKEN))
        reasons = pc.if_else(pa.array(code == BROKEN), pa.scalar(None, pa.string()), reasons)
    return _decisions(rows, reasons, pc.take(heavy["size"], pos), code, jac)


def _decisions(rows: pa.Table, reasons, sizes, code: np.ndarray, jac: np.ndarray) -> pa.Table:
    def col(name: str) -> pa.Array:
        return rows[name] if name in rows.column_names else pa.nulls(rows.num_rows, pa.string())

    return pa.table({"row_key": rows["row_key"], "reject_reason": reasons, CLUSTER_SIZE: sizes, "node": rows["node"],
                     "_label": rows["label"], "_id": rows["id"].cast(pa.string()), "_source": col("source"),
                     "_url": col("url"), "_guard": pa.array(code, pa.int8()),
                     "_jaccard": pa.array(jac, pa.float32(), from_pandas=True)}, schema=FULL_DECISIONS)


def _against_index(labeled: pa.Table, owners: pa.Table) -> pa.Table:
    """``_owner``: the indexed document's id for members of a component that holds one."""
    best = owners.group_by("label").aggregate([("indexed_id", "min")])
    pos = pc.index_in(labeled["label"], best["label"])
    labeled = labeled.append_column("_owner", pc.take(best["indexed_id_min"], pos))
    if "indexed_sketch" not in owners.column_names:
        return labeled
    sketched = owners.filter(pc.is_valid(owners["indexed_sketch"]))      # one row per document has it
    spos = pc.index_in(labeled["label"], sketched["label"])
    return labeled.append_column("_owner_sketch", pc.take(sketched["indexed_sketch"], spos))
