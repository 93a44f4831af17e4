"""Input order of rows, the "first" that dedup keeps: by source, then by the record's offset in it
as a number (``row_key`` is ``<source>:<offset>``; as plain strings ``f:10`` would sort before
``f:9``)."""
from __future__ import annotations

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
