"""The rows readers yield: document tables with read-time rejects, and the row that stands for a
whole file that could not be read (fully).

Reject reasons at read: ``invalid_json``, ``invalid_utf8``, ``invalid_unicode`` (text with a lone
UTF-16 surrogate, e.g. a JSON ``"\\ud800"`` escape; it is kept with U+FFFD in its place),
``contains_nul``, ``empty_text``, ``missing_text``, ``too_large``, ``not_text``,
``html_extraction_failed``. A file gives one row with reason ``unreadable_file`` (nothing read)
or ``truncated_file`` (the rows before the damage are kept), its path and error in ``meta``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.io.transient import is_transient
from tokenmill.engine.schema import DOCUMENT_SCHEMA

READ_STAGE = "read"
FILE_ERROR = "unreadable_file"
TRUNCATED = "truncated_file"
QUARANTINED = "quarantined"   # a file whose reading tasks were killed again and again (out of memory)
#: reasons of rows that stand for a whole file (the report lists them under file_errors)
FILE_REASONS = (FILE_ERROR, TRUNCATED, QUARANTINED)
INVALID_UNICODE = "invalid_unicode"
MAX_BATCH_BYTES = 64 << 20
_STRING_COLUMNS = ("id", "row_key", "text", "source", "url", "meta")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class NoRecords(Exception):
    """A file that holds no record at all (empty, or nothing of the kind its reader reads)."""


def is_failure(exc: BaseException) -> bool:
    """An error a reader turns into a file-error row: any ``Exception``, and a panic inside a
    native parser (pyo3's ``PanicException`` derives from ``BaseException``); never an interrupt,
    an exit or a generator being closed, and never a transient I/O error (``transient.is_transient``:
    a timeout, a reset, throttling), which fails the task so that the engine retries it and the file
    is never marked done with records missing."""
    if is_transient(exc):
        return False
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def check_text(text, max_bytes: int) -> Optional[str]:
    """Reason to reject a document's text at read time, or None."""
    if not isinstance(text, str):
        return "missing_text"
    if not text.strip():
        return "empty_text"
    if "\x00" in text:
        return "contains_nul"
    if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes):
        return "too_large"
    return None


def id_text(value) -> str:
    """An id given as another type, as a string: a list or an object as JSON, others by ``str``."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def replace_surrogates(value: Optional[str]) -> Optional[str]:
    """A string Arrow can store: each lone surrogate replaced by U+FFFD."""
    if value is None or value.isascii():
        return value
    return _LONE_SURROGATE.sub("\ufffd", value)


def document_table(cols: dict) -> pa.Table:
    """A DOCUMENT_SCHEMA table from Arrow arrays or lists: id, row_key, text, source, url, meta,
    reject_reason (reject_stage, num_chars and num_tokens are derived)."""
    arrays = {k: v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v, DOCUMENT_SCHEMA.field(k).type)
              for k, v in cols.items()}
    n = len(arrays["id"])
    reasons = arrays["reject_reason"]
    arrays["reject_stage"] = pc.if_else(pc.is_valid(reasons), pa.scalar(READ_STAGE), pa.scalar(None, pa.string()))
    arrays["num_chars"] = pc.fill_null(pc.utf8_length(arrays["text"]), 0).cast(pa.int64())
    arrays["num_tokens"] = pa.nulls(n, pa.int64())
    return pa.Table.from_pydict({f.name: arrays[f.name] for f in DOCUMENT_SCHEMA}, schema=DOCUMENT_SCHEMA)


class RowBatch:
    """Accumulates rows column-wise and emits DOCUMENT_SCHEMA tables."""

    def __init__(self, batch_rows: int):
        self.batch_rows = batch_rows
        self.records = 0   # record rows added so far (file rows not counted)
        self._reset()

    def _reset(self):
        self.cols = {k: [] for k in ("id", "row_key", "text", "source", "url", "meta", "reject_reason")}
        self.nbytes = 0

    def add(self, id, text, source, url=None, meta=None, reason=None, row_key=None):
        c = self.cols
        c["id"].append(id)
        c["row_key"].append(row_key or id)
        c["text"].append(text)
        c["source"].append(source)
        c["url"].append(url)
        c["meta"].append(meta)
        c["reject_reason"].append(reason)
        self.nbytes += len(text) if text else 0
        self.records += reason not in FILE_REASONS

    def full(self) -> bool:
        return len(self.cols["id"]) >= self.batch_rows or self.nbytes >= MAX_BATCH_BYTES

    def emit(self) -> Optional[pa.Table]:
        if not self.cols["id"]:
            return None
        try:
            return document_table(self.cols)
        except UnicodeEncodeError:  # a lone surrogate somewhere: rare, so only then look for it
            return document_table(self._without_surrogates())
        finally:
            self._reset()  # a batch that failed is not emitted twice

    def _without_surrogates(self) -> dict:
        """The columns with lone surrogates replaced; a text that had one is rejected as
        ``invalid_unicode`` unless its row is already rejected."""
        cols = {k: [replace_surrogates(v) for v in self.cols[k]] if k in _STRING_COLUMNS else self.cols[k]
                for k in self.cols}
        reasons = zip(self.cols["text"], cols["text"], self.cols["reject_reason"])
        cols["reject_reason"] = [INVALID_UNICODE if reason is None and new != old else reason
                                 for old, new, reason in reasons]
        return cols


def file_error(b: RowBatch, path: str, source: str, exc: BaseException, kind: str, kept: Optional[int] = None) -> None:
    """Add the row that stands for a whole file: its path and error (and how many records were
    read before it, when some were) in ``meta``."""
    message = f"{type(exc).__name__}: {exc}"
    if kept:
        message = f"{message[:1900]}; {kept} records were read before it"
    meta = json.dumps({"path": path, "error": message[:2000]})
    b.add(f"{source}:{kind}", "", source, None, meta, kind)


def read_guarded(b: RowBatch, path: str, source: str, tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """A reader's tables, then the rows still buffered in ``b``; when reading stops on damage (a cut
    file, an unreadable path, a parser's error) the file's error row goes before those last rows,
    so every record read before the damage is kept."""
    failure = None
    try:
        yield from tables
    except BaseException as exc:
        if not is_failure(exc):
            raise
        failure = exc
    if failure is not None:
        file_error(b, path, source, failure, TRUNCATED if b.records else FILE_ERROR, b.records)
    out = b.emit()
    if out is not None:
        yield out


def file_error_table(path: str, source: str, exc: BaseException, kind: str, kept: Optional[int] = None) -> pa.Table:
    b = RowBatch(1)
    file_error(b, path, source, exc, kind, kept)
    return b.emit()
