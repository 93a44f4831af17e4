"""Engine-neutral operations on document batches (``pyarrow.Table``), shared by every executor:
running a stage on the live rows only, running a stage once per chunk of a batch, stamping a
global stage's decisions onto the rows they name, and splitting kept rows from rejects.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.schema import CHUNK, conform, live_mask, mark_rejects, rejected_mask, set_column


def run_stage(stage, batch: pa.Table, schema: pa.Schema) -> tuple[pa.Table, int]:
    """Run a stage on the live rows of a batch; rejected rows pass untouched. Returns the batch
    (in ``schema``) and the number of live rows the stage saw."""
    live = live_mask(batch)
    n_live = pc.sum(pc.cast(live, pa.int64())).as_py() or 0
    if n_live == batch.num_rows:
        out = stage(batch)
    elif n_live == 0:
        out = batch
    else:
        out = pa.concat_tables([conform(stage(batch.filter(live)), schema),
                                conform(batch.filter(pc.invert(live)), schema)])
    return conform(out, schema), n_live


def per_chunk(fn, batch: pa.Table) -> pa.Table:
    """``fn`` on the rows of each chunk of ``batch`` (which carries ``_chunk``), its output rows
    stamped with that chunk: a generating stage's new rows belong to the chunk of the rows they
    came from, and the stage never sees the engine's column. Chunks are taken in the order they
    first appear (a batch holds its chunks' rows one after another, in input order)."""
    chunks = batch[CHUNK]
    order = pc.unique(chunks).to_pylist()
    outs = []
    for chunk in order:
        rows = batch if len(order) == 1 else batch.filter(pc.equal(chunks, chunk))
        out = fn(rows.drop_columns([CHUNK]))
        outs.append(set_column(out, CHUNK, pa.repeat(pa.scalar(chunk, pa.int32()), out.num_rows)))
    return pa.concat_tables(outs, promote_options="permissive") if outs else fn(batch.drop_columns([CHUNK]))


def apply_decisions(batch: pa.Table, decisions: pa.Table, stage_name: str) -> pa.Table:
    """Reject the live rows whose ``row_key`` a global stage decided on, with its reason, and set
    the stage's other decision columns (e.g. ``dup_cluster_size``) on the rows they name.

    ``decisions`` holds (row_key, reject_reason) for one chunk: small, so it is matched here by
    a hash lookup instead of moving the documents to it."""
    if decisions.num_rows == 0 or batch.num_rows == 0:
        return batch
    pos = pc.index_in(batch["row_key"], decisions["row_key"])
    for name in decisions.column_names:  # decision columns besides the reason (e.g. dup_cluster_size)
        if name not in ("row_key", "reject_reason", CHUNK) and name in batch.column_names:
            values = pc.take(decisions[name], pos).cast(batch[name].type)
            batch = batch.set_column(batch.column_names.index(name), name, pc.coalesce(values, batch[name]))
    reasons = pc.take(decisions["reject_reason"], pos)
    return mark_rejects(batch, stage_name, reasons)


def kept_rows(batch: pa.Table, drop: list[str]) -> pa.Table:
    """Live rows without working columns, with ``language`` filled (``und`` where unknown)."""
    kept = batch.filter(live_mask(batch)).drop_columns([c for c in drop if c in batch.column_names])
    if "language" not in kept.column_names:
        kept = kept.append_column("language", pa.nulls(kept.num_rows, pa.string()))
    lang = pc.fill_null(kept["language"], "und")
    return kept.set_column(kept.column_names.index("language"), "language", lang)


def rejected_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(rejected_mask(batch)).drop_columns([c for c in (CHUNK,) if c in batch.column_names])
