"""Exact dedup across runs: an index of the keys of the documents each run kept.

``index.write: PATH`` stores (dedup_key, id) of every document this run kept under
``PATH/run=<run id>/`` (committed by a marker, and merged with other runs' as they accumulate,
as the band index is: ``index_store.py``); ``index.read: [PATH, ...]`` brings every committed earlier run's keys into this run's shuffle: a document whose key an
earlier run kept is rejected as ``duplicate_of:<that id>`` (the earlier document always wins,
and the old corpus is never read); the rest are deduplicated among themselves as without an
index (the first in input order is kept). With an index the stage runs as a multi-step global
step on the engine's ``DatasetOps``: one shuffle by the key's first 64 bits.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.io.storage import Storage

from .index_store import commit_marker, compact, index_figures, index_folders, own_position, run_folder, without_run
from .order import duplicate_reasons, first_by_key

HASH = "_key64"
INDEX_ROWS = pa.schema([("dedup_key", pa.string()), ("id", pa.string())])
DECISIONS = pa.schema([("row_key", pa.string()), ("reject_reason", pa.string()), ("node", pa.int64())])


def with_key_hash(table: pa.Table, column: str = "dedup_key") -> pa.Table:
    """``table`` with an int64 of its hex key's first 16 digits (what the shuffle partitions by)."""
    heads = pc.utf8_slice_codeunits(table[column], 0, 16).combine_chunks().cast(pa.string())
    offsets = np.frombuffer(heads.buffers()[1], dtype=np.int32, count=len(heads) + 1, offset=heads.offset * 4)
    text = heads.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]   # every key: 32 hex digits
    values = np.frombuffer(bytes.fromhex(text.decode("ascii")), dtype=">u8").astype(np.uint64).view(np.int64)
    return table.append_column(HASH, pa.array(values, pa.int64()))


def indexed_keys(table: pa.Table, own: Optional[int] = None) -> pa.Table:
    """One index folder's rows -> (key hash, dedup_key, indexed_id); ``own``: the reading run's
    position in a merged folder, whose rows are left out."""
    table = without_run(table, own)
    return with_key_hash(table.select(["dedup_key", "id"]).rename_columns(["dedup_key", "indexed_id"]))


def decide(rows: Optional[pa.Table], indexed: Optional[pa.Table]) -> pa.Table:
    """One partition: every live row of this run with ``reject_reason`` set on the copies (null on
    the row kept). A key an earlier run kept rejects all of this run's rows with it."""
    if rows is None or rows.num_rows == 0:
        return pa.table({"row_key": [], "reject_reason": [], "node": [], "dedup_key": [], "id": []},
                        schema=DECISIONS.append(pa.field("dedup_key", pa.string())).append(pa.field("id", pa.string())))
    rows, first, winner = first_by_key(rows, "dedup_key")
    if indexed is not None and indexed.num_rows:
        pos = pc.index_in(rows["dedup_key"], indexed["dedup_key"])
        older = pc.is_valid(pos).to_numpy(zero_copy_only=False)
        winner = np.where(older, np.asarray(pc.take(indexed["indexed_id"], pos).to_numpy(zero_copy_only=False),
                                            dtype=object), winner)
        first = first & ~older
    reasons = duplicate_reasons(first, winner)
    return pa.table({"row_key": rows["row_key"], "reject_reason": reasons, "node": rows["node"],
                     "dedup_key": rows["dedup_key"], "id": rows["id"]})


def rejected(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_valid(table["reject_reason"])).select(DECISIONS.names).cast(DECISIONS)


def kept(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_null(table["reject_reason"])).select(INDEX_ROWS.names).cast(INDEX_ROWS)


def global_step(ops, keys, index) -> tuple[object, dict]:
    """Decisions (row_key, reject_reason, node) against this run and the indexes read (none: the
    run's own copies only); writes this run's kept keys when ``index.write`` is set, after merging
    that index's earlier folders as they accumulate."""
    figures = compact(ops, index.write, exclude=ops.run_id) if index.write else {}
    folders = index_folders(index.read, exclude=ops.run_id)
    inputs = [ops.map(keys, with_key_hash)]
    tables = [ops.map(ops.read_parquet(files), indexed_keys, own=own_position(f, ops.run_id))
              for f in folders if (files := f.files())]
    if tables:
        inputs.append(ops.union(tables))
    decided = ops.partition_map(inputs, HASH, _decide_partition)
    if index.write:
        decided = ops.materialize(decided)
        folder = run_folder(index.write, ops.run_id)
        store = Storage(folder)
        store.rm(store.root)
        ops.write_parquet(ops.map(decided, kept), folder)
        commit_marker(store)
    return ops.map(decided, rejected), {**figures, **index_figures(folders, ops.run_id)}


def _decide_partition(rows: Optional[pa.Table], indexed: Optional[pa.Table] = None) -> pa.Table:
    return decide(rows, indexed)
