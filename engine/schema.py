"""The document table: core columns every stage keeps, and the reject columns.

A batch is a ``pyarrow.Table``. Rows that a stage rejects stay in the stream with
``reject_stage``/``reject_reason`` set, so every stage's in/out counts can be computed
from the data itself and nothing is silently lost; writers split kept rows from rejects.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.counts import COUNTS, COUNTS_TYPE

CORE_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.large_string()),
    pa.field("source", pa.string()),
    pa.field("url", pa.string()),
    pa.field("meta", pa.string()),
]
REJECT_FIELDS = [
    pa.field("reject_stage", pa.string()),
    pa.field("reject_reason", pa.string()),
]
#: unique, stable key of an input record (source + offset); global stages join back on it
ROW_KEY_FIELD = pa.field("row_key", pa.string())
COUNT_FIELDS = [
    pa.field("num_chars", pa.int64()),
    pa.field("num_tokens", pa.int64()),
]
DOCUMENT_SCHEMA = pa.schema(CORE_FIELDS + [ROW_KEY_FIELD] + COUNT_FIELDS + REJECT_FIELDS)


def live_mask(batch: pa.Table) -> pa.Array:
    """True for rows no stage has rejected yet."""
    if "reject_stage" not in batch.column_names:
        return pa.array([True] * batch.num_rows, pa.bool_())
    return pc.is_null(batch["reject_stage"])


def set_column(batch: pa.Table, name: str, values) -> pa.Table:
    """Add or replace a column."""
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array(values)
    if name in batch.column_names:
        return batch.set_column(batch.column_names.index(name), name, values)
    return batch.append_column(name, values)


def mark_rejects(batch: pa.Table, stage: str, reasons: pa.Array) -> pa.Table:
    """Set reject_stage/reject_reason where ``reasons`` is non-null (only on live rows)."""
    reasons = reasons if isinstance(reasons, (pa.Array, pa.ChunkedArray)) else pa.array(reasons, pa.string())
    live = live_mask(batch)
    new = pc.and_(live, pc.is_valid(reasons))
    old_stage = batch["reject_stage"] if "reject_stage" in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    old_reason = batch["reject_reason"] if "reject_reason" in batch.column_names else pa.nulls(batch.num_rows, pa.string())
    stage_col = pc.if_else(new, pa.scalar(stage, pa.string()), old_stage)
    reason_col = pc.if_else(new, reasons.cast(pa.string()), old_reason)
    batch = set_column(batch, "reject_stage", stage_col)
    return set_column(batch, "reject_reason", reason_col)



#: a rejecting stage's measure of the check that failed and the bound it crossed (heuristics), as
#: internal columns of that stage: in rejects/ and the report's examples, not in the curated data
REJECT_VALUE = "reject_value"
REJECT_THRESHOLD = "reject_threshold"

#: engine working column: the input chunk a row came from (decisions are partitioned by it)
CHUNK = "_chunk"
CHUNK_FIELD = pa.field(CHUNK, pa.int32())
#: engine working column: the generating stage that wrote a row (null: the row was read)
EMITTED = "_emitted_by"
EMITTED_FIELD = pa.field(EMITTED, pa.string())
#: engine working column: every stage's counters of a row (``engine/counts.py``)
COUNTS_FIELD = pa.field(COUNTS, COUNTS_TYPE)
#: columns of the engine's own bookkeeping, never in the curated data
WORKING_COLUMNS = ("row_key", "reject_stage", "reject_reason", CHUNK, EMITTED, COUNTS)


def phase_schema(stages) -> pa.Schema:
    """The document schema, the working columns, and every column the given stages add, in stage order."""
    fields = list(DOCUMENT_SCHEMA) + [CHUNK_FIELD, EMITTED_FIELD, COUNTS_FIELD]
    names = {f.name for f in fields}
    for rs in stages:
        for name, typ in getattr(rs.cls, "adds", {}).items():
            if name not in names:
                fields.append(pa.field(name, typ))
                names.add(name)
    return pa.schema(fields)


def conform(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give a batch exactly ``schema``'s columns (missing ones null-filled, types cast)."""
    cols = []
    for f in schema:
        if f.name in batch.column_names:
            col = batch[f.name]
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(batch.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def rejected_mask(batch: pa.Table) -> pa.Array:
    return pc.invert(live_mask(batch))
