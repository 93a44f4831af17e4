"""The rows readers yield: document tables with read-time rejects, and the row that stands for a
whole file that could not be read (fully).

Reject reasons at read: ``invalid_json``, ``invalid_utf8``, ``invalid_unicode`` (text with a lone
UTF-16 surrogate, e.g. a JSON ``"\\ud800"`` escape; it is kept with U+FFFD in its place),
``contains_nul``, ``empty_text``, ``missing_text``, ``too_large``, ``not_text``,
``html_extraction_failed``. A file gives one row with reason ``unreadable_file`` (nothing read)
or ``truncated_file`` (the rows before the damage are kept), its path and error in ``meta``.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.config import InputConfig
from tokenmill.engine.io.transient import TransientError, is_transient
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
#: the meta key that notes what was cut from a row: {"text"|"line"|"id"|"url"|"meta": {"bytes", "sha256"}}
CUT = "_cut"
#: the limits of a ``RowBatch`` made without a config (``max_field_bytes``, ``reject_text_bytes``)
DEFAULT_LIMITS = InputConfig.model_construct(paths=["-"])


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


def doc_id(given, key: str) -> str:
    """A record's id: as given (other types by ``id_text``), or its row key where it has none (no
    field, null, or an empty string: a dedup reason must name the document it kept)."""
    if given is None or given == "":
        return key
    return given if isinstance(given, str) else id_text(given)


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


# -- cutting rows to size: a reject keeps a prefix of its text, id/url/meta at most max_field_bytes --
def utf8_head(data, max_bytes: int) -> str:
    """The first (at most) ``max_bytes`` bytes of UTF-8 ``data`` as text, never half a character
    (other invalid bytes become U+FFFD)."""
    if len(data) > max_bytes:
        cut = max_bytes
        while cut > max(0, max_bytes - 3) and data[cut] & 0xC0 == 0x80:  # a continuation byte: back to its lead
            cut -= 1
        data = data[:cut]
    return bytes(data).decode("utf-8", "replace")


def cut_note(data) -> dict:
    """The full length (bytes) and SHA-256 of a value that was cut."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def with_notes(meta: Optional[str], notes: dict) -> str:
    """``meta`` (a JSON object, or None) with ``notes`` added under ``_cut``."""
    try:
        obj = json.loads(meta) if meta else {}
    except ValueError:
        obj = meta
    obj = obj if isinstance(obj, dict) else {"_meta": obj}
    old = obj.get(CUT)
    obj[CUT] = {**(old if isinstance(old, dict) else {}), **notes}
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)


def _over(col, max_bytes: int) -> pa.ChunkedArray:
    return pc.fill_null(pc.greater(pc.binary_length(col), max_bytes), False)


def _value_bytes(col: pa.ChunkedArray, i: int) -> memoryview:
    """The bytes of string value ``i`` of a column, read in place (a huge value is never copied)."""
    for chunk in col.chunks:
        if i < len(chunk):
            break
        i -= len(chunk)
    large = pa.types.is_large_string(chunk.type) or pa.types.is_large_binary(chunk.type)
    _, offsets, data = chunk.buffers()[:3]
    j = chunk.offset + i
    start, end = np.frombuffer(offsets, np.int64 if large else np.int32)[j:j + 2]
    return memoryview(data).cast("B")[start:end] if data is not None else memoryview(b"")


def _cut_column(col: pa.ChunkedArray, rows: list[int], max_bytes: int, name: str, notes: dict) -> pa.ChunkedArray:
    """``col`` with the values at ``rows`` cut to ``max_bytes`` (each noted in ``notes[row][name]``)."""
    values: list = [None] * len(col)
    mask = np.zeros(len(col), bool)
    for i in rows:
        data = _value_bytes(col, i)
        notes.setdefault(i, {})[name] = cut_note(data)
        values[i], mask[i] = utf8_head(data[:max_bytes + 3], max_bytes), True
    return pc.if_else(pa.array(mask), pa.array(values, col.type), col)


def cut_rows(table: pa.Table, limits) -> pa.Table:
    """A document table with its oversized values cut: a rejected row's text to
    ``limits.reject_text_bytes``, ``id``, ``url`` and ``meta`` to ``limits.max_field_bytes``; what
    was cut is noted in ``meta`` under ``_cut`` (a cut meta becomes ``{"_cut": ..., "_meta_prefix":
    its first half-limit bytes}``), ``num_chars`` counts the text kept. Checked column-wise; only the
    rare cut rows are handled one by one, each value hashed in place."""
    keep, most = limits.reject_text_bytes, limits.max_field_bytes
    over = {"text": pc.and_(pc.is_valid(table["reject_reason"]), _over(table["text"], keep))}
    over.update({name: _over(table[name], most) for name in ("id", "url", "meta")})
    rows = {name: pc.indices_nonzero(mask).to_pylist() for name, mask in over.items() if pc.any(mask).as_py()}
    if not rows:
        return table
    notes: dict[int, dict] = {}
    for name, idx in rows.items():
        if name != "meta":
            limit = keep if name == "text" else most
            table = table.set_column(table.schema.get_field_index(name), name,
                                     _cut_column(table[name], idx, limit, name, notes))
    table = table.set_column(table.schema.get_field_index("meta"), "meta",
                             _noted_meta(table["meta"], rows.get("meta", []), most, notes))
    if "text" in rows:
        chars = pc.fill_null(pc.utf8_length(table["text"]), 0).cast(pa.int64())
        table = table.set_column(table.schema.get_field_index("num_chars"), "num_chars", chars)
    return table


def _noted_meta(meta: pa.ChunkedArray, cut: list[int], most: int, notes: dict) -> pa.ChunkedArray:
    """The meta column with each row's notes added; a meta over ``most`` bytes kept as a prefix."""
    values: list = [None] * len(meta)
    mask = np.zeros(len(meta), bool)
    for i in cut:
        data = _value_bytes(meta, i)
        notes.setdefault(i, {})["meta"] = cut_note(data)
        values[i] = json.dumps({"_meta_prefix": utf8_head(data[:most // 2 + 3], most // 2)}, ensure_ascii=False)
    for i, note in notes.items():
        values[i] = with_notes(values[i] if values[i] is not None else meta[i].as_py(), note)
        mask[i] = True
    return pc.if_else(pa.array(mask), pa.array(values, meta.type), meta)


class RowBatch:
    """Accumulates rows column-wise and emits DOCUMENT_SCHEMA tables, their oversized values cut
    (``cut_rows``) to ``limits`` (an ``InputConfig``; None: its defaults)."""

    def __init__(self, batch_rows: int, limits=None):
        self.batch_rows = batch_rows
        self.limits = limits if limits is not None else DEFAULT_LIMITS
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
            table = document_table(self.cols)
        except UnicodeEncodeError:  # a lone surrogate somewhere: rare, so only then look for it
            table = document_table(self._without_surrogates())
        finally:
            self._reset()  # a batch that failed is not emitted twice
        return cut_rows(table, self.limits)

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


def read_guarded(b: RowBatch, path: str, source: str, tables: Iterator[pa.Table],
                 confirm: Optional[Callable[[BaseException], bool]] = None) -> Iterator[pa.Table]:
    """A reader's tables, then the rows still buffered in ``b``; when reading stops on damage (a cut
    file, an unreadable path, a parser's error) the file's error row goes before those last rows,
    so every record read before the damage is kept. ``confirm(exc)``: whether the damage repeats
    when the file is read again; when it does not (a stream that ended early without an error),
    it was not damage: a transient error fails the task, which is retried."""
    failure = None
    try:
        yield from tables
    except BaseException as exc:
        if not is_failure(exc):
            raise
        failure = exc
    if failure is not None and confirm is not None and not confirm(failure):
        raise TransientError(f"{path}: {failure} (read again, the damage was not there: the first read "
                             "was cut short in transit)") from failure
    if failure is not None:
        file_error(b, path, source, failure, TRUNCATED if b.records else FILE_ERROR, b.records)
    out = b.emit()
    if out is not None:
        yield out


def file_error_table(path: str, source: str, exc: BaseException, kind: str, kept: Optional[int] = None) -> pa.Table:
    b = RowBatch(1)
    file_error(b, path, source, exc, kind, kept)
    return b.emit()
