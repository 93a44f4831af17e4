"""The local executor: the executor interface (``base.Executor``) in one process.

- stream: each work item runs through every pool of the phase in turn (``worker.through_pools``)
  on a thread pool of ``num_cpus`` threads (each thread sets a pool's stages up once; pyarrow,
  tiktoken and fastText release the GIL); parts come back in work-item order.
- global step: the key columns of live rows, then the stage's ``global_step`` on
  ``LocalDatasetOps`` (``common.run_global_step``).
- finalize: one call per chunk on the same threads.

With ``num_cpus: 1`` everything runs on the calling thread: a breakpoint in a stage stops there.
It serves tiny runs, debugging and fast tests of the global algorithms; its output is the Ray and
Spark executors' output, row for row.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Optional

import pyarrow as pa

from tokenmill.engine.executors.common import (
    SHUFFLE_BYTES,
    merge_counts,
    progress_of,
    run_global_step,
    shuffle_partitions,
    stage_metrics,
)
from tokenmill.engine.executors.local.ops import LocalDatasetOps
from tokenmill.engine.jobs import FinalJob, GlobalJob, PartWritten, PoolSpec, StreamJob
from tokenmill.engine.report.stats import WriteStats
from tokenmill.engine.worker import StreamWorker, finalize_chunk, read_live_keys, through_pools


class InlineExecutor(Executor):
    """``concurrent.futures`` on the calling thread (one CPU: debuggable, no threads)."""

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        return (fn(*args) for args in zip(*iterables))


class LocalExecutor:
    def __init__(self, pipeline, num_cpus: Optional[int] = None, verbose: bool = False):
        self.pipeline = pipeline
        self.num_cpus = num_cpus or pipeline.config.ray.num_cpus or os.cpu_count() or 1
        self._counts: dict[str, list] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.pool: Optional[Executor] = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.pool = InlineExecutor() if self.num_cpus <= 1 else \
            ThreadPoolExecutor(max_workers=self.num_cpus, thread_name_prefix="tokenmill-local")

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None

    def _record(self, name: str, seconds: float, rows: int) -> None:
        with self._lock:
            merge_counts(self._counts, {name: [seconds, rows, 1]})

    def metrics(self) -> dict:
        with self._lock:
            return stage_metrics({k: list(v) for k, v in self._counts.items()})

    def progress(self) -> dict:
        with self._lock:
            return progress_of(self._counts)

    def log_location(self) -> str:
        return "none (the local executor has no engine of its own)"

    # -- phases ------------------------------------------------------------------------------------
    def _worker(self, spec: PoolSpec) -> StreamWorker:
        """This thread's worker of a pool (stages set up once per thread, then reused)."""
        workers = getattr(self._local, "workers", None)
        if workers is None:
            workers = self._local.workers = {}
        if spec.key not in workers:
            workers[spec.key] = StreamWorker(spec, self._record)
        return workers[spec.key]

    def _stream_item(self, item: dict, pools: list[PoolSpec]) -> list[PartWritten]:
        workers = [self._worker(p) for p in pools]
        parts = []
        for out in through_pools(workers, pa.Table.from_pylist([item])):
            for r in out.to_pylist():
                parts.append(PartWritten(r["chunk"], r["file"], r["rows"], r["tokens"]))
        return parts

    def stream(self, job: StreamJob) -> Iterator[PartWritten]:
        for parts in self.pool.map(lambda item: self._stream_item(item, job.pools), job.items):
            yield from parts

    def run_global(self, job: GlobalJob) -> dict:
        """The stage's global step on ``LocalDatasetOps`` (``common.run_global_step``)."""
        ops = LocalDatasetOps(shuffle_partitions(job.input_bytes, self.num_cpus), self.pool, run_id=job.run_id)
        return run_global_step(job, ops, lambda columns: self._keys(job, columns))

    def _keys(self, job: GlobalJob, columns: list[str]) -> list[pa.Table]:
        t0 = time.perf_counter()
        keys = list(self.pool.map(lambda p: read_live_keys(p[0], columns, p[1]), zip(job.parts, job.part_numbers)))
        self._record(SHUFFLE_BYTES, time.perf_counter() - t0, sum(k.nbytes for k in keys))
        return keys

    def finalize(self, job: FinalJob) -> list[WriteStats]:
        return list(self.pool.map(lambda item: finalize_chunk(item, job), job.items))
