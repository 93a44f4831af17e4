"""What every executor shares, written once: the global step around a stage's ``global_step``
(keys in, decisions routed to the chunks they belong to), the partition count of a shuffle, and the
shape of the timing and progress counters the run loop asks for.

An executor supplies only what its engine does differently: its ``DatasetOps``, how it reads the
key columns of a phase's parts, and how it runs tasks.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import pyarrow as pa

from tokenmill.engine.global_ops import chunk_of
from tokenmill.engine.jobs import GlobalJob
from tokenmill.engine.schema import CHUNK
from tokenmill.engine.worker import PROGRESS

#: a global step's shuffles use a partition per this many bytes of phase output (at least 2 per core)
PARTITION_BYTES = 256 << 20
#: the counter executors add the bytes of a global step's key columns to (the report's shuffle_bytes)
SHUFFLE_BYTES = "_shuffle_bytes"


def shuffle_partitions(input_bytes: int, cores: int) -> int:
    """Partitions of a global step's shuffles: two per core, or one per 256 MiB of phase output."""
    return max(2 * max(1, cores), -(-input_bytes // PARTITION_BYTES))


def key_columns(stage) -> list[str]:
    """The columns a global stage reads back for each live row (``row_key`` always)."""
    return list(dict.fromkeys(["row_key", *stage.shuffle_columns()]))


def run_global_step(job: GlobalJob, ops, read_keys: Callable[[list[str]], object]) -> dict:
    """A global stage's step on an executor's ``ops``: the key columns of every live row (with
    ``node``, read and materialized by ``read_keys(columns)``), the stage's ``global_step``, its decisions written
    under ``job.out_url`` by chunk (``_chunk=N/``, each sorted by row key). Returns the figures."""
    stage = job.stage.build(job.languages)
    stage.setup()
    if not job.parts:
        return {}
    ops.check = job.check or _no_check   # a stage checks the lease before it changes shared state
    keys = read_keys(key_columns(stage))
    decisions, figures = stage.global_step(ops, keys)
    routed = ops.map(decisions, with_chunk, chunk_bases=job.chunk_bases)
    ops.write_parquet(ops.partition_map([routed], CHUNK, sorted_by_row_key), job.out_url, [CHUNK])
    return figures or {}


def _no_check() -> None:
    return None


def with_chunk(decisions: pa.Table, chunk_bases: list) -> pa.Table:
    """Decisions with the chunk of the row each names (from its ``node`` id), without the node."""
    return decisions.drop_columns(["node"]).append_column(CHUNK, chunk_of(decisions["node"], chunk_bases))


def sorted_by_row_key(decisions: pa.Table) -> pa.Table:
    return decisions.sort_by("row_key")


def stage_metrics(counts: dict[str, list]) -> dict:
    """``Executor.metrics()`` from summed ``{name: [seconds, rows, calls]}`` counters: busy time
    per stage and the bytes that went into global steps' shuffles (progress counters left out)."""
    shuffle = counts.get(SHUFFLE_BYTES, [0.0, 0, 0])
    stages = {k: {"busy_seconds": v[0], "rows": v[1], "batches": v[2]} for k, v in counts.items()
              if not k.startswith("_")}
    return {"stages": stages, "shuffle_bytes": int(shuffle[1])}


def progress_of(counts: dict[str, list]) -> dict:
    """``Executor.progress()`` from summed ``{name: [seconds, rows, calls]}`` counters."""
    return {name: int(counts.get(key, [0, 0, 0])[1]) for key, name in PROGRESS.items()}


class Counters:
    """``{name: [seconds, rows, calls]}`` counters summed from the reports tasks send back,
    thread-safe: what ``metrics()`` and ``progress()`` read on the Spark and local executors."""

    def __init__(self):
        self._counts: dict[str, list] = {}
        self._lock = threading.Lock()

    def add(self, counts: dict) -> None:
        with self._lock:
            merge_counts(self._counts, counts)

    def metrics(self) -> dict:
        with self._lock:
            return stage_metrics({k: list(v) for k, v in self._counts.items()})

    def progress(self) -> dict:
        with self._lock:
            return progress_of(self._counts)


def merge_counts(into: dict, more: dict) -> None:
    """Add ``{name: [seconds, rows, calls]}`` counters into others."""
    for k, (sec, rows, n) in more.items():
        x = into.setdefault(k, [0.0, 0, 0])
        x[0] += sec
        x[1] += rows
        x[2] += n
