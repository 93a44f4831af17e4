"""What near-duplicate removal took, for report.json and the ``max_source_removal`` alarm: the
largest clusters, the guard's checks, and the sources (input files, web domains) that lost the
largest share of their documents.

All of it is computed on the executor from the decisions (one row per member of a cluster, with
``kept.REPORTED`` columns) and the stage's key rows (``source``, ``url`` of every live document):
small per-block summaries collected to the driver, and one shuffle of per-block counts by source
for the shares (so a crawl with millions of domains never meets on the driver).

- ``largest_clusters``: the ``top`` components by members: members, the kept document (id, url),
  how many members were removed and how many kept by the guard, and a sample of removed members
  (the smallest ids, so every engine and partitioning reports the same; ties in size by the
  component's label, its smallest node id).
- ``guard_figures``: members checked, passed at hop 1, passed at a later hop, broken chains (kept),
  unchecked (kept by an indexed document of an earlier run), and examples of broken chains.
- ``source_losses``: per kind (``file``: the ``source`` column; ``domain``: the host of ``url``,
  lower-cased, without ``www.``), the ``top`` sources by the share of their documents removed as
  near duplicates, among those with at least ``min_docs`` documents; ``over``: every such source
  over ``max_share`` (at most ``MAX_OVER`` of each kind), which the stage turns into a failure.
"""
from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .guard import BROKEN, SPLIT, UNCHECKED

SAMPLE = 5
MAX_OVER = 100
_HOST = r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/?#]*@)?(?:www\.)?(?P<host>[^/:?#]+)"
COUNTS = pa.schema([("kind", pa.string()), ("name", pa.string()), ("_key", pa.int64()), ("docs", pa.int64()),
                    ("removed", pa.int64())])


# -- clusters ---------------------------------------------------------------------------------------
def _cluster_rows(decisions: pa.Table, top: int) -> pa.Table:
    """This block's ``top`` largest components (by members in the block), one row each."""
    if decisions.num_rows == 0:
        return pa.table({"label": pa.array([], pa.int64()), "members": pa.array([], pa.int64()),
                         "removed": pa.array([], pa.int64()), "broken": pa.array([], pa.int64()),
                         "kept_id": pa.array([], pa.string()), "kept_url": pa.array([], pa.string()),
                         "sample_ids": pa.array([], pa.list_(pa.string())),
                         "sample_urls": pa.array([], pa.list_(pa.string()))})
    removed = pc.is_valid(decisions["reject_reason"])
    t = decisions.append_column("_removed", removed.cast(pa.int64()))
    t = t.append_column("_broken", pc.is_in(t["_guard"], pa.array([BROKEN, SPLIT], pa.int8())).cast(pa.int64()))
    agg = t.group_by("_label").aggregate([("_label", "count"), ("_removed", "sum"), ("_broken", "sum")])
    order = pc.sort_indices(agg, [("_label_count", "descending"), ("_label", "ascending")])
    agg = agg.take(order[:top])
    labels = agg["_label"].to_pylist()
    kept_id, kept_url, sample_ids, sample_urls = [], [], [], []
    for label in labels:
        rows = t.filter(pc.equal(t["_label"], label))
        keeper = rows.filter(pc.invert(pc.fill_null(pc.cast(rows["_removed"], pa.bool_()), False)))
        keeper = keeper.filter(pc.invert(pc.is_in(keeper["_guard"], pa.array([BROKEN, SPLIT], pa.int8()))))
        kept_id.append(keeper["_id"][0].as_py() if keeper.num_rows else None)
        kept_url.append(keeper["_url"][0].as_py() if keeper.num_rows else None)
        gone = rows.filter(pc.cast(rows["_removed"], pa.bool_())).sort_by("_id").slice(0, SAMPLE)
        sample_ids.append(gone["_id"].to_pylist())
        sample_urls.append(gone["_url"].to_pylist())
    return pa.table({"label": agg["_label"], "members": agg["_label_count"].cast(pa.int64()),
                     "removed": agg["_removed_sum"].cast(pa.int64()), "broken": agg["_broken_sum"].cast(pa.int64()),
                     "kept_id": pa.array(kept_id, pa.string()), "kept_url": pa.array(kept_url, pa.string()),
                     "sample_ids": pa.array(sample_ids, pa.list_(pa.string())),
                     "sample_urls": pa.array(sample_urls, pa.list_(pa.string()))})


def largest_clusters(ops, decisions, top: int = 10) -> list[dict]:
    """The ``top`` components by members (a hub component's slices are added up)."""
    t = ops.collect(ops.map(decisions, _cluster_rows, top=top))
    if t.num_rows == 0:
        return []
    out: dict[int, dict] = {}
    for r in t.to_pylist():
        c = out.setdefault(r["label"], {"members": 0, "removed": 0, "broken_chains": 0, "kept_id": None,
                                        "kept_url": None, "sample_removed_ids": [], "sample_removed_urls": []})
        c["members"] += r["members"]
        c["removed"] += r["removed"]
        c["broken_chains"] += r["broken"]
        c["kept_id"] = c["kept_id"] or r["kept_id"]
        c["kept_url"] = c["kept_url"] or r["kept_url"]
        pairs = sorted(zip(c["sample_removed_ids"] + r["sample_ids"], c["sample_removed_urls"] + r["sample_urls"]),
                       key=lambda p: str(p[0]))[:SAMPLE]
        c["sample_removed_ids"] = [p[0] for p in pairs]
        c["sample_removed_urls"] = [p[1] for p in pairs]
    ranked = sorted(out.items(), key=lambda kv: (-kv[1]["members"], kv[0]))[:top]   # ties: by component label,
    return [c for _, c in ranked]                                                    # as each block chose


# -- the guard --------------------------------------------------------------------------------------
def _guard_rows(decisions: pa.Table) -> pa.Table:
    g = decisions["_guard"]
    counts = {name: int(pc.sum(pc.equal(g, code).cast(pa.int64())).as_py() or 0)
              for name, code in (("hop1", 1), ("broken", BROKEN), ("split", SPLIT), ("unchecked", UNCHECKED))}
    later = int(pc.sum(pc.greater(g, 1).cast(pa.int64())).as_py() or 0)
    broken = decisions.filter(pc.is_in(g, pa.array([BROKEN, SPLIT], pa.int8()))).sort_by("_id").slice(0, SAMPLE)
    return pa.table({"hop1": [counts["hop1"]], "later": [later], "broken": [counts["broken"]],
                     "split": [counts["split"]], "unchecked": [counts["unchecked"]],
                     "examples": pa.array([[{"id": r["_id"], "url": r["_url"], "cluster_members": r["dup_cluster_size"],
                                             "jaccard_to_kept": round(float(r["_jaccard"]), 3)}
                                            for r in broken.to_pylist()]],
                                          pa.list_(pa.struct([("id", pa.string()), ("url", pa.string()),
                                                              ("cluster_members", pa.int32()),
                                                              ("jaccard_to_kept", pa.float64())])))})


def guard_figures(ops, decisions, threshold: float, hops: int) -> dict:
    t = ops.collect(ops.map(decisions, _guard_rows))
    rows = t.to_pylist()
    total = {k: sum(r[k] for r in rows) for k in ("hop1", "later", "broken", "split", "unchecked")}
    return {"threshold": threshold, "hops": hops, "passed_hop1": total["hop1"], "passed_later_hop": total["later"],
            "broken_chains": total["broken"] + total["split"], "split_keepers": total["split"],
            "unchecked_indexed": total["unchecked"],
            "broken_examples": sorted((e for r in rows for e in r["examples"]), key=lambda e: str(e["id"]))[:SAMPLE]}


# -- sources ----------------------------------------------------------------------------------------
def _hosts(urls) -> pa.Array:
    urls = urls.combine_chunks() if isinstance(urls, pa.ChunkedArray) else urls
    host = pc.struct_field(pc.extract_regex(pc.fill_null(urls.cast(pa.string()), ""), _HOST), "host")
    return pc.utf8_lower(host)


def _keys_of(names: pa.Array) -> pa.Array:
    """A stable int64 per name (BLAKE2b-64 of each distinct name)."""
    enc = pc.dictionary_encode(names).combine_chunks() if isinstance(names, pa.ChunkedArray) else pc.dictionary_encode(names)
    words = enc.dictionary.to_pylist()
    digest = b"".join(hashlib.blake2b((w or "").encode("utf-8", "surrogatepass"), digest_size=8).digest()
                      for w in words)
    keys = np.frombuffer(digest, dtype="<i8") if words else np.zeros(0, np.int64)
    return pa.array(keys[enc.indices.to_numpy(zero_copy_only=False)] if len(enc) else np.zeros(0, np.int64))


def _counted(table: pa.Table, value: str) -> pa.Table:
    """(kind, name, _key, docs, removed) per distinct file and domain of ``table`` (source, url)."""
    parts = []
    for kind, names in (("file", table["source"]), ("domain", _hosts(table["url"]))):
        names = names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names
        ok = pc.is_valid(names)
        t = pa.table({"name": names.cast(pa.string())}).filter(ok)
        if t.num_rows == 0:
            continue
        agg = t.group_by("name").aggregate([("name", "count")])
        n = agg.num_rows
        counts = agg["name_count"].cast(pa.int64())
        zeros = pa.array(np.zeros(n, np.int64))
        parts.append(pa.table({"kind": pa.array([kind] * n, pa.string()), "name": agg["name"],
                               "_key": _keys_of(agg["name"]),
                               "docs": counts if value == "docs" else zeros,
                               "removed": counts if value == "removed" else zeros}, schema=COUNTS))
    return pa.concat_tables(parts) if parts else COUNTS.empty_table()


def _key_rows(keys: pa.Table) -> pa.Table:
    return _counted(keys, "docs")


def _removed_rows(decisions: pa.Table) -> pa.Table:
    gone = decisions.filter(pc.is_valid(decisions["reject_reason"]))
    return _counted(pa.table({"source": gone["_source"], "url": gone["_url"]}), "removed")


def _shares(docs: Optional[pa.Table], removed: Optional[pa.Table], top: int, min_docs: int,
            max_share: Optional[float]) -> pa.Table:
    """Per partition: the ``top`` sources of each kind by removed share (>= ``min_docs``
    documents), and every one over ``max_share`` (flag ``over``)."""
    tables = [t for t in (docs, removed) if t is not None and t.num_rows]
    empty = COUNTS.append(pa.field("share", pa.float64())).append(pa.field("over", pa.bool_())).empty_table()
    if not tables:
        return empty
    t = pa.concat_tables(tables).group_by(["kind", "name", "_key"]).aggregate([("docs", "sum"), ("removed", "sum")])
    t = t.rename_columns(["kind", "name", "_key", "docs", "removed"])
    t = t.filter(pc.and_(pc.greater_equal(t["docs"], min_docs), pc.greater(t["removed"], 0)))
    if t.num_rows == 0:
        return empty
    share = pc.divide(t["removed"].cast(pa.float64()), t["docs"].cast(pa.float64()))
    t = t.append_column("share", share)
    over = pc.greater(share, max_share) if max_share is not None else pa.array(np.zeros(t.num_rows, bool))
    t = t.append_column("over", over)
    out = []
    for kind in ("file", "domain"):
        k = t.filter(pc.equal(t["kind"], kind))
        k = k.take(pc.sort_indices(k, [("share", "descending"), ("removed", "descending"), ("name", "ascending")]))
        out += [k.slice(0, top), k.filter(k["over"]).slice(0, MAX_OVER)]
    return pa.concat_tables(out).select(empty.column_names)


def source_losses(ops, keys, decisions, top: int = 10, min_docs: int = 100,
                  max_share: Optional[float] = None) -> dict:
    """{"files": [...], "domains": [...], "over": [...]}: the sources that lost the largest share."""
    t = ops.collect(ops.partition_map([ops.map(keys, _key_rows), ops.map(decisions, _removed_rows)], "_key",
                                      _shares, top=top, min_docs=min_docs, max_share=max_share))
    rows = {(r["kind"], r["name"]): r for r in t.to_pylist()}.values()

    def ranked(kind: str) -> list[dict]:
        rs = sorted((r for r in rows if r["kind"] == kind), key=lambda r: (-r["share"], -r["removed"], r["name"]))
        return [{"name": r["name"], "docs": r["docs"], "removed": r["removed"], "share": round(r["share"], 4)}
                for r in rs[:top]]

    over = sorted((r for r in rows if r["over"]), key=lambda r: (-r["share"], r["name"]))
    return {"min_docs": min_docs, "files": ranked("file"), "domains": ranked("domain"),
            "over": [{"kind": r["kind"], "name": r["name"], "docs": r["docs"], "removed": r["removed"],
                      "share": round(r["share"], 4)} for r in over]}
