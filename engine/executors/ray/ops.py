"""``global_ops.DatasetOps`` on Ray Data: what a multi-step global stage runs on.

``partition_map`` packs each block into per-partition Arrow IPC pieces (``map_batches``), lets Ray
Data's own shuffle bring each partition's pieces together (``groupby(partition).map_groups``) and
calls the stage's function there; everything else is a plain Dataset call.
"""
from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from tokenmill.engine.global_ops import PART, call_on_partition, pack_partitions, split_rows

#: CPUs of the packing step of ``partition_map``: not 1, so Ray never fuses it into the map before it
PACK_CPUS = 0.5


class RayDatasetOps:
    """Datasets are ``ray.data.Dataset``; ``parts`` partitions per shuffle."""

    def __init__(self, parts: int, materialize_before_shuffle: bool = True, run_id: str = "run"):
        self.parts = max(1, parts)
        self.run_id = run_id  # names what this run leaves for later runs (e.g. a band index folder)
        # the sort shuffle samples its input before it runs: computing the input once first is cheaper
        self.materialize_before_shuffle = materialize_before_shuffle

    def partition_map(self, inputs: list, key: str, fn: Callable[..., pa.Table], **fn_kwargs):
        # packing runs as its own operator (num_cpus differs from the map before it): fused into a map
        # whose output block is empty, Ray passes that block on unpacked, without the partition column
        # the shuffle sorts by (ArrowInvalid: "No match for FieldRef.Name(_part)"); on its own it drops it
        packed = [ds.map_batches(pack_partitions, fn_kwargs=dict(key=key, parts=self.parts, src=i),
                                 batch_format="pyarrow", batch_size=None, num_cpus=PACK_CPUS)
                  for i, ds in enumerate(inputs)]
        pieces = packed[0].union(*packed[1:]) if len(packed) > 1 else packed[0]
        if self.materialize_before_shuffle:
            pieces = pieces.materialize()
        return pieces.groupby(PART, num_partitions=self.parts).map_groups(
            call_on_partition, fn_kwargs=dict(fn=fn, n_inputs=len(inputs), fn_kwargs=fn_kwargs),
            batch_format="pyarrow")

    def map(self, data, fn: Callable[..., pa.Table], **fn_kwargs):
        return data.map_batches(_call, fn_kwargs=dict(fn=fn, fn_kwargs=fn_kwargs), batch_format="pyarrow",
                                batch_size=None)

    def from_rows(self, table: pa.Table, blocks: int):
        import ray

        return ray.data.from_arrow(split_rows(table, blocks))

    def materialize(self, data):
        return data.materialize()

    def collect(self, data) -> pa.Table:
        tables = [t for t in data.iter_batches(batch_format="pyarrow", batch_size=None) if t.num_rows]
        return pa.concat_tables(tables) if tables else pa.table({})

    def union(self, datas: list):
        return datas[0].union(*datas[1:]) if len(datas) > 1 else datas[0]

    def read_parquet(self, urls: list[str]):
        import ray

        items = ray.data.from_items([{"path": u} for u in urls], override_num_blocks=max(1, min(len(urls), self.parts)))
        return items.map_batches(_read_files, batch_format="pyarrow", batch_size=None)

    def write_parquet(self, data, url: str, partition_cols=None) -> None:
        data.write_parquet(url, partition_cols=partition_cols)


def _read_files(batch: pa.Table) -> pa.Table:
    from tokenmill.engine.worker import read_parquet_file

    tables = [read_parquet_file(u) for u in batch["path"].to_pylist()]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def _call(batch: pa.Table, fn: Callable[..., pa.Table], fn_kwargs: dict) -> pa.Table:
    return fn(batch, **fn_kwargs)
