"""The band index that makes MinHash dedup incremental across runs.

``index.write: PATH`` stores, for every document a run kept, its band keys and id:
``PATH/run=<run id>/*.parquet`` (rows: band, the run's node id, id; a few files a run, one per
partition of its shuffle; folders of earlier versions also have ``range=<r>/`` sub-folders, read
the same), committed by a ``_SUCCESS`` marker; earlier runs' folders are merged into
compacted generations as they accumulate (``index_store.py``), so a run reads a number of folders
logarithmic in the runs. A run that reads indexes has the runs they cover in its fingerprint
(``index_state``): when an index gains or rewrites a run, the reader's run is redone.
``index.read: [PATH, ...]`` takes every committed folder under those paths: their band rows join
this run's buckets with node ids below zero, so a component that holds an indexed document has a
negative label, and every document of this run in it is rejected in favour of the indexed one
(the indexed document always wins; the old corpus is never read).

Index size per document: ``bands`` x 8 bytes of keys plus the id, and with the guard on its
224-byte sketch (stored once, on its first band row), before Parquet compression. The sketch lets a
later run guard a component that an indexed document wins like any other (``kept.py``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from tokenmill.engine.global_ops import NODE_BITS

from .components import band_rows
from .guard import SKETCH_COLUMN as SKETCH
from .index_store import without_run

#: ``sketch``: the document's guard sketch (``guard.py``) on its first band row, null on the others
#: (and on every row of an index written without a guard or by an earlier version)
INDEX_ROWS = pa.schema([("band", pa.int64()), ("node", pa.int64()), ("id", pa.string()), ("sketch", pa.binary())])


class IndexParams(BaseModel):
    """Incremental dedup across runs: what this run leaves for later ones, what it reads of earlier ones."""

    model_config = ConfigDict(extra="forbid")
    write: Optional[str] = Field(None, description="folder or URL: store this run's kept documents' keys")
    read: list[str] = Field(default_factory=list, description="indexes of earlier runs: their documents win")

    def or_default(self, folder: str) -> IndexParams:
        """An incremental run's index: it writes where configured (default ``folder``) and reads
        that too, besides any index configured to be read."""
        write = self.write or folder
        return IndexParams(write=write, read=list(dict.fromkeys([*self.read, write])))


def indexed_node(nodes: np.ndarray, run_no: int) -> np.ndarray:
    """Ids below zero for indexed documents, distinct per (folder, node), never equal to a new node."""
    return -(1 + ((np.int64(run_no) << np.int64(NODE_BITS)) | nodes))


def indexed_rows(table: pa.Table, run_no: int, own: Optional[int] = None) -> pa.Table:
    """One index folder's rows (band, node, id[, sketch]) -> (node, band, label, indexed_id,
    indexed_sketch), with node ids below zero (the folder's own ids, tagged with its number
    ``run_no``); ``own``: the reading run's position in a merged folder, whose rows are left out."""
    table = without_run(table, own)
    node = indexed_node(table["node"].to_numpy(zero_copy_only=False).astype(np.int64), run_no)
    sketch = table["sketch"].cast(pa.binary()) if "sketch" in table.column_names else pa.nulls(table.num_rows, pa.binary())
    return pa.table({"node": pa.array(node, pa.int64()), "band": table["band"], "label": pa.array(node, pa.int64()),
                     "indexed_id": table["id"], "indexed_sketch": sketch})


def with_sketch(table: pa.Table) -> pa.Table:
    """A band index folder's rows in ``INDEX_ROWS`` order, with a null ``sketch`` where a folder
    of an earlier version has none (so old and new folders merge and union alike)."""
    if "sketch" not in table.column_names:
        table = table.append_column("sketch", pa.nulls(table.num_rows, pa.binary()))
    rest = [c for c in table.column_names if c not in INDEX_ROWS.names]
    return table.select(INDEX_ROWS.names + rest)


def keep_rows(keys: Optional[pa.Table], decisions: Optional[pa.Table]) -> pa.Table:
    """Band rows (band, node, id) of this run's documents that were not rejected as duplicates."""
    if keys is None or keys.num_rows == 0:
        return INDEX_ROWS.empty_table()
    if decisions is not None and decisions.num_rows:
        gone = decisions.filter(pc.is_valid(decisions["reject_reason"]))["node"]
        keys = keys.filter(pc.invert(pc.is_in(keys["node"], gone)))
    rows = band_rows(keys, "minhash_bands", ["node", "id"] + ([SKETCH] if SKETCH in keys.column_names else []))
    node = rows["node"].to_numpy(zero_copy_only=False)
    first = np.r_[True, node[1:] != node[:-1]] if len(node) else np.zeros(0, bool)
    sketch = (pc.if_else(pa.array(first), rows[SKETCH].cast(pa.binary()), pa.scalar(None, pa.binary()))
              if SKETCH in rows.column_names else pa.nulls(rows.num_rows, pa.binary()))
    return pa.table({"band": rows["band"], "node": rows["node"], "id": rows["id"], "sketch": sketch}).cast(INDEX_ROWS)
