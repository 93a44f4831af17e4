"""Readers: input files (JSONL plain/.gz/.zst, Parquet, WARC) -> document batches.

Bad input is data: a malformed line, invalid UTF-8 or Unicode, NUL bytes, empty or over-large
text becomes a row with ``reject_stage='read'`` and a reason (``read_rows``); a file that cannot
be read becomes one ``unreadable_file`` row and one cut short or corrupt one a ``truncated_file``
row after the records read before the damage, each with its path and the error in ``meta``, so
the report lists it and the run goes on. ``read_file`` guarantees it for every reader: whatever
a reader raises fails only that file, and a file that yields no row at all (empty) is reported.
This module lists input files and dispatches; each format has its module (``read_jsonl``,
``read_parquet``, ``read_warc``), decoding and damage detection are in ``decode``. Paths may be
local or any fsspec/pyarrow URL.
"""
from __future__ import annotations

import glob as _glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa

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
from tokenmill.engine.io.storage import Storage


@dataclass(frozen=True)
class InputFile:
    path: str     # full path or URL
    source: str   # stable name: path relative to the pattern's base folder
    format: str   # jsonl | parquet | warc


def detect_format(path: str) -> Optional[str]:
    name = path.lower()
    for ext in (".gz", ".zst", ".zstd", ".bz2", ".xz"):
        if name.endswith(ext) and not name.endswith(".warc.gz"):
            name = name[: -len(ext)]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".warc", ".warc.gz", ".arc.gz")):
        return "warc"
    return None


def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return "/".join(parts[:i])
    return os.path.dirname(pattern)


def list_input_files(patterns: list[str], fmt: str = "auto") -> tuple[list[InputFile], list[tuple[str, str]]]:
    """Expand files/folders/globs in order; returns (files, [(pattern, problem)])."""
    files: list[InputFile] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    sources: set[str] = set()
    for pattern in patterns:
        if "://" in pattern:
            st = Storage(pattern)  # asks the store afresh: a cached listing would miss new input
            expanded = []
            for m in sorted(st.fs.glob(st.root)):
                expanded += [st.url(p) for p in st.find(m)] if st.fs.isdir(m) else [st.url(m)]
        else:
            matches = sorted(_glob.glob(pattern, recursive=True)) if any(c in pattern for c in "*?[") else [pattern]
            expanded = []
            for m in matches:
                if os.path.isdir(m):
                    expanded += sorted(os.path.join(r, f) for r, _, fs_ in os.walk(m) for f in fs_)
                else:
                    expanded.append(m)
        if not expanded:
            problems.append((pattern, "matches no file"))
        base = _glob_base(pattern) if any(c in pattern for c in "*?[") else (pattern if os.path.isdir(pattern) else os.path.dirname(pattern))
        for path in expanded:
            if path in seen or os.path.basename(path.rstrip("/")).startswith((".", "_")):
                continue  # hidden files and markers (_SUCCESS, .crc) are never input
            f = fmt if fmt != "auto" else detect_format(path)
            if f is None:
                problems.append((path, "unknown file format (expected .jsonl[.gz|.zst], .parquet, .warc[.gz])"))
                continue
            seen.add(path)
            rel = os.path.relpath(path, base) if base and "://" not in path else os.path.basename(path)
            if rel in sources:  # two patterns give the same relative name: the full path keeps row_key unique
                rel = path.split("://", 1)[-1].lstrip("/")
            sources.add(rel)
            files.append(InputFile(path=path, source=rel, format=f))
    return files, problems


READERS = {"jsonl": read_jsonl, "parquet": read_parquet, "warc": read_warc}
#: what a record is, per format, for the report of a file that holds none
RECORD_KINDS = {"jsonl": "non-blank line", "parquet": "row", "warc": "response record"}


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
