"""The boundary pass of ``semantic_dedup``: documents near the border of two clusters compared
across it.

SemDeDup compares documents only inside their k-means cluster, so a copy whose embedding lands on
the other side of a border from its original is never compared with it: at 100,000 documents (10
clusters) 11% of the copy/original pairs with word 5-gram Jaccard >= 0.8 lay in different
clusters (bench/README.md, issue 25). A document whose cosine to its second-nearest centroid is
within ``boundary`` of its nearest's (``mark``) is also compared with the documents of that other
cluster near the same border (``near_rows`` -> ``across``, one partition per pair of clusters),
in the run's one keep order, so each document still meets only earlier ones. Its ``sem_max_sim``
is the larger of the passes' (``chains.merge``): the removals at any eps are read off it. A
giant cluster's borders are compared in pieces (``mark``): between its sub-clusters, one pair at
a time; at its border with an ordinary cluster, one of its sub-clusters at a time; at its border
with another giant, one pair of their sub-clusters at a time.

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
    assign_rows,
    cluster_ids,
    earlier_rows,
    embedding_dim,
    keep_order,
    runs_of,
)

PAIR, PAIR2, NEAR_SUB, LEVEL = "_pkey", "_pkey2", "_near_sub", "_level"
_TOP, _SUBS, _GIANT, _GIANTS = 1, 2, 3, 4   # the kinds of partitions' keys: never equal by arithmetic
SINKS = pa.schema([("node", pa.int64()), ("sink_id", pa.string())])
LABELLED = pa.schema([("node", pa.int64()), ("label", pa.int64()), ("sink_id", pa.string())])
NAMED = pa.schema([("node", pa.int64()), ("kept_id", pa.string())])
TALLY = pa.schema([("boundary", pa.int64()), ("across", pa.int64()), ("open", pa.int64())])


def mark(rows: pa.Table, margin: float, giants: tuple = ()) -> pa.Table:
    """``rows`` with ``_boundary`` (a second centroid within ``margin`` of the nearest) and the
    partitions of the boundary pass the row is in, ``_pkey`` and ``_pkey2`` (null where none):

    - a row of an ordinary cluster: ``_pkey`` its pair of clusters; near a giant (split by a second
      k-means; ``giants``: their ``_gcluster`` keys), that pair's share of the giant's sub-cluster
      nearest to the row (``_near_sub``, from ``near_subs``);
    - a row of a giant: ``_pkey`` its pair of sub-clusters; ``_pkey2`` its top-level border's share
      of its own sub-cluster (near an ordinary cluster), or of its own sub-cluster and the other
      giant's nearest to it (near another giant).

    So no partition holds a whole giant. A zero embedding (a text the encoder cannot read:
    nobody's duplicate) is near no border, however many there are."""
    n = rows.num_rows
    one, two = np.zeros(n, bool), np.zeros(n, bool)
    key1, key2 = np.zeros(n, np.int64), np.zeros(n, np.int64)
    if margin > 0 and NEAR in rows.column_names and n:
        group = rows[GROUP].to_numpy()
        one, key1 = _border(group, rows[CLUSTER], rows[NEAR], rows[MARGIN], margin, _TOP)
        if giants:
            one, two, key1, key2 = _giant_borders(rows, group, one, key1, np.asarray(giants, np.int64), margin)
        readable = rows[COS].to_numpy(zero_copy_only=False) != 0   # a zero embedding is equally near every centroid
        one, two = one & readable, two & readable
    rows = set_column(rows, BOUNDARY, pa.array(one | two, pa.bool_()))
    rows = set_column(rows, PAIR, pa.array(key1, pa.int64(), mask=~one))
    return set_column(rows, PAIR2, pa.array(key2, pa.int64(), mask=~two))


def _giant_borders(rows: pa.Table, group: np.ndarray, top: np.ndarray, top_key: np.ndarray, listed: np.ndarray,
                   margin: float) -> tuple[np.ndarray, ...]:
    """``mark``'s two partitions per row where some clusters are giants: (in the first, in the
    second, the first's key, the second's key)."""
    inside = np.isin(rows["_gcluster"].to_numpy(), listed)
    cluster, near = rows[CLUSTER].to_numpy(), rows[NEAR].to_numpy(zero_copy_only=False)
    to_giant = (near >= 0) & np.isin(kmeans.pair_key(group, near).view(np.int64), listed)
    sub_flag, sub_key = _border(rows["_gcluster"].to_numpy(), rows[SUB], rows[SUB_NEAR], rows[SUB_MARGIN], margin,
                                _SUBS)
    near_sub = (rows[NEAR_SUB].to_numpy(zero_copy_only=False) if NEAR_SUB in rows.column_names
                else np.full(len(near), -1, np.int32))
    own_sub = rows[SUB].to_numpy(zero_copy_only=False)
    top = top & (~to_giant | (near_sub >= 0))
    lower = cluster < near      # two giants' border: keyed by (sub-cluster of the lower, of the higher)
    both = kmeans.mixed_key(_GIANTS, top_key, np.where(lower, own_sub, near_sub), np.where(lower, near_sub, own_sub))
    key2 = np.where(to_giant, both, _per_sub(top_key, own_sub))
    key1 = np.where(inside, sub_key, np.where(to_giant, _per_sub(top_key, near_sub), top_key))
    return np.where(inside, sub_flag, top), inside & top, key1, key2


def _per_sub(pair: np.ndarray, sub: np.ndarray) -> np.ndarray:
    """The key of one sub-cluster's share of a giant's top-level border."""
    return kmeans.mixed_key(_GIANT, pair, sub)


def _border(owner: np.ndarray, cluster, near, margin_col, margin: float, tag: int) -> tuple[np.ndarray, np.ndarray]:
    """(near a border, key of the unordered pair of clusters) per row of one level of clusters
    (``tag``: which level)."""
    a, b = cluster.to_numpy(), near.to_numpy(zero_copy_only=False)
    flag = (b >= 0) & (margin_col.to_numpy(zero_copy_only=False) < margin)
    return flag, kmeans.mixed_key(tag, owner, np.minimum(a, b), np.maximum(a, b))


def split(rows: pa.Table, subs: dict, margin: float) -> pa.Table:
    """Assigned rows once the giant clusters are split by their sub-centroids (``subs``, by
    ``_gcluster``): each giant row's sub-cluster, both levels' borders marked."""
    rows = assign_rows(rows, subs, by="_gcluster", out=SUB, second=margin > 0, near_out=SUB_NEAR,
                       margin_out=SUB_MARGIN)
    return mark(cluster_ids(near_subs(rows, subs, margin)), margin, tuple(sorted(subs)))


def near_subs(rows: pa.Table, subs: dict, margin: float) -> pa.Table:
    """``rows`` with ``_near_sub``: for a row near a giant's border (from an ordinary cluster or
    another giant), the giant's sub-cluster whose centroid is nearest to it (-1 elsewhere).
    ``subs``: the giants' sub-centroids by ``_gcluster``."""
    n = rows.num_rows
    out = np.full(n, -1, np.int32)
    if n and margin > 0 and subs and NEAR in rows.column_names:
        listed = np.asarray(sorted(subs), np.int64)
        near = rows[NEAR].to_numpy(zero_copy_only=False)
        giant = kmeans.pair_key(rows[GROUP].to_numpy(), near).view(np.int64)
        want = (near >= 0) & (rows[MARGIN].to_numpy(zero_copy_only=False) < margin) & np.isin(giant, listed)
        idx = np.flatnonzero(want)
        if len(idx):
            x = vectors.decode(rows[EMBEDDING].take(pa.array(idx)), embedding_dim(rows[EMBEDDING]))
            for g in np.unique(giant[idx]):
                m = giant[idx] == g
                out[idx[m]] = kmeans.assign(x[m], subs[int(g)])[0]
    return set_column(rows, NEAR_SUB, pa.array(out, pa.int32()))


def near_rows(rows: pa.Table) -> pa.Table:
    """The rows near a border, once per partition of the pass they are in (``_pkey``; ``_level`` 0
    for the first, 1 for a giant's row in its top-level one), with what the keep order and the
    pairwise step read."""
    wanted = [c for c in ["row_key", "id", "node", KEY, COS, EMBEDDING, INDEXED, "quality_score"] if c in rows.column_names]
    parts = []
    for level, key in enumerate([PAIR, PAIR2]):
        if key in rows.column_names:
            part = rows.filter(pc.is_valid(rows[key])).select([*wanted, key]).rename_columns([*wanted, PAIR])
            parts.append(part.append_column(LEVEL, pa.array(np.full(part.num_rows, level, np.int8))))
    return pa.concat_tables(parts)


def across(rows: Optional[pa.Table], *, keep: str, block: int) -> pa.Table:
    """One partition of pairs of clusters: for each new row, its largest cosine to an earlier row
    of the other cluster (in keep order), that row and the row's ``_level`` (``chains.ACROSS``)."""
    if rows is None or rows.num_rows == 0:
        return ACROSS.empty_table()
    rows = keep_order(rows, keep, by=PAIR)
    x = vectors.decode(rows[EMBEDDING], embedding_dim(rows[EMBEDDING]))
    ckeys = rows[KEY].to_numpy()
    best, arg = np.zeros(len(ckeys), np.float32), np.full(len(ckeys), -1, np.int64)
    indexed = (rows[INDEXED].to_numpy(zero_copy_only=False) if INDEXED in rows.column_names
               else np.zeros(len(arg), bool))
    for s, e in zip(*runs_of(rows[PAIR].to_numpy())):
        if (ckeys[s:e] == ckeys[s]).all():   # one side of a border only: nothing to compare
            continue
        best[s:e], a = semdedup.max_similarity(x[s:e], block, labels=ckeys[s:e], first=earlier_rows(indexed[s:e]))
        arg[s:e] = np.where(a >= 0, s + a, -1)
    hit = (arg >= 0) & ~indexed
    to = arg[hit]
    return pa.table([rows["node"].filter(pa.array(hit)), pa.array(ckeys[hit]), pa.array(best[hit]),
                     pa.array(rows["node"].to_numpy()[to]), pc.cast(rows["id"], pa.string()).take(pa.array(to)),
                     pa.array(indexed[to]), rows[LEVEL].filter(pa.array(hit))], schema=ACROSS)


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
