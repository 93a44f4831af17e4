"""Spark executor: the executor interface (``base.Executor``) on Spark DataFrames.

- stream: one Spark job per chunk, several at once (a driver thread each; Spark schedules their
  tasks), results taken in chunk order so the run loop commits each chunk as it completes. A job
  is ``spark.range`` over the chunk's work items, one per partition, through ``mapInArrow``: the
  task looks its item up by id and runs every pool of the phase in turn (``worker.StreamWorker``; each set up once per Python
  worker process, which Spark reuses) and writes parts. Text never passes through Spark.
- global step: the key columns of live rows, read by tasks into a checkpointed DataFrame of Arrow
  pieces, then the stage's ``global_step`` on ``SparkDatasetOps`` (Spark's shuffle and
  checkpoints; ``common.run_global_step``).
- finalize: one task per chunk (``mapInArrow`` over a DataFrame of the chunk items, each task
  given only its own), returning write statistics.
- metrics and progress: each stream task ends with a row of its ``{name: [seconds, rows, calls]}``
  counts, which the driver merges by addition (a failed attempt's rows never arrive); no
  accumulators or RDDs, so the same code runs through Spark Connect (``sc://``).

Nothing here knows a concrete stage, a schema or a file layout; retries are Spark's.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import pyarrow as pa

from tokenmill.engine.executors.common import (
    SHUFFLE_BYTES,
    Counters,
    merge_counts,
    run_global_step,
    shuffle_partitions,
)
from tokenmill.engine.executors.spark.ops import BLOB_DDL, SparkDatasetOps, spark_types, to_blobs
from tokenmill.engine.executors.spark.session import local_master, quiet_logs, session_conf, start_session
from tokenmill.engine.global_ops import BLOB
from tokenmill.engine.jobs import FinalJob, GlobalJob, PartWritten, StreamJob
from tokenmill.engine.report.stats import WriteStats
from tokenmill.engine.worker import cached_worker, finalize_chunk, read_live_keys, through_pools

PART_DDL = "chunk int, file string, rows bigint, tokens bigint, counts string"
PART_SCHEMA = pa.schema([("chunk", pa.int32()), ("file", pa.large_string()), ("rows", pa.int64()),
                         ("tokens", pa.int64()), ("counts", pa.large_string())])
STATS_DDL = "stats string"

# -- what runs in the Python workers ------------------------------------------------------------
_TASK: dict = {}


def _begin_task() -> None:
    """Start counting this task's stage timings. (The task bodies below are closures, which Spark
    ships by value with copies of the globals they name; these module-level functions, shipped by
    reference, use the worker's real ``_TASK``.)"""
    _TASK["counts"] = {}


def _end_task() -> str:
    """This task's counts, as JSON for the driver, which merges them by addition."""
    return json.dumps(_TASK.pop("counts", {}))


def _record(stage: str, seconds: float, rows: int) -> None:
    """A worker's stage timings and progress counters, summed for the current task."""
    counts = _TASK.get("counts")
    if counts is not None:
        merge_counts(counts, {stage: [seconds, rows, 1]})


def _items_of(batches: Iterator[pa.RecordBatch], items: list) -> Iterator:
    """The work items a task was given: ``spark.range`` ids, looked up in the job's items."""
    for batch in batches:
        for i in batch.column(0).to_pylist():
            yield items[i]


def _stream_task(pools: list, items: list[dict]):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _begin_task()
        workers = [cached_worker(p, lambda: _record) for p in pools]
        for item in _items_of(batches, items):
            for out in through_pools(workers, pa.Table.from_pylist([item])):
                parts = out.append_column("counts", pa.nulls(out.num_rows, pa.large_string()))
                yield from spark_types(parts).to_batches()
        yield pa.RecordBatch.from_pylist([{"chunk": -1, "file": None, "rows": 0, "tokens": 0, "counts": _end_task()}],
                                         schema=PART_SCHEMA)
    return run


def _finalize_task(job: FinalJob):
    """Task body: its own chunks' items arrive as rows (JSON), so no task is sent every chunk's."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        stats = [json.dumps(finalize_chunk(json.loads(text), job).to_json(files=True))
                 for batch in batches for text in batch.column(0).to_pylist()]
        yield pa.RecordBatch.from_arrays([pa.array(stats, pa.large_string())], names=["stats"])
    return run


def _keys_task(columns: list[str], parts: list):
    """Task body: the key columns of the live rows of its part files ((url, node base) items)."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for url, no in _items_of(batches, parts):
            yield to_blobs(read_live_keys(url, columns, no))
    return run


class SparkExecutor:
    """Runs on a classic Spark (embedded ``local[N]``, standalone, YARN, Kubernetes) or through
    Spark Connect (``sc://``): only DataFrame operations, so both work the same way."""

    def __init__(self, pipeline, master: Optional[str] = None, num_cpus: Optional[int] = None, verbose: bool = False):
        self.pipeline = pipeline
        cfg = pipeline.config.spark
        self.master = master or cfg.master or local_master(num_cpus or cfg.num_cpus)
        self.num_cpus = num_cpus or cfg.num_cpus
        self.verbose = verbose
        self.spark = None
        self._started = False
        self.counters = Counters()
        self._log_dir: Optional[str] = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.pipeline.config.spark
        batch = max([rs.resources.batch_size for rs in self.pipeline.stages] or [1000])
        memory = max([rs.resources.memory or 0 for rs in self.pipeline.stages] or [0]) or None
        self._log_dir = tempfile.mkdtemp(prefix="tokenmill-spark-")
        conf = session_conf(batch, memory, None)
        if not self.verbose:
            conf.update(quiet_logs(self._log_dir))
        conf.update({k: str(v) for k, v in cfg.conf.items()})
        conf["spark.sql.execution.arrow.useLargeVarTypes"] = "true"   # the workers return large types
        if not self.verbose:   # pyspark's advice (e.g. on pandas versions) is for its own users
            warnings.filterwarnings("ignore", module=r"pyspark(\.|$)")
        self.spark, self._started = start_session(self.master, cfg.app_name, conf, self.verbose)
        if cfg.checkpoint == "reliable" and self._context() is not None and not self._context().getCheckpointDir():
            self.stop()
            raise RuntimeError("spark.checkpoint: reliable needs a checkpoint folder: set spark.conf "
                               "spark.checkpoint.dir (a path every executor can reach, e.g. hdfs:// or a shared mount)")

    def stop(self) -> None:
        if self.spark is not None and self._started:
            self.spark.stop()
        self.spark = None

    def _context(self):
        """The SparkContext of a classic session; None through Spark Connect, which has none."""
        if type(self.spark).__module__.startswith("pyspark.sql.connect"):
            return None
        return self.spark.sparkContext

    def metrics(self) -> dict:
        return self.counters.metrics()

    def progress(self) -> dict:
        """Counts of the tasks finished so far (a stream job's tasks report when its chunk completes)."""
        return self.counters.progress()

    def log_location(self) -> str:
        return self._log_dir if self._context() is not None else "the Spark Connect server's log"

    def cores(self) -> int:
        sc = self._context()
        if sc is not None:
            return max(1, sc.defaultParallelism)
        return max(1, int(self.spark.conf.get("spark.default.parallelism", str(self.num_cpus or 2))))

    def _range(self, n: int, partitions: int):
        """Ids 0..n-1 in ``partitions`` contiguous slices: tasks look their work items up by id."""
        return self.spark.range(0, n, 1, max(1, min(n, partitions)))

    # -- phases ---------------------------------------------------------------------------------
    def stream(self, job: StreamJob) -> Iterator[PartWritten]:
        chunks: dict[int, list[dict]] = {}
        for it in job.items:
            chunks.setdefault(it["chunk"], []).append(it)

        def run_chunk(items: list[dict]) -> list[PartWritten]:
            fn = _stream_task(job.pools, items)
            parts = []
            for r in self._range(len(items), len(items)).mapInArrow(fn, PART_DDL).collect():
                if r["counts"] is not None:
                    self.counters.add(json.loads(r["counts"]))
                else:
                    parts.append(PartWritten(r["chunk"], r["file"], r["rows"], r["tokens"]))
            return parts

        pool = ThreadPoolExecutor(max_workers=max(2, self.cores()), thread_name_prefix="tokenmill-spark")
        try:
            futures = [pool.submit(run_chunk, items) for items in chunks.values()]
            for f in futures:
                yield from f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def run_global(self, job: GlobalJob) -> dict:
        """The stage's global step on ``SparkDatasetOps`` (``common.run_global_step``)."""
        parts = shuffle_partitions(job.input_bytes, self.cores())
        before = self.spark.conf.get("spark.sql.shuffle.partitions")
        self.spark.conf.set("spark.sql.shuffle.partitions", str(parts))
        try:
            return run_global_step(job, self._ops(job, parts), lambda columns: self._keys(job, columns))
        finally:
            self.spark.conf.set("spark.sql.shuffle.partitions", before)

    def dataset_ops(self, parts: int, run_id: str = "run") -> SparkDatasetOps:
        """``DatasetOps`` for a command that is not a pipeline run (``tokenmill mix``); its
        shuffles use ``parts`` partitions."""
        self.spark.conf.set("spark.sql.shuffle.partitions", str(max(1, parts)))
        return SparkDatasetOps(self.spark, parts, run_id=run_id, checkpoint="local")

    def _ops(self, job: GlobalJob, parts: int) -> SparkDatasetOps:
        checkpoint = self.pipeline.config.spark.checkpoint
        if checkpoint == "auto":
            sc = self._context()
            checkpoint = "reliable" if sc is not None and sc.getCheckpointDir() else "local"
        return SparkDatasetOps(self.spark, parts, run_id=job.run_id, checkpoint=checkpoint)

    def _keys(self, job: GlobalJob, columns: list[str]):
        """The key columns of every live row of the phase, read by a few tasks (never the text)."""
        parts = list(zip(job.parts, job.part_bases))
        keys = self._range(len(parts), 4 * self.cores()).mapInArrow(_keys_task(columns, parts), BLOB_DDL)
        keys = keys.localCheckpoint(eager=True)
        self._count_shuffle(keys)
        return keys

    def _count_shuffle(self, keys) -> None:
        """Bytes of the key pieces a global step shuffles."""
        from pyspark.sql import functions as F

        total = keys.select(F.sum(F.octet_length(F.col(BLOB)))).collect()[0][0]
        self.counters.add({SHUFFLE_BYTES: [0.0, int(total or 0), 1]})

    def finalize(self, job: FinalJob) -> list[WriteStats]:
        if not job.items:
            return []
        rows = self.spark.createDataFrame([(json.dumps(item),) for item in job.items], "item string")
        out = rows.repartition(len(job.items)).mapInArrow(_finalize_task(job.without_items()), STATS_DDL).collect()
        return [WriteStats.from_json(json.loads(r["stats"])) for r in out]
