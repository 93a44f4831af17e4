"""Parquet writers used inside workers (pyarrow does the format; fsspec the storage).

- ``write_parts``: a stream phase's batch -> one part file per chunk it holds, named uniquely
  (a retried task writes new names; the run loop commits only the parts it was told about).
- ``PartitionedWriter``: the final partitions of one chunk, ``language=xx/part-<chunk>-<n>.parquet``,
  names fixed by chunk and sequence so a retried task rewrites the same files; small batches are
  buffered into row groups, files rotate at ``max_rows``. Each file's rows, bytes and SHA-256 are
  counted while it is written (``HashingSink``) and returned (``files``), so the manifest is built
  without reading a file back.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenmill.engine.io.storage import Storage
from tokenmill.engine.schema import CHUNK

ROW_GROUP_ROWS = 20_000
GROUP_BYTES = 8 << 20      # a partition's buffer is written as a row group at this size ...
BUFFER_BYTES = 32 << 20    # ... and every buffer when all of them hold this much


def _codec(compression: str) -> Optional[str]:
    return None if compression == "none" else compression


def write_table(store: Storage, path: str, table: pa.Table, compression: str = "zstd") -> None:
    if store.local:
        pq.write_table(table, path, compression=_codec(compression))
        return
    with store.open(path, "wb") as fh:
        pq.write_table(table, fh, compression=_codec(compression))


def write_parts(batch: pa.Table, folder_url: str) -> list[tuple[int, str, int, int]]:
    """Write a batch under ``folder_url``, one file per chunk it holds; [(chunk, url, rows, tokens)],
    tokens: the ``num_tokens`` of its live rows."""
    if batch.num_rows == 0:
        return []
    store = Storage(folder_url)
    store.makedirs(store.root)
    chunks = pc.unique(batch[CHUNK]).to_pylist()
    out = []
    for chunk in sorted(chunks):
        part = batch if len(chunks) == 1 else batch.filter(pc.equal(batch[CHUNK], chunk))
        path = store.path(f"part-c{chunk:05d}-{uuid.uuid4().hex[:12]}.parquet")
        write_table(store, path, part, "zstd")
        live = pc.is_null(part["reject_stage"])
        out.append((chunk, store.url(path), part.num_rows, pc.sum(pc.filter(part["num_tokens"], live)).as_py() or 0))
    return out


class HashingSink:
    """A binary file being written, with the bytes and SHA-256 of what went through it."""

    def __init__(self, handle):
        self.handle, self.sha, self.bytes, self.closed = handle, hashlib.sha256(), 0, False

    def write(self, data) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.bytes += view.nbytes
        self.handle.write(view)
        return view.nbytes

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self.handle.flush()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.handle.close()
            self.closed = True


class _OpenFile:
    def __init__(self):
        self.writer = None
        self.sink: Optional[HashingSink] = None
        self.rel = ""
        self.rows = 0
        self.seq = 0
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.buffered_bytes = 0


class PartitionedWriter:
    """Writes tables into ``<folder>/<key>=<value>/`` (or ``<folder>/`` without a key) as
    ``part-<prefix>-<seq>.parquet``; returns the paths written from ``close``."""

    def __init__(self, folder_url: str, prefix: str, key: Optional[str] = None, compression: str = "zstd",
                 max_rows: int = 200_000, group_rows: int = ROW_GROUP_ROWS, buffer_bytes: int = BUFFER_BYTES):
        self.store = Storage(folder_url)
        self.prefix, self.key, self.compression = prefix, key, compression
        self.max_rows, self.group_rows, self.buffer_bytes = max_rows, min(group_rows, max_rows), buffer_bytes
        self.files: dict[str, _OpenFile] = {}
        self.written: list[str] = []
        self.described: list[dict] = []   # {"path" (relative to the folder), "rows", "bytes", "sha256"}
        self.buffered_bytes = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self.key is None:
            self._buffer("", table)
        else:
            # take() copies each partition's rows: a buffered slice would keep the whole batch alive
            order = pc.sort_indices(table[self.key])
            counts = pc.value_counts(table[self.key])
            start = 0
            for value, n in sorted(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()),
                                   key=lambda x: x[0]):
                self._buffer(value, table.take(order.slice(start, n)))
                start += n
        if self.buffered_bytes > self.buffer_bytes:
            for value in list(self.files):
                self._flush(value)

    def _buffer(self, value: str, table: pa.Table) -> None:
        f = self.files.setdefault(value, _OpenFile())
        f.buffer.append(table)
        f.buffered += table.num_rows
        f.buffered_bytes += table.nbytes
        self.buffered_bytes += table.nbytes
        if f.buffered >= self.group_rows or f.buffered_bytes >= GROUP_BYTES:
            self._flush(value)

    def _flush(self, value: str) -> None:
        f = self.files[value]
        if not f.buffer:
            return
        table = pa.concat_tables(f.buffer).combine_chunks()
        self.buffered_bytes -= f.buffered_bytes
        f.buffer, f.buffered, f.buffered_bytes = [], 0, 0
        while table.num_rows:
            if f.writer is None:
                self._open(value, f, table.schema)
            take = min(table.num_rows, self.max_rows - f.rows)
            f.writer.write_table(table.slice(0, take), row_group_size=self.group_rows)
            f.rows += take
            table = table.slice(take)
            if f.rows >= self.max_rows:
                self._close(f)

    def _open(self, value: str, f: _OpenFile, schema: pa.Schema) -> None:
        folder = self.store.path(f"{self.key}={value}") if self.key else self.store.root
        self.store.makedirs(folder)
        path = f"{folder}/part-{self.prefix}-{f.seq:03d}.parquet"
        f.sink = HashingSink(self.store.open(path, "wb"))
        f.writer = pq.ParquetWriter(f.sink, schema, compression=_codec(self.compression))
        f.rel = self.store.rel(path, self.store.root)
        f.seq += 1
        self.written.append(self.store.url(path))

    def _close(self, f: _OpenFile) -> None:
        if f.writer is not None:
            f.writer.close()
            f.sink.close()
            self.described.append({"path": f.rel, "rows": f.rows, "bytes": f.sink.bytes,
                                   "sha256": f.sink.sha.hexdigest()})
        f.writer, f.sink, f.rows = None, None, 0

    def close(self) -> list[str]:
        for value, f in self.files.items():
            self._flush(value)
            self._close(f)
        return self.written


def write_hive(url: str, table: pa.Table, cols: Optional[list[str]] = None, compression: str = "zstd") -> int:
    """Write ``table`` under ``url`` in hive-style sub-folders (``col=value/``) of ``cols``, without
    those columns, one uniquely named file per folder; returns the number of files written."""
    store, files = Storage(url), 0
    for folder, part in _hive_parts(table, cols):
        path = store.path(*folder, f"{uuid.uuid4().hex}.parquet")
        store.makedirs(path.rsplit("/", 1)[0])
        write_table(store, path, part, compression)
        files += 1
    return files


def _hive_parts(table: pa.Table, cols: Optional[list[str]]):
    """(sub-folder names, rows) of each distinct value combination of ``cols``."""
    if not cols:
        yield [], table
        return
    for values in table.select(cols).group_by(cols).aggregate([]).to_pylist():
        mask = None
        for c in cols:
            m = pc.equal(table[c], values[c])
            mask = m if mask is None else pc.and_(mask, m)
        yield [f"{c}={values[c]}" for c in cols], table.filter(mask).drop_columns(cols)
