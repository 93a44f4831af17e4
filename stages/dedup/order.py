"""Input order of rows, the "first" that dedup keeps: by source, then by the record's offset in it
as a number (``row_key`` is ``<source>:<offset>``; as plain strings ``f:10`` would sort before
``f:9``)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SOURCE, OFFSET = "_order_source", "_order_offset"


def with_input_order(table: pa.Table) -> pa.Table:
    """``table`` with two sort columns derived from ``row_key``: its source and numeric offset."""
    parts = pc.extract_regex(table["row_key"], r"^(?P<src>.*):(?P<off>\d{1,18})$")
    src = pc.coalesce(pc.struct_field(parts, "src"), table["row_key"])
    off = pc.fill_null(pc.cast(pc.struct_field(parts, "off"), pa.int64()), -1)
    return table.append_column(SOURCE, src).append_column(OFFSET, off)


def input_order_keys() -> list[tuple[str, str]]:
    """Sort keys (after ``with_input_order``) for input order; row_key breaks any tie."""
    return [(SOURCE, "ascending"), (OFFSET, "ascending"), ("row_key", "ascending")]


def first_by_key(table: pa.Table, key: str, then: tuple = ()) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """``table`` sorted by ``key``, then the sort keys ``then`` (nulls last), then input order;
    whether each row is the first of its key; and the id of that first row, for every row."""
    table = with_input_order(table)
    table = table.take(pc.sort_indices(table, sort_keys=[(key, "ascending"), *then, *input_order_keys()],
                                       null_placement="at_end"))
    keys = np.asarray(table[key].to_numpy(zero_copy_only=False), dtype=object)
    first = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)
    ids = np.asarray(table["id"].to_numpy(zero_copy_only=False), dtype=object)
    return table, first, ids[first][np.cumsum(first) - 1]


def duplicate_reasons(kept: np.ndarray, winner: np.ndarray) -> pa.Array:
    """Null where a row is kept, ``duplicate_of:<winner>`` elsewhere."""
    reasons = pc.binary_join_element_wise(pa.scalar("duplicate_of:"), pa.array(winner, pa.string()), "")
    return pc.if_else(pa.array(kept, pa.bool_()), pa.scalar(None, pa.string()), reasons)
