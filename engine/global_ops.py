"""The operations a multi-step global stage asks of an engine, and the engine-neutral pieces every
executor shares to implement them.

A global stage whose algorithm takes several shuffles (MinHash: band buckets, then connected
components iterated to a fixpoint) writes that algorithm once, in ``stages/``, as pure functions
over Arrow tables joined by these operations; each executor implements them with its engine's own
shuffle. Datasets are opaque handles to the stage.

``partition_map`` is the one shuffle: every row of every input whose ``key`` hashes to the same
partition meets in one call of a pure function (so it serves group-reduce and join alike). Rows
travel packed: each input block is cut by partition into Arrow IPC pieces (``pack_partitions``),
the engine's shuffle groups the pieces by partition id, and ``unpack_partition`` rebuilds the
inputs' tables for the function. The engine moves a few pieces per block instead of one row per
document; memory per worker is bounded by its partition's size.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PART, SRC, BLOB = "_part", "_src", "_blob"
PIECE_SCHEMA = pa.schema([(PART, pa.int32()), (SRC, pa.int8()), (BLOB, pa.large_binary())])
_MIX = np.uint64(0x9E3779B97F4A7C15)


class GlobalStepError(RuntimeError):
    """A global step cannot produce a right answer (e.g. it did not converge within its cap)."""


class DamagedState(RuntimeError):
    """What earlier runs left for this one to read (an index folder) is damaged: the run cannot
    give a right answer until someone restores or removes it. Raised before the run's work for what
    it reads; for an index it only writes, when its global step merges the index's folders."""


class DatasetOps(Protocol):
    """What an executor gives a global stage's ``global_step``; ``run_id`` names the run (the same on
    a re-run of the same config and input); ``check()`` raises when the run may no longer change
    what other runs read (it lost its output's lease): call it before each such change."""

    run_id: str
    check: Callable[[], None]

    def partition_map(self, inputs: list, key: str, fn: Callable[..., pa.Table], **fn_kwargs) -> Any:
        """Hash-partition every input by its ``key`` column (int64/uint64) and call
        ``fn(*tables, **fn_kwargs)`` once per partition with that partition's rows of each input
        (``None`` for an input with no row there); the results form the returned dataset."""

    def map(self, data, fn: Callable[..., pa.Table], **fn_kwargs) -> Any:
        """``fn(table)`` on each block, no shuffle."""

    def materialize(self, data) -> Any:
        """Compute now and keep the result (cuts an iteration's lineage)."""

    def from_rows(self, table: pa.Table, blocks: int) -> Any:
        """A small driver table (work items: file names, ranges) as a dataset of about ``blocks``
        blocks, so ``map`` runs one task per block."""

    def collect(self, data) -> pa.Table:
        """A small dataset as one table on the driver (sums, checks; never documents)."""

    def union(self, datas: list) -> Any:
        """The rows of several datasets of one schema."""

    def read_parquet(self, urls: list[str]) -> Any:
        """The rows of these Parquet files (named one by one: no folder listing, no marker files)."""

    def write_parquet(self, data, url: str, partition_cols: Optional[list[str]] = None) -> None:
        """Write a dataset as Parquet under ``url`` (hive-partitioned by ``partition_cols``)."""


def partition_ids(keys: pa.Array, parts: int) -> np.ndarray:
    """Partition of each key: a 64-bit mix of the key, modulo ``parts`` (stable everywhere)."""
    k = np.asarray(pc.fill_null(keys, 0).cast(pa.int64()).to_numpy(zero_copy_only=False)).view(np.uint64)
    with np.errstate(over="ignore"):
        h = k * _MIX
        h ^= h >> np.uint64(29)
    return (h % np.uint64(parts)).astype(np.int32)


def pack_partitions(table: pa.Table, key: str, parts: int, src: int) -> pa.Table:
    """One row per partition present in ``table``: (partition, input index, Arrow IPC of its rows)."""
    if table.num_rows == 0:
        return PIECE_SCHEMA.empty_table()
    pid = partition_ids(table[key], parts)
    order = np.argsort(pid, kind="stable")
    sorted_pid = pid[order]
    table = table.take(pa.array(order))
    starts = np.flatnonzero(np.r_[True, sorted_pid[1:] != sorted_pid[:-1]])
    ends = np.r_[starts[1:], len(sorted_pid)]
    blobs = [_ipc(table.slice(s, e - s)) for s, e in zip(starts, ends)]
    return pa.table({PART: pa.array(sorted_pid[starts], pa.int32()), SRC: pa.array([src] * len(starts), pa.int8()),
                     BLOB: pa.array(blobs, pa.large_binary())}, schema=PIECE_SCHEMA)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def split_rows(table: pa.Table, blocks: int) -> list[pa.Table]:
    """``table`` cut into at most ``blocks`` slices of nearly equal row counts (none empty)."""
    n = table.num_rows
    blocks = max(1, min(blocks, n))
    edges = np.linspace(0, n, blocks + 1).astype(int)
    return [table.slice(a, b - a) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def unpack_partition(pieces: pa.Table, n_inputs: int) -> list[Optional[pa.Table]]:
    """The tables of each input in one partition's pieces (``None`` where an input has none)."""
    out: list[Optional[pa.Table]] = []
    srcs = pieces[SRC].to_numpy()
    blobs = pieces[BLOB]
    for i in range(n_inputs):
        tables = [pa.ipc.open_stream(blobs[j].as_buffer()).read_all() for j in np.flatnonzero(srcs == i)]
        out.append(pa.concat_tables(tables) if tables else None)
    return out


def call_on_partition(pieces: pa.Table, fn: Callable[..., pa.Table], n_inputs: int, fn_kwargs: dict) -> pa.Table:
    """The body an executor runs per partition: unpack, call the stage's function."""
    return fn(*unpack_partition(pieces, n_inputs), **fn_kwargs)


#: node ids use the low 56 bits; a stage may use the sign and the top 7 bits (e.g. earlier runs' ids)
NODE_BITS = 56


def node_ids(base: int, live: np.ndarray) -> pa.Array:
    """Dense int64 ids for the live rows of one part file: ``base`` (the rows of every part before
    it in the run, in chunk and part order) plus each live row's position in the file; unique per
    run, the same on every engine and every re-run, with no cap on parts or chunks below 2^56 rows."""
    positions = np.flatnonzero(live)
    if base + len(live) > 1 << NODE_BITS:
        raise GlobalStepError(f"node ids: a run of more than 2^{NODE_BITS} rows exceeds the id layout")
    return pa.array(np.int64(base) + positions.astype(np.int64), pa.int64())


def part_bases(rows: list[int]) -> list[int]:
    """The node id each part's rows start at, from the parts' row counts in run order."""
    return np.concatenate([[0], np.cumsum(rows, dtype=np.int64)[:-1]]).astype(np.int64).tolist() if rows else []


def chunk_of(nodes: pa.Array, chunk_bases: np.ndarray) -> pa.Array:
    """The chunk of each node id: the last chunk whose first node id is at most it
    (``chunk_bases[i]``: chunk ``i``'s first id; an empty chunk has the next one's)."""
    n = np.asarray(pc.fill_null(nodes, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return pa.array(np.searchsorted(np.asarray(chunk_bases, dtype=np.int64), n, side="right") - 1, pa.int32())
