"""Engine-neutral operations on document batches (``pyarrow.Table``), shared by every executor:
running a stage on the live rows only, running a stage once per chunk of a batch, stamping a
global stage's decisions onto the rows they name, and splitting kept rows from rejects.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine import counts
from tokenmill.engine.counts import STAGE_COUNTS
from tokenmill.engine.schema import CHUNK, conform, live_mask, mark_rejects, rejected_mask, set_column
from tokenmill.engine.stage import Modifier


def run_stage(stage, batch: pa.Table, schema: pa.Schema, recount=None) -> tuple[pa.Table, int]:
    """Run a stage on the live rows of a batch; rejected rows pass untouched. Returns the batch
    (in ``schema``) and the number of live rows the stage saw. ``recount(table) -> table`` fills
    ``num_tokens`` of rows a modifier changed (None: tokens are not counted)."""
    live = live_mask(batch)
    n_live = pc.sum(pc.cast(live, pa.int64())).as_py() or 0
    if n_live == batch.num_rows:
        out = _settle(stage, batch, stage(batch), recount)
    elif n_live == 0:
        out = batch
    else:
        rows = batch.filter(live)
        out = pa.concat_tables([conform(_settle(stage, rows, stage(rows), recount), schema),
                                conform(batch.filter(pc.invert(live)), schema)])
    return conform(out, schema), n_live


def _settle(stage, before: pa.Table, out: pa.Table, recount) -> pa.Table:
    """A stage's output with its counters moved into the engine's ``_counts``; after a modifier,
    the changed rows' ``num_chars``/``num_tokens`` recounted and the change counted."""
    own = out[STAGE_COUNTS] if STAGE_COUNTS in out.column_names else None
    out = out.drop_columns([STAGE_COUNTS]) if own is not None else out
    if isinstance(stage, Modifier):
        out, changes = _recount(before, out, recount)
        own = changes if own is None else counts.append(changes, own)   # the engine's entries first
    if own is None:
        return out
    old = out[counts.COUNTS] if counts.COUNTS in out.column_names else None
    return set_column(out, counts.COUNTS, counts.append(old, counts.stamp(stage.name, own)))


def _recount(before: pa.Table, out: pa.Table, recount) -> tuple[pa.Table, pa.ListArray]:
    """``out`` with true counts for the rows whose text a modifier changed, and the counters of
    the change (``stage_counts``: one document; characters and tokens removed, net)."""
    same = pc.fill_null(pc.equal(before["text"], out["text"]), False)
    same = pc.or_(same, pc.and_(pc.is_null(before["text"]), pc.is_null(out["text"])))
    mask = ~np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)
    n = out.num_rows
    if not mask.any():
        return out, counts.counts_column({}, n)
    changed = pa.array(mask)
    chars = pc.fill_null(pc.utf8_length(out["text"]), 0).cast(pa.int64())
    out = set_column(out, "num_chars", pc.if_else(changed, chars, before["num_chars"]))
    if recount is not None:
        fresh = recount(out.filter(changed))["num_tokens"]
        pos = np.maximum(np.cumsum(mask) - 1, 0)
        out = set_column(out, "num_tokens", pc.if_else(changed, fresh.take(pa.array(pos)), before["num_tokens"]))

    def removed(col: str) -> np.ndarray:
        d = pc.subtract(pc.fill_null(before[col], 0), pc.fill_null(out[col], 0)).to_numpy(zero_copy_only=False)
        return np.where(mask, d, 0)

    return out, counts.counts_column({counts.DOCS_MODIFIED: mask.astype(np.int64), counts.CHARS_REMOVED: removed("num_chars"),
                                      counts.TOKENS_REMOVED: removed("num_tokens")}, n)


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
