"""Engine-neutral operations on document batches (``pyarrow.Table``), shared by every executor:
running a stage on the live rows only, stamping a global stage's decisions onto the rows they
name, splitting kept rows from rejects, and selecting the small key table a global step shuffles.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .schema import CHUNK, conform, live_mask, mark_rejects, rejected_mask


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


def live_keys(batch: pa.Table, columns: list[str]) -> pa.Table:
    """The columns a global stage's shuffle needs, for live rows only (never the text)."""
    return batch.filter(live_mask(batch)).select(columns)


def reduce_with_chunk(stage, group: pa.Table) -> pa.Table:
    """A global stage's ``reduce_group`` over one key's rows, each decision given the chunk of
    the row it names (row_key is unique per run), so decisions can be written per chunk."""
    out = stage.reduce_group(group.drop_columns([CHUNK]))
    if out.num_rows == 0:
        return pa.table({"row_key": pa.array([], pa.string()), "reject_reason": pa.array([], pa.string()),
                         CHUNK: pa.array([], pa.int32())})
    chunk = pc.take(group[CHUNK], pc.index_in(out["row_key"], group["row_key"]))
    return pa.table({"row_key": out["row_key"], "reject_reason": out["reject_reason"].cast(pa.string()), CHUNK: chunk})
