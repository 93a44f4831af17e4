"""``global_ops.DatasetOps`` in one process: a dataset is a list of Arrow tables (blocks).

``partition_map`` packs every block by partition exactly as the engines do
(``global_ops.pack_partitions``), gathers each partition's pieces and calls the stage's function on
them (partitions run on the executor's thread pool, results kept in partition order); the other
operations are list operations. Every dataset is already computed, so ``materialize`` is free.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import pyarrow as pa

from tokenmill.engine.global_ops import PART, call_on_partition, pack_partitions, split_rows
from tokenmill.engine.io.writers import write_hive
from tokenmill.engine.worker import read_parquet_file


class LocalDatasetOps:
    """Datasets are lists of ``pa.Table``; ``parts`` partitions per shuffle; ``pool`` runs calls."""

    def __init__(self, parts: int, pool: ThreadPoolExecutor, run_id: str = "run"):
        self.parts, self.pool, self.run_id = max(1, parts), pool, run_id

    def partition_map(self, inputs: list, key: str, fn: Callable[..., pa.Table], **fn_kwargs) -> list:
        pieces = [pack_partitions(t, key, self.parts, i) for i, data in enumerate(inputs) for t in data]
        pieces = [p for p in pieces if p.num_rows]
        if not pieces:
            return []
        allp = pa.concat_tables(pieces)
        ids = allp[PART].to_numpy()
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        ends = np.r_[starts[1:], len(sorted_ids)]
        groups = [allp.take(pa.array(order[s:e])) for s, e in zip(starts, ends)]
        return list(self.pool.map(lambda g: call_on_partition(g, fn, len(inputs), fn_kwargs), groups))

    def map(self, data: list, fn: Callable[..., pa.Table], **fn_kwargs) -> list:
        return list(self.pool.map(lambda t: fn(t, **fn_kwargs), data))

    def from_rows(self, table: pa.Table, blocks: int) -> list:
        return split_rows(table, blocks)

    def materialize(self, data: list) -> list:
        return data

    def collect(self, data: list) -> pa.Table:
        tables = [t for t in data if t.num_rows]
        return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})

    def union(self, datas: list) -> list:
        return [t for data in datas for t in data]

    def read_parquet(self, urls: list[str]) -> list:
        return list(self.pool.map(read_parquet_file, urls))

    def write_parquet(self, data: list, url: str, partition_cols: Optional[list[str]] = None) -> None:
        for table in data:
            if table.num_rows:
                write_hive(url, table, partition_cols)
