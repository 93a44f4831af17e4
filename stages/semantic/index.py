"""semantic_dedup across runs: an index of the embeddings of the documents each run kept.

``index.write: PATH`` stores (id, group, language, float16 embedding) of every document this
run's SemDeDup kept under ``PATH/run=<run id>/`` (committed by a marker; folders merged as they
accumulate, as the MinHash and exact indexes are: ``dedup/index_store.py``). ``index.read``
brings earlier runs' kept documents into this run's clusters: each is assigned to this run's
centroids, comes before every new document of its cluster, and is never removed, so a new
document within ``eps`` of an earlier one is rejected as ``semantic_duplicate_of:<earlier id>``.
Centroids are fitted on each run's own documents (a night of new data gets clusters that fit it;
the earlier documents are assigned to them), so what a run reads is the earlier kept embeddings
of its languages: 2 bytes per dimension per document.
"""
from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.stages.dedup.band_index import indexed_node
from tokenmill.stages.dedup.index_store import without_run

from .steps import EMBEDDING, GROUP, LANGUAGE

INDEXED = "_indexed"
KEY_ROWS = pa.schema([("row_key", pa.string()), ("id", pa.string()), ("url", pa.string()), (LANGUAGE, pa.string()),
                      (EMBEDDING, pa.binary()), ("node", pa.int64()), (GROUP, pa.int64()), (INDEXED, pa.bool_())])
INDEX_ROWS = pa.schema([("id", pa.string()), (GROUP, pa.int64()), (LANGUAGE, pa.string()), (EMBEDDING, pa.binary())])


def indexed_rows(table: pa.Table, run_no: int, groups: list[int], extra: dict, own: Optional[int] = None) -> pa.Table:
    """One index folder's rows of this run's groups, as key rows: node ids below zero, no row_key,
    ``_indexed`` set."""
    table = without_run(table, own)
    table = table.filter(pc.is_in(table[GROUP], pa.array(groups, pa.int64())))
    n = table.num_rows
    nodes = indexed_node(stable_ids(table["id"]), run_no)
    out = pa.table({"row_key": pa.nulls(n, pa.string()), "id": table["id"], "url": pa.nulls(n, pa.string()),
                    LANGUAGE: table[LANGUAGE], EMBEDDING: table[EMBEDDING], "node": pa.array(nodes, pa.int64()),
                    GROUP: table[GROUP], INDEXED: pa.array(np.ones(n, bool))})
    return conform(out, extra)


def stable_ids(ids) -> np.ndarray:
    """56-bit ids from the documents' ids: the same on every engine however files form blocks."""
    return np.array([int.from_bytes(hashlib.blake2b(str(i).encode("utf-8", "surrogatepass"), digest_size=7).digest(),
                                    "little") for i in ids.to_pylist()], np.int64)


def new_rows(rows: pa.Table, extra: dict) -> pa.Table:
    """This run's key rows, marked as not indexed."""
    return conform(rows.append_column(INDEXED, pa.array(np.zeros(rows.num_rows, bool))), extra)


def conform(rows: pa.Table, extra: dict) -> pa.Table:
    """Key rows in one schema (``extra``: {column: type} of the keep rule, null where absent)."""
    schema = pa.schema(list(KEY_ROWS) + [pa.field(k, t) for k, t in extra.items()])
    cols = [rows[f.name].cast(f.type) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
            for f in schema]
    return pa.table(cols, schema=schema)


def kept_rows(rows: Optional[pa.Table], decided: Optional[pa.Table]) -> pa.Table:
    """One cluster partition: what the index keeps of this run (SemDeDup's survivors)."""
    if rows is None or decided is None or rows.num_rows == 0:
        return INDEX_ROWS.empty_table()
    kept = decided.filter(pc.is_null(decided["reject_reason"])).select(["node"])
    rows = rows.filter(pc.invert(rows[INDEXED])) if INDEXED in rows.column_names else rows
    return rows.join(kept, "node", join_type="inner").select(INDEX_ROWS.names).cast(INDEX_ROWS)

