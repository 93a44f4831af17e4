"""Parquet reader: one document per row, each record batch turned into rows column-wise.

Columns of any type are accepted. The text column: strings (or binary, decoded as UTF-8) are
checked with Arrow compute; a value that is not valid UTF-8 (Parquet does not check it) is
rejected as ``invalid_utf8`` with U+FFFD in place of the bad bytes; a column of another type
(numbers, lists, structs, all null) gives ``missing_text`` rows keeping the value as JSON. Id and
url columns of other types are rendered as strings (ids) or dropped (urls); other columns go to
``meta`` as JSON. A file without the text column, or whose footer cannot be read, is one
``unreadable_file`` row. Row groups are read one by one: one that fails (a corrupt page) is
skipped, the others are read, and the file gets a ``truncated_file`` row naming the lost groups.

Oversized values: Arrow must load a column chunk whole, but a text over ``max_doc_bytes`` is only
scanned in place (its checks are Arrow compute over the buffers) and rejected as ``too_large``
with a prefix, like every reject (``read_rows.cut_rows``: hashed in place, never copied whole);
a value of another column is shortened to ``max_field_bytes`` characters before it goes to
Python for ``meta``.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenmill.engine.io.read_rows import (
    FILE_ERROR,
    MAX_BATCH_BYTES,
    TRUNCATED,
    cut_rows,
    document_table,
    file_error_table,
    id_text,
    is_failure,
)
from tokenmill.engine.io.transient import TransientError, is_transient, open_for_reading

_STRING = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
_BINARY = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view, pa.types.is_fixed_size_binary)


def _is(typ: pa.DataType, checks) -> bool:
    return any(check(typ) for check in checks)


def _decode_rows(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Per-value UTF-8 decoding of a binary array that holds some invalid UTF-8 (rare): the
    strings, bad bytes replaced by U+FFFD, and a mask of the values that were invalid."""
    texts, bad = [], []
    for value in raw.to_pylist():
        try:
            texts.append(None if value is None else value.decode("utf-8"))
            bad.append(False)
        except UnicodeDecodeError:
            texts.append(value.decode("utf-8", "replace"))
            bad.append(True)
    return pa.array(texts, pa.large_string()), pa.array(bad, pa.bool_())


def as_utf8(col: pa.Array) -> Optional[tuple[pa.Array, Optional[pa.Array]]]:
    """A string or binary column as ``large_string`` and the mask of values that were not valid
    UTF-8 (None when all were); None for a column of another type."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if _is(col.type, _STRING):
        raw = col.cast(pa.large_string()).view(pa.large_binary())  # no check: Parquet never validated it
    elif _is(col.type, _BINARY):
        raw = col.cast(pa.large_binary())
    else:
        return None
    try:
        return raw.cast(pa.large_string()), None  # validates UTF-8 (fast, vectorized)
    except pa.ArrowInvalid:
        return _decode_rows(raw)


def _as_py(col: pa.Array) -> list:
    """Python values of a column; a value Python cannot hold (a date out of range, bytes in a
    nested string) becomes its Arrow text, or None."""
    try:
        return col.to_pylist()
    except Exception:
        return [_scalar_py(col[i]) for i in range(len(col))]


def _scalar_py(scalar: pa.Scalar):
    try:
        return scalar.as_py()
    except Exception:
        try:
            return str(scalar)
        except Exception:
            return None


def _strings(col: pa.Array, most: int) -> list:
    """Python values of any column, strings repaired (invalid UTF-8 replaced) and shortened to
    ``most`` characters in Arrow first, so that a huge value is never copied into Python."""
    utf8 = as_utf8(col)
    if utf8 is None:
        return _as_py(col)
    text = utf8[0]
    if (pc.max(pc.binary_length(text)).as_py() or 0) > most:
        text = pc.utf8_slice_codeunits(text, 0, most)
    return _as_py(text)


def _has_nul(text: pa.Array) -> pa.Array:
    """Which values hold a NUL byte; Arrow's substring search is slow (~250 MB/s), so a scan of
    the whole data buffer with numpy (~10 GB/s) comes first, and almost always settles it."""
    data = text.buffers()[2]
    if data is None or np.frombuffer(data, np.uint8).all():
        return pa.nulls(len(text), pa.bool_())
    return pc.match_substring(text, "\x00")


def text_and_reasons(col: pa.Array, max_bytes: int) -> tuple[pa.Array, pa.Array]:
    """The text column and each row's read-time reject reason (null: kept)."""
    utf8 = as_utf8(col)
    if utf8 is None:  # not text at all: keep the value (as JSON) in the reject row
        values = _as_py(col)
        text = pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in values],
                        pa.large_string())
        return text, pa.array(["missing_text"] * len(col), pa.string())
    text, bad = utf8
    nbytes = pc.binary_length(text)
    conditions = [pc.is_null(text), pc.or_(pc.equal(nbytes, 0), pc.utf8_is_space(text)),
                  _has_nul(text), pc.greater(nbytes, max_bytes)]
    reasons = ["missing_text", "empty_text", "contains_nul", "too_large"]
    if bad is not None:
        conditions, reasons = [bad] + conditions, ["invalid_utf8"] + reasons
    return text, pc.case_when(pc.make_struct(*conditions), *[pa.scalar(r) for r in reasons])


def ids_column(col: Optional[pa.Array], keys: pa.Array) -> pa.Array:
    """Ids as given (strings as they are, others by ``id_text``), the row key where null or empty."""
    if col is None:
        return keys
    utf8 = as_utf8(col)
    if utf8 is not None:
        ids = utf8[0].cast(pa.string())
    else:
        ids = pa.array([None if v is None else id_text(v) for v in _as_py(col)], pa.string())
    return pc.coalesce(pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids), keys)


def urls_column(col: Optional[pa.Array], n: int) -> pa.Array:
    utf8 = as_utf8(col) if col is not None else None
    return utf8[0].cast(pa.string()) if utf8 is not None else pa.nulls(n, pa.string())


def meta_column(cols: dict[str, pa.Array], n: int, most: int) -> pa.Array:
    """The other columns of each row as a JSON object (null values left out; None if none); a
    string over ``most`` bytes is shortened first (``cut_rows`` then cuts a meta still too long)."""
    if not cols:
        return pa.nulls(n, pa.string())
    values = {name: _strings(col, most) for name, col in cols.items()}
    out = []
    for i in range(n):
        extra = {k: v[i] for k, v in values.items() if v[i] is not None}
        out.append(json.dumps(extra, ensure_ascii=False, sort_keys=True, default=str) if extra else None)
    return pa.array(out, pa.string())


def batch_rows(rb: pa.RecordBatch, first_row: int, source: str, opts) -> pa.Table:
    """The document rows of one record batch, cut to size; row keys count rows from the file's start."""
    n = rb.num_rows
    cols = dict(zip(rb.schema.names, rb.columns))
    text, reasons = text_and_reasons(cols.pop(opts.text_field), opts.max_doc_bytes)
    keys = pa.array([f"{source}:{i}" for i in range(first_row, first_row + n)], pa.string())
    return cut_rows(document_table({
        "id": ids_column(cols.pop(opts.id_field, None), keys), "row_key": keys, "text": text,
        "source": pa.array([source] * n, pa.string()), "url": urls_column(cols.pop(opts.url_field, None), n),
        "meta": meta_column(cols, n, opts.max_field_bytes), "reject_reason": reasons,
    }), opts)


def split_by_bytes(table: pa.Table, limit: int = MAX_BATCH_BYTES) -> Iterator[pa.Table]:
    """Slices of at most ``limit`` bytes of text (a larger single row stands alone)."""
    sizes = pc.fill_null(pc.binary_length(table["text"]), 0)
    if (pc.sum(sizes).as_py() or 0) <= limit:
        yield table
        return
    start, acc = 0, 0
    for i, size in enumerate(sizes.to_pylist()):
        if acc and acc + size > limit:
            yield table.slice(start, i - start)
            start, acc = i, 0
        acc += size
    yield table.slice(start)


class BadRowGroups(Exception):
    """Row groups of a Parquet file that could not be read (the others were)."""

    def __init__(self, bad: list, total: int):
        groups = ", ".join(str(g) for g, _ in bad)
        g, exc = bad[0]
        super().__init__(f"{len(bad)} of {total} row groups could not be read ({groups}); "
                         f"row group {g}: {type(exc).__name__}: {exc}")


def read_row_groups(pf: pq.ParquetFile, f, opts, bad: list) -> Iterator[pa.Table]:
    """The rows of every row group that can be read, in batches; a row group that fails is
    skipped and noted in ``bad`` as (index, error), so one corrupt page loses only its group."""
    start = 0  # the group's first row in the file: row keys stay put when a group is skipped
    for g in range(pf.num_row_groups):
        first = start
        try:
            for rb in pf.iter_batches(batch_size=opts.batch_rows, row_groups=[g]):
                table = batch_rows(rb, first, f.source, opts)
                first += rb.num_rows
                yield from split_by_bytes(table)
        except Exception as exc:
            if is_transient(exc):
                raise
            if isinstance(exc, OSError) and not _fails_again(pf, g, opts):
                raise TransientError(f"{f.path}: row group {g}: {exc} (not damage: it reads on a second "
                                     "try)") from exc   # the task fails and is retried
            bad.append((g, exc))
        start += pf.metadata.row_group(g).num_rows


def _fails_again(pf: pq.ParquetFile, g: int, opts) -> bool:
    """Whether a row group whose read failed with an I/O error fails again when read once more,
    batch by batch (damage repeats; a read cut short in transit does not)."""
    try:
        for _ in pf.iter_batches(batch_size=opts.batch_rows, row_groups=[g]):
            pass
    except Exception as exc:
        return not is_transient(exc)
    return False


def read_parquet(f, opts) -> Iterator[pa.Table]:
    rows, bad = 0, []
    try:
        with open_for_reading(f.path) as fh:
            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            if opts.text_field not in names:
                raise KeyError(f"no column {opts.text_field!r} (columns: {', '.join(names)})")
            for table in read_row_groups(pf, f, opts, bad):
                rows += table.num_rows
                yield table
            if bad:
                raise BadRowGroups(bad, pf.num_row_groups)
    except BaseException as exc:
        if not is_failure(exc):
            raise
        yield file_error_table(f.path, f.source, exc, TRUNCATED if rows else FILE_ERROR, rows)
