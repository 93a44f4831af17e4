"""Per-row counters: what a stage did to each document, counted where it happened and summed at write.

A stage may return, beside its other columns, a ``stage_counts`` column (``STAGE_COUNTS``): per row
a list of ``{key, n}`` (``counts_column`` builds one from an int array per key, leaving out zeros),
e.g. the PII kinds a document had replaced, or the lines a repair removed by rule. A modifier's
changes are counted by the engine itself (``docs_modified``, ``chars_removed``, ``tokens_removed``).
The engine moves them, stamped with the stage's name, into the working column ``_counts`` (a row
keeps one list for every stage that counted something on it), which travels with the row through
every phase, so a retried or re-run task never counts twice; the final write sums it over every
row read (kept or rejected), by (stage, key), and the sums merge by addition like every other
write-time statistic.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: the column a stage may return with its own counters per row (dropped by the engine)
STAGE_COUNTS = "stage_counts"
STAGE_COUNTS_TYPE = pa.list_(pa.struct([("key", pa.string()), ("n", pa.int64())]))
#: the engine's working column: every stage's counters of a row
COUNTS = "_counts"
COUNTS_TYPE = pa.list_(pa.struct([("stage", pa.string()), ("key", pa.string()), ("n", pa.int64())]))
#: what the engine counts for a modifier (a stage that rewrites ``text``)
DOCS_MODIFIED, CHARS_REMOVED, TOKENS_REMOVED = "docs_modified", "chars_removed", "tokens_removed"


def counts_column(counts: dict[str, object], n_rows: int) -> pa.ListArray:
    """A ``stage_counts`` column from one integer array (or list) of ``n_rows`` values per key;
    zero counts are left out, so a row with nothing to count holds an empty list."""
    keys = list(counts)
    if not keys:
        return pa.array([[]] * n_rows, STAGE_COUNTS_TYPE)
    values = np.stack([_ints(counts[k]) for k in keys], axis=1).reshape(n_rows, len(keys))   # rows x keys
    nonzero = values != 0
    rows, cols = np.nonzero(nonzero)                      # row-major: each row's entries together
    offsets = np.concatenate([[0], np.cumsum(nonzero.sum(axis=1))]).astype(np.int32)
    entries = pa.StructArray.from_arrays([pa.array(np.asarray(keys, dtype=object)[cols], pa.string()),
                                          pa.array(values[rows, cols], pa.int64())], names=["key", "n"])
    return pa.ListArray.from_arrays(pa.array(offsets), entries, type=STAGE_COUNTS_TYPE)


def _ints(values) -> np.ndarray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return np.asarray(pc.fill_null(values, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


def _entries(col) -> tuple[pa.StructArray, np.ndarray]:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return col.flatten(), np.asarray(pc.list_parent_indices(col).to_numpy(zero_copy_only=False), dtype=np.int64)


def stamp(stage: str, stage_counts) -> pa.ListArray:
    """A stage's ``stage_counts`` column as engine counters, each entry stamped with ``stage``."""
    flat, parents = _entries(stage_counts)
    stamped = pa.StructArray.from_arrays(
        [pa.repeat(pa.scalar(stage, pa.string()), len(flat)), flat.field("key"), flat.field("n")],
        names=["stage", "key", "n"])
    return _rebuild(stamped, parents, len(stage_counts))


def _rebuild(entries: pa.StructArray, parents: np.ndarray, n_rows: int) -> pa.ListArray:
    order = np.argsort(parents, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(parents, minlength=n_rows))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), entries.take(pa.array(order)), type=pa.list_(entries.type))


def append(existing, new: pa.ListArray) -> pa.ListArray:
    """Each row's counters followed by its new ones: two columns of the same rows and list type
    (``stage_counts`` or ``_counts``); ``existing`` may be None or hold nulls."""
    if existing is None or existing.null_count == len(existing):
        return new
    existing = pc.fill_null(existing, pa.scalar([], new.type))
    existing = existing.combine_chunks() if isinstance(existing, pa.ChunkedArray) else existing
    old_flat, old_parents = _entries(existing)
    new_flat, new_parents = _entries(new)
    if len(new_flat) == 0:
        return existing.cast(new.type)
    both = pa.concat_arrays([old_flat.cast(new_flat.type), new_flat])
    return _rebuild(both, np.concatenate([old_parents, new_parents]), len(new))


def sums(table: pa.Table) -> list[tuple[str, str, int]]:
    """(stage, key, sum of n) over every row of ``table`` that carries counters."""
    if COUNTS not in table.column_names or table.num_rows == 0:
        return []
    flat, _ = _entries(table[COUNTS])
    if len(flat) == 0:
        return []
    agg = pa.table({"stage": flat.field("stage"), "key": flat.field("key"), "n": flat.field("n")}) \
        .group_by(["stage", "key"]).aggregate([("n", "sum")])
    return list(zip(agg["stage"].to_pylist(), agg["key"].to_pylist(), agg["n_sum"].to_pylist()))
