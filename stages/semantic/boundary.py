"""The boundary pass of ``semantic_dedup``: documents near the border of two clusters compared
across it.

SemDeDup compares documents only inside their k-means cluster, so a copy whose embedding lands on
the other side of a border from its original is never compared with it: at 100,000 documents (10
clusters) 11% of the copy/original pairs with word 5-gram Jaccard >= 0.8 lay in different
clusters (bench/README.md, issue 25). A document whose cosine to its second-nearest centroid is
within ``boundary`` of its nearest's (``mark``) is also compared with the documents of that other
cluster near the same border (``near_rows`` -> ``across``, one partition per pair of clusters),
in the run's one keep order, so each document still meets only earlier ones. Its ``sem_max_sim``
is the larger of the two passes' (``chains.merge``): the removals at any eps are read off it.

A document removed across a border names a document of another cluster, whose own fate is decided
there. Every removed document links to one earlier document, so the links form trees, each rooted
at one kept document; ``resolve`` finds the root of every open chain with connected components
(``dedup/components.py``) over the few links that cross or touch a border.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.global_ops import GlobalStepError
from tokenmill.engine.schema import set_column
from tokenmill.stages.dedup.components import EDGES, connected_components, star_labels

from . import kmeans, semdedup, vectors
from .chains import ACROSS
from .index import INDEXED
from .steps import (
    BOUNDARY,
    CLUSTER,
    COS,
    DECIDED,
    EMBEDDING,
    GROUP,
    KEY,
    MARGIN,
    NEAR,
    REASON_PREFIX,
    SUB,
    SUB_MARGIN,
    SUB_NEAR,
    embedding_dim,
    keep_order,
    runs_of,
)

PAIR = "_pkey"
SINKS = pa.schema([("node", pa.int64()), ("sink_id", pa.string())])
LABELLED = pa.schema([("node", pa.int64()), ("label", pa.int64()), ("sink_id", pa.string())])
NAMED = pa.schema([("node", pa.int64()), ("kept_id", pa.string())])
TALLY = pa.schema([("boundary", pa.int64()), ("across", pa.int64()), ("open", pa.int64())])


def mark(rows: pa.Table, margin: float, giants: tuple = ()) -> pa.Table:
    """``rows`` with ``_boundary`` (a second centroid within ``margin`` of the nearest) and
    ``_pkey`` (the pair of clusters). In a giant cluster (split by a second k-means; ``giants``:
    their ``_gcluster`` keys) the borders are those between its sub-clusters, bounded as the split
    is; its own top-level border, like any border with it, is not compared. A zero embedding (a
    text the encoder cannot read: nobody's duplicate) is near no border, however many there are."""
    n = rows.num_rows
    flag, pair = np.zeros(n, bool), np.zeros(n, np.int64)
    if margin > 0 and NEAR in rows.column_names and n:
        group = rows[GROUP].to_numpy()
        flag, pair = _border(group, rows[CLUSTER], rows[NEAR], rows[MARGIN], margin)
        if giants:
            listed = np.asarray(giants, np.int64)
            inside = np.isin(rows["_gcluster"].to_numpy(), listed)
            near = rows[NEAR].to_numpy(zero_copy_only=False)
            flag &= ~np.isin(kmeans.pair_key(group, near).view(np.int64), listed)
            sub_flag, sub_pair = _border(rows["_gcluster"].to_numpy(), rows[SUB], rows[SUB_NEAR], rows[SUB_MARGIN],
                                         margin)
            flag, pair = np.where(inside, sub_flag, flag), np.where(inside, sub_pair, pair)
        flag &= rows[COS].to_numpy(zero_copy_only=False) != 0   # a zero embedding is equally near every centroid
    rows = set_column(rows, BOUNDARY, pa.array(flag, pa.bool_()))
    return set_column(rows, PAIR, pa.array(pair, pa.int64()))


def _border(owner: np.ndarray, cluster, near, margin_col, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(near a border, key of the unordered pair of clusters) per row of one level of clusters."""
    a, b = cluster.to_numpy(), near.to_numpy(zero_copy_only=False)
    flag = (b >= 0) & (margin_col.to_numpy(zero_copy_only=False) < margin)
    lower = kmeans.pair_key(owner, np.minimum(a, b)).view(np.int64)
    return flag, kmeans.pair_key(lower, np.maximum(a, b)).view(np.int64)


def near_rows(rows: pa.Table) -> pa.Table:
    """The rows near a border, with their pair of clusters (``_pkey``) and what the keep order and
    the pairwise step read."""
    rows = rows.filter(rows[BOUNDARY])
    wanted = ["row_key", "id", "node", KEY, COS, EMBEDDING, INDEXED, "quality_score", PAIR]
    return rows.select([c for c in wanted if c in rows.column_names])


def across(rows: Optional[pa.Table], *, keep: str, block: int) -> pa.Table:
    """One partition of pairs of clusters: for each new row, its largest cosine to an earlier row
    of the other cluster (in keep order) and that row (``chains.ACROSS``)."""
    if rows is None or rows.num_rows == 0:
        return ACROSS.empty_table()
    rows = keep_order(rows, keep, by=PAIR)
    x = vectors.decode(rows[EMBEDDING], embedding_dim(rows[EMBEDDING]))
    ckeys = rows[KEY].to_numpy()
    best, arg = np.zeros(len(ckeys), np.float32), np.full(len(ckeys), -1, np.int64)
    for s, e in zip(*runs_of(rows[PAIR].to_numpy())):
        best[s:e], a = semdedup.max_similarity(x[s:e], block, labels=ckeys[s:e])
        arg[s:e] = np.where(a >= 0, s + a, -1)
    indexed = (rows[INDEXED].to_numpy(zero_copy_only=False) if INDEXED in rows.column_names
               else np.zeros(len(arg), bool))
    hit = (arg >= 0) & ~indexed
    to = arg[hit]
    return pa.table([rows["node"].filter(pa.array(hit)), pa.array(ckeys[hit]), pa.array(best[hit]),
                     pa.array(rows["node"].to_numpy()[to]), pc.cast(rows["id"], pa.string()).take(pa.array(to)),
                     pa.array(indexed[to])], schema=ACROSS)


def tally(decided: pa.Table) -> pa.Table:
    """New documents near a border, removed across one, and with an open name, in this block."""
    count = [int(pc.sum(decided[c].cast(pa.int64())).as_py() or 0) for c in (BOUNDARY, "_across", "_open")]
    return pa.table([[c] for c in count], schema=TALLY)


def resolve(ops, decided) -> tuple[object, dict]:
    """``decided`` with every open name replaced by the kept document at the root of its chain,
    and the pass's figures (documents near a border; removed across one)."""
    counts = ops.collect(ops.map(decided, tally))
    on_border, across_border, opened = (int(pc.sum(counts[c]).as_py() or 0) for c in TALLY.names)
    figures = {"documents_near_a_border": on_border, "removed_across_a_border": across_border}
    if opened == 0:
        return decided, figures
    stars, _ = connected_components(ops, ops.map(decided, links))
    labelled = ops.partition_map([ops.map(stars, star_labels), ops.map(decided, sinks)], "node", label_sinks)
    named = ops.partition_map([labelled], "label", name_members)
    fixed = ops.partition_map([ops.map(decided, open_rows, opened=True), named], "node", rename)
    return ops.materialize(ops.union([ops.map(decided, open_rows, opened=False), fixed])), figures


def links(decided: pa.Table) -> pa.Table:
    """(removed, the node its name comes from) of removed rows with an open name or near a border:
    with the kept roots, every tree an open chain runs through."""
    m = pc.and_(pc.is_valid(decided["reject_reason"]), pc.or_(decided["_open"], decided[BOUNDARY]))
    rows = decided.filter(m)
    u, v = rows["node"].to_numpy(), rows["_to"].to_numpy(zero_copy_only=False)
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    return pa.table([pa.array(lo, pa.int64()), pa.array(hi, pa.int64())], schema=EDGES)


def sinks(decided: pa.Table) -> pa.Table:
    """The kept documents a chain may end at, with their ids: kept rows near a border, and the kept
    document a closed name of a removed row near a border comes from."""
    kept = decided.filter(pc.and_(pc.is_null(decided["reject_reason"]), decided[BOUNDARY]))
    removed = pc.and_(pc.is_valid(decided["reject_reason"]), decided[BOUNDARY])
    closed = decided.filter(pc.and_(removed, pc.invert(decided["_open"])))
    names = pc.utf8_slice_codeunits(closed["reject_reason"], len(REASON_PREFIX))
    return pa.table([pa.concat_arrays([kept["node"].combine_chunks(), closed["_to"].combine_chunks()]),
                     pa.concat_arrays([kept["_id"].combine_chunks(), names.combine_chunks()])], schema=SINKS)


def label_sinks(labels: Optional[pa.Table], found: Optional[pa.Table]) -> pa.Table:
    """One partition by node: each linked node's component label, and its id where it is a root."""
    if labels is None or labels.num_rows == 0:
        return LABELLED.empty_table()
    # a star's centre is labelled once per block it has edges in
    labels = labels.group_by("node").aggregate([("label", "min")]).rename_columns(["node", "label"])
    found = SINKS.empty_table() if found is None else found
    found = found.group_by("node").aggregate([("sink_id", "min")]).rename_columns(["node", "sink_id"])
    return labels.join(found, "node", join_type="left outer").select(LABELLED.names).cast(LABELLED)


def name_members(labelled: Optional[pa.Table]) -> pa.Table:
    """One partition by component: every non-root node named by its component's one kept root."""
    if labelled is None or labelled.num_rows == 0:
        return NAMED.empty_table()
    roots = labelled.filter(pc.is_valid(labelled["sink_id"]))
    per = roots.group_by("label").aggregate([("sink_id", "count_distinct")])
    if per.num_rows and pc.max(per["sink_id_count_distinct"]).as_py() > 1:
        raise GlobalStepError("semantic_dedup: a chain of removals ends at two kept documents")
    members = labelled.filter(pc.is_null(labelled["sink_id"])).select(["node", "label"])
    named = members.join(roots.select(["label", "sink_id"]), "label", join_type="left outer")
    return named.select(["node", "sink_id"]).rename_columns(NAMED.names).cast(NAMED)


def open_rows(decided: pa.Table, opened: bool) -> pa.Table:
    """The rows whose name is still open (``opened``), or all the others."""
    mask = pc.fill_null(decided["_open"], False)
    return decided.filter(mask if opened else pc.invert(mask))


def rename(rows: Optional[pa.Table], named: Optional[pa.Table]) -> pa.Table:
    """One partition by node: open rows named by the kept root of their chain."""
    if rows is None or rows.num_rows == 0:
        return DECIDED.empty_table()
    named = NAMED.empty_table() if named is None else named
    joined = rows.join(named, "node", join_type="left outer")
    if joined.num_rows != rows.num_rows or pc.any(pc.is_null(joined["kept_id"])).as_py():
        raise GlobalStepError("semantic_dedup: a removal across a cluster border has no kept document to name")
    reasons = pc.binary_join_element_wise(pa.scalar(REASON_PREFIX), joined["kept_id"], "")
    joined = set_column(joined, "reject_reason", reasons)
    joined = set_column(joined, "_open", pa.array(np.zeros(joined.num_rows, bool)))
    return joined.select(DECIDED.names).cast(DECIDED)
