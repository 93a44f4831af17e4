"""Readers: input files (JSONL plain/.gz/.zst, Parquet, WARC, WET) -> document batches.

Bad input is data: a malformed line, invalid UTF-8 or Unicode, NUL bytes, empty or over-large
text becomes a row with ``reject_stage='read'`` and a reason (``read_rows``); a file that cannot
be read becomes one ``unreadable_file`` row and one cut short or corrupt one a ``truncated_file``
row after the records read before the damage, each with its path and the error in ``meta``, so
the report lists it and the run goes on. ``read_file`` guarantees it for every reader: whatever
a reader raises fails only that file, and a file that yields no row at all (empty) is reported.
This module dispatches (``listing`` lists input files); each format has its module (``read_jsonl``,
``read_parquet``, ``read_warc``), decoding and damage detection are in ``decode``. Paths may be
local or any fsspec/pyarrow URL.
"""
from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from tokenmill.engine.io.listing import InputFile, detect_format, list_input_files  # noqa: F401
from tokenmill.engine.io.read_jsonl import read_jsonl
from tokenmill.engine.io.read_parquet import read_parquet
from tokenmill.engine.io.read_rows import (  # noqa: F401  (the engine imports them from here)
    FILE_ERROR,
    FILE_REASONS,
    READ_STAGE,
    TRUNCATED,
    NoRecords,
    file_error_table,
    is_failure,
)
from tokenmill.engine.io.read_warc import read_warc

READERS = {"jsonl": read_jsonl, "parquet": read_parquet, "warc": read_warc, "wet": read_warc}
#: what a record is, per format, for the report of a file that holds none
RECORD_KINDS = {"jsonl": "non-blank line", "parquet": "row", "warc": "response or conversion record",
                "wet": "conversion record"}


def read_file(f: InputFile, opts) -> Iterator[pa.Table]:
    """The document tables of one input file. Never raises on the file's content: an error a
    reader lets through (a bug, a native parser's panic) becomes the file's ``truncated_file``
    row (rows were yielded; they stay) or ``unreadable_file`` row, and a file without a single
    row becomes an ``unreadable_file`` row."""
    rows = 0
    try:
        for table in READERS[f.format](f, opts):
            rows += table.num_rows
            yield table
    except BaseException as exc:
        if not is_failure(exc):
            raise
        yield file_error_table(f.path, f.source, exc, TRUNCATED if rows else FILE_ERROR, rows)
        return
    if rows == 0:
        empty = NoRecords(f"the file is empty: no {RECORD_KINDS.get(f.format, 'record')} in it")
        yield file_error_table(f.path, f.source, empty, FILE_ERROR)
