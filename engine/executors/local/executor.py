"""The local executor: the executor interface (``base.Executor``) in one process and its children.

- stream: each work item runs through every pool of the phase in turn (``worker.through_pools``)
  in a pool of ``num_cpus`` worker processes, kept for the interpreter's later runs as Ray keeps
  its workers (each sets a pool's stages up once); parts come back in work-item order with the
  item's stage timings.
- global step: the key columns of live rows, then the stage's ``global_step`` on
  ``LocalDatasetOps`` (``common.run_global_step``), whose calls run on threads of this process
  (the key tables are small, and pyarrow and numpy release the GIL).
- finalize: one call per chunk in the worker processes.

With ``num_cpus: 1`` everything runs on the calling thread, no child process: a breakpoint in a
stage stops there. It serves tiny runs, debugging and fast tests of the global algorithms; its
output is the Ray and Spark executors' output, row for row.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
import types
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import partial
from typing import Optional

import pyarrow as pa

from tokenmill.engine.executors.common import (
    SHUFFLE_BYTES,
    Counters,
    merge_counts,
    run_global_step,
    shuffle_partitions,
)
from tokenmill.engine.executors.local.ops import LocalDatasetOps
from tokenmill.engine.io.transient import is_transient, policy, retry
from tokenmill.engine.jobs import FinalJob, GlobalJob, PartWritten, PoolSpec, StreamJob
from tokenmill.engine.report.stats import WriteStats
from tokenmill.engine.worker import cached_worker, finalize_chunk, read_live_keys, through_pools

#: what the worker processes import once, before any task (the forkserver preloads it)
PRELOAD = ["tokenmill.engine.worker", "tokenmill.engine.executors.local.executor"]

# -- what runs in a worker process (or inline) ------------------------------------------------------
_COUNTS: dict[str, list] = {}


def _record(name: str, seconds: float, rows: int) -> None:
    merge_counts(_COUNTS, {name: [seconds, rows, 1]})


def _take_environment(env: Optional[dict]) -> None:
    """The run's environment in a worker process (the processes outlive a run)."""
    if env is not None and env != os.environ:
        os.environ.clear()
        os.environ.update(env)


def stream_item(item: dict, pools: list[PoolSpec], env: Optional[dict] = None) -> tuple[list[PartWritten], dict]:
    """One work item through every pool; the parts it wrote and its stage timings."""
    _take_environment(env)
    _COUNTS.clear()
    workers = [cached_worker(p, lambda: _record) for p in pools]
    parts = [PartWritten(r["chunk"], r["file"], r["rows"], r["tokens"])
             for out in through_pools(workers, pa.Table.from_pylist([item])) for r in out.to_pylist()]
    counts = {k: list(v) for k, v in _COUNTS.items()}
    _COUNTS.clear()
    return parts, counts


def finalize_item(item: dict, job: FinalJob, env: Optional[dict] = None) -> WriteStats:
    _take_environment(env)
    return finalize_chunk(item, job)


_PROCESSES: dict[int, ProcessPoolExecutor] = {}


def worker_processes(n: int) -> ProcessPoolExecutor:
    """This interpreter's pool of ``n`` worker processes, kept from one run to the next as Ray
    keeps its workers (what they imported stays; each run's stages are set up anew). Started from a
    forkserver: this process may run threads, and a forked copy of a lock held by one of them
    would never be released."""
    if n not in _PROCESSES:
        for old in _PROCESSES.values():
            old.shutdown(wait=False, cancel_futures=True)
        _PROCESSES.clear()
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        _PROCESSES[n] = ProcessPoolExecutor(max_workers=n, mp_context=context)
    return _PROCESSES[n]


def _forget_processes(n: int) -> None:
    """A pool whose worker died (killed, out of memory) cannot take more work: the next run starts anew."""
    pool = _PROCESSES.pop(n, None)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


@contextmanager
def _main_not_reimported():
    """While worker processes start: ``multiprocessing`` re-imports the caller's ``__main__`` in
    every child it starts (a script without a ``__main__`` guard would run again in each, and
    ``python -`` has no file to import); the workers need only tokenmill, so they are shown an
    empty main module instead."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class InlineExecutor(Executor):
    """``concurrent.futures`` on the calling thread (one CPU: debuggable, no threads)."""

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        return (fn(*args) for args in zip(*iterables))


class LocalExecutor:
    def __init__(self, pipeline, num_cpus: Optional[int] = None, verbose: bool = False):
        self.pipeline = pipeline
        self.num_cpus = num_cpus or pipeline.config.local.num_cpus or os.cpu_count() or 1
        self.counters = Counters()
        self.processes: Optional[Executor] = None
        self.threads: Optional[Executor] = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.num_cpus <= 1:
            self.processes = self.threads = InlineExecutor()
            return
        self.threads = ThreadPoolExecutor(max_workers=self.num_cpus, thread_name_prefix="tokenmill-local")
        self.processes = worker_processes(self.num_cpus)

    def stop(self) -> None:
        if self.threads is not None:
            self.threads.shutdown(wait=True, cancel_futures=True)
        self.processes = self.threads = None   # the worker processes stay for the next run

    def metrics(self) -> dict:
        return self.counters.metrics()

    def progress(self) -> dict:
        return self.counters.progress()

    def log_location(self) -> str:
        return "none (the local executor has no engine of its own)"

    # -- phases ------------------------------------------------------------------------------------
    def _in_processes(self, fn, items: list) -> Iterator:
        """``fn(item, env=...)`` over ``items`` in the worker processes, results in order (every
        task is submitted, so every process is started, before results are read). A caller that
        stops reading early (a generation budget reached) cancels the tasks not started and waits
        for the running ones: none of them may still write into the run's folder when it returns."""
        if isinstance(self.processes, InlineExecutor):
            yield from (retry(fn, item, env=None) for item in items)
            return
        env = dict(os.environ)
        tasks = [partial(fn, item, env=env) for item in items]
        with _main_not_reimported():
            futures: list = [self.processes.submit(t) for t in tasks]
        try:
            for i in range(len(tasks)):
                yield self._result(futures, tasks, i)
        finally:
            live = [f for f in futures if f is not None]
            for future in live:
                future.cancel()
            wait(live)

    def _result(self, futures: list, tasks: list, i: int) -> object:
        """Task ``i``'s result, retried as Ray and Spark retry a task: after a transient error (a
        store that timed out) up to ``io.retries`` times; after its worker process was killed (out
        of memory) up to ``io.quarantine_after`` times, by when the reader quarantines the file
        that kills it (``durable/attempts.py``). A killed worker takes the pool's other tasks
        down with it, so from then on the tasks run one at a time: a file that kills its process
        is then the only one killed."""
        pol, failures, kills = policy(), 0, 0
        while True:
            if futures[i] is None:
                futures[i] = self.processes.submit(tasks[i])
            try:
                return futures[i].result()
            except BrokenProcessPool:
                kills += 1
                self._restart(futures, i)
                if kills > self.pipeline.config.io.quarantine_after:
                    raise
            except Exception as exc:
                failures += 1
                if failures > pol.retries or not is_transient(exc):
                    raise
                time.sleep(pol.wait(failures - 1))
                futures[i] = None

    def _restart(self, futures: list, i: int) -> None:
        """A fresh pool after a worker died; every task from ``i`` on that had not finished runs
        again, submitted when it is read (one at a time)."""
        _forget_processes(self.num_cpus)
        with _main_not_reimported():
            self.processes = worker_processes(self.num_cpus)
        for j in range(i, len(futures)):
            f = futures[j]
            if f is not None and (not f.done() or f.cancelled() or f.exception() is not None):
                futures[j] = None

    def stream(self, job: StreamJob) -> Iterator[PartWritten]:
        for parts, counts in self._in_processes(partial(stream_item, pools=job.pools), job.items):
            self.counters.add(counts)
            yield from parts

    def dataset_ops(self, parts: int, run_id: str = "run") -> LocalDatasetOps:
        """``DatasetOps`` for a command that is not a pipeline run (``tokenmill mix``)."""
        return LocalDatasetOps(parts, self.threads, run_id=run_id)

    def run_global(self, job: GlobalJob) -> dict:
        """The stage's global step on ``LocalDatasetOps`` (``common.run_global_step``)."""
        ops = LocalDatasetOps(shuffle_partitions(job.input_bytes, self.num_cpus), self.threads, run_id=job.run_id)
        return run_global_step(job, ops, lambda columns: self._keys(job, columns))

    def _keys(self, job: GlobalJob, columns: list[str]) -> list[pa.Table]:
        t0 = time.perf_counter()
        keys = list(self.threads.map(read_live_keys, job.parts, [columns] * len(job.parts), job.part_bases))
        self.counters.add({SHUFFLE_BYTES: [time.perf_counter() - t0, sum(k.nbytes for k in keys), 1]})
        return keys

    def finalize(self, job: FinalJob) -> list[WriteStats]:
        return list(self._in_processes(partial(finalize_item, job=job.without_items()), job.items))
