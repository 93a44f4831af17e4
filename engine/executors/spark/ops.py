"""``global_ops.DatasetOps`` on Spark DataFrames: what a multi-step global stage runs on.

A stage's tables have any Arrow schema (uint64 and list columns included, which Spark's types
cannot all hold), so a dataset here is a DataFrame of Arrow IPC pieces, one column ``_blob``: each
row is a table. ``map`` is a ``mapInArrow`` over the pieces; ``partition_map`` cuts every piece by
partition (``global_ops.pack_partitions``), lets Spark's own shuffle bring a partition's pieces
together (``groupBy(_part).applyInArrow``) and calls the stage's function there; ``materialize``
is a checkpoint, which cuts an iteration's lineage (connected-components rounds). The engine
moves a few pieces per block, never one row per document.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Optional

import pyarrow as pa

from tokenmill.engine.global_ops import BLOB, PART, SRC, _ipc, call_on_partition, pack_partitions, split_rows
from tokenmill.engine.io.writers import write_hive

BLOB_DDL = f"{BLOB} binary"
BLOB_SCHEMA = pa.schema([(BLOB, pa.large_binary())])
PIECES_DDL = f"{PART} int, {SRC} tinyint, {BLOB} binary"
WRITTEN_DDL = "files int"


def spark_types(table: pa.Table) -> pa.Table:
    """Strings and binaries as large types: what Spark expects back from Python with
    ``spark.sql.execution.arrow.useLargeVarTypes`` (which tokenmill always sets)."""
    def large(t: pa.DataType) -> pa.DataType:
        return pa.large_string() if pa.types.is_string(t) else pa.large_binary() if pa.types.is_binary(t) else t
    return table.cast(pa.schema([f.with_type(large(f.type)) for f in table.schema]))


def to_blobs(table: pa.Table) -> pa.RecordBatch:
    """One table as one row of a blob DataFrame (none for an empty table)."""
    blobs = [_ipc(table)] if table.num_rows else []
    return pa.RecordBatch.from_arrays([pa.array(blobs, pa.large_binary())], names=[BLOB])


def from_blobs(batch: pa.RecordBatch) -> Iterator[pa.Table]:
    """The tables a batch of blob rows holds."""
    for blob in batch.column(0):
        yield pa.ipc.open_stream(blob.as_buffer()).read_all()


def _map_fn(fn: Callable[..., pa.Table], fn_kwargs: dict):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for table in from_blobs(batch):
                yield to_blobs(fn(table, **fn_kwargs))
    return run


def _pack_fn(key: str, parts: int, src: int):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for table in from_blobs(batch):
                pieces = pack_partitions(table, key, parts, src)
                yield from pieces.to_batches()
    return run


def _group_fn(fn: Callable[..., pa.Table], n_inputs: int, fn_kwargs: dict):
    def run(pieces: pa.Table) -> pa.Table:
        out = call_on_partition(pieces, fn, n_inputs, fn_kwargs)
        return pa.Table.from_batches([to_blobs(out)], schema=BLOB_SCHEMA)
    return run


def _read_fn(urls: list[str]):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from tokenmill.engine.worker import read_parquet_file

        for batch in batches:
            for i in batch.column(0).to_pylist():
                yield to_blobs(read_parquet_file(urls[i]))
    return run


def _write_fn(url: str, partition_cols: Optional[list[str]]):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        files = 0
        for batch in batches:
            for table in from_blobs(batch):
                files += write_hive(url, table, partition_cols)
        yield pa.RecordBatch.from_arrays([pa.array([files], pa.int32())], names=["files"])
    return run


class SparkDatasetOps:
    """Datasets are DataFrames of Arrow IPC pieces; ``parts`` partitions per shuffle;
    ``checkpoint``: ``local`` (executors' storage) or ``reliable`` (the checkpoint folder)."""

    def __init__(self, spark, parts: int, run_id: str = "run", checkpoint: str = "local"):
        self.spark, self.parts, self.run_id, self.checkpoint = spark, max(1, parts), run_id, checkpoint

    def partition_map(self, inputs: list, key: str, fn: Callable[..., pa.Table], **fn_kwargs):
        packed = [df.mapInArrow(_pack_fn(key, self.parts, i), PIECES_DDL) for i, df in enumerate(inputs)]
        pieces = packed[0]
        for other in packed[1:]:
            pieces = pieces.unionAll(other)
        return pieces.groupBy(PART).applyInArrow(_group_fn(fn, len(inputs), fn_kwargs), BLOB_DDL)

    def map(self, data, fn: Callable[..., pa.Table], **fn_kwargs):
        return data.mapInArrow(_map_fn(fn, fn_kwargs), BLOB_DDL)

    def from_rows(self, table: pa.Table, blocks: int):
        slices = split_rows(table, blocks)
        rows = [(_ipc(t),) for t in slices]
        return self.spark.createDataFrame(rows, BLOB_DDL).repartition(max(1, len(rows)))

    def materialize(self, data):
        return data.localCheckpoint(eager=True) if self.checkpoint == "local" else data.checkpoint(eager=True)

    def collect(self, data) -> pa.Table:
        tables = [t for batch in data.toArrow().to_batches() for t in from_blobs(batch) if t.num_rows]
        return pa.concat_tables(tables) if tables else pa.table({})

    def union(self, datas: list):
        out = datas[0]
        for other in datas[1:]:
            out = out.unionAll(other)
        return out

    def read_parquet(self, urls: list[str]):
        n = max(1, min(len(urls), self.parts))
        return self.spark.range(0, len(urls), 1, n).mapInArrow(_read_fn(urls), BLOB_DDL)

    def write_parquet(self, data, url: str, partition_cols=None) -> None:
        data.mapInArrow(_write_fn(url, partition_cols), WRITTEN_DDL).collect()
