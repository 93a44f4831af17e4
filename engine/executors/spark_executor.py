"""Spark executor: the executor interface (``base.Executor``) on Spark DataFrames.

- stream: one Spark job per chunk, several at once (a driver thread each; Spark schedules their
  tasks), results taken in chunk order so the run loop commits each chunk as it completes. A job
  is a DataFrame of the chunk's work items, one per partition, through ``mapInArrow``: the task
  runs every pool of the phase in turn (``worker.StreamWorker``; each set up once per Python
  worker process, which Spark reuses) and writes parts. Text never passes through Spark.
- global step: a one-key stage reads its key columns into a DataFrame and runs
  ``groupBy(key).applyInArrow(reduce_group)``; a multi-step stage runs on ``SparkDatasetOps``
  (Spark's shuffle and checkpoints). Decisions are written by chunk, sorted by row key.
- finalize: one task per chunk (``mapInArrow`` over the chunk items), returning write statistics.
- metrics and progress: a Spark accumulator of ``{name: [seconds, rows, calls]}`` that workers add
  to and the driver reads (it merges by addition; a retried task's updates are counted once).

Nothing here knows a concrete stage, a schema or a file layout; retries are Spark's.
"""
from __future__ import annotations

import json
import logging
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional

import pyarrow as pa

from ..batches import reduce_with_chunk
from ..jobs import FinalJob, GlobalJob, PartWritten, StreamJob
from ..schema import CHUNK
from ..stats import WriteStats
from ..worker import PROGRESS, cached_worker, finalize_chunk, read_live_keys, read_parquet_file
from .spark_ops import BLOB_DDL, SparkDatasetOps, spark_types, to_blobs
from .spark_session import local_master, quiet_logs, session_conf, start_session

log = logging.getLogger("tokenmill")
SHUFFLE_BYTES = "_shuffle_bytes"
ITEM_DDL = "chunk int, path string, source string, format string, decisions string, bytes bigint"
PART_DDL = "chunk int, file string, rows bigint"
FINAL_DDL = "chunk int, parts array<string>, decisions string"
STATS_DDL = "stats string"
DECISIONS_DDL = f"row_key string, reject_reason string, {CHUNK} int"
#: a multi-step global stage's shuffles use a partition per this many bytes of phase output (at least 2 per core)
PARTITION_BYTES = 256 << 20

# -- what runs in the Python workers ------------------------------------------------------------
_TASK: dict = {}


def _begin_task(acc) -> None:
    """Route this task's timings to its accumulator. (The task bodies below are closures, which
    Spark ships by value with copies of the globals they name; this module-level function, shipped
    by reference, sets the worker's real ``_TASK``.)"""
    _TASK["acc"] = acc


def _record(stage: str, seconds: float, rows: int) -> None:
    """A worker's stage timings and progress counters go to the current task's accumulator."""
    acc = _TASK.get("acc")
    if acc is not None:
        acc.add({stage: [seconds, rows, 1]})


def _through(workers: list, table: pa.Table) -> Iterator[pa.Table]:
    if not workers:
        yield table
        return
    for out in workers[0](table):
        yield from _through(workers[1:], out)


def _stream_task(pools: list, acc):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _begin_task(acc)
        workers = [cached_worker(p, lambda: _record) for p in pools]
        for batch in batches:
            for out in _through(workers, pa.Table.from_batches([batch])):
                yield from spark_types(out).to_batches()
    return run


def _finalize_task(job: FinalJob, acc):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _begin_task(acc)
        for batch in batches:
            stats = [json.dumps(finalize_chunk(item, job).to_json()) for item in batch.to_pylist()]
            yield pa.RecordBatch.from_arrays([pa.array(stats, pa.large_string())], names=["stats"])
    return run


def _keys_task(columns: list[str], node_ids: bool, acc, as_blobs: bool):
    """Task body: the key columns of the live rows of the part files in a batch of (path, part_no)."""
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _begin_task(acc)
        for batch in batches:
            for url, no in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                keys = read_live_keys(url, columns, no if node_ids else None)
                _record(SHUFFLE_BYTES, 0.0, keys.nbytes)
                if as_blobs:
                    yield to_blobs(keys)
                else:
                    yield from spark_types(keys).to_batches()
    return run


def _reduce_task(stage):
    def run(group: pa.Table) -> pa.Table:
        return spark_types(reduce_with_chunk(stage, group))
    return run


def _blobs_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        yield to_blobs(pa.Table.from_batches([batch]))


def _sort_by_row_key(table: pa.Table) -> pa.Table:
    return table.sort_by("row_key")


def _counts_param():
    from pyspark.accumulators import AccumulatorParam

    class Counts(AccumulatorParam):
        """``{name: [seconds, rows, calls]}``, merged by addition."""

        def zero(self, value):
            return {}

        def addInPlace(self, a, b):
            for k, (s, r, n) in b.items():
                x = a.setdefault(k, [0.0, 0, 0])
                x[0] += s
                x[1] += r
                x[2] += n
            return a

    return Counts()


class SparkExecutor:
    def __init__(self, pipeline, master: Optional[str] = None, num_cpus: Optional[int] = None, verbose: bool = False):
        self.pipeline = pipeline
        cfg = pipeline.config.spark
        self.master = master or cfg.master or local_master(num_cpus or cfg.num_cpus)
        self.verbose = verbose
        self.spark = None
        self._started = False
        self._acc = None
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
        self._acc = self.spark.sparkContext.accumulator({}, _counts_param())
        if cfg.checkpoint == "reliable" and not self.spark.sparkContext.getCheckpointDir():
            self.stop()
            raise RuntimeError("spark.checkpoint: reliable needs a checkpoint folder: set spark.conf "
                               "spark.checkpoint.dir (a path every executor can reach, e.g. hdfs:// or a shared mount)")

    def stop(self) -> None:
        if self.spark is not None and self._started:
            self.spark.stop()
        self.spark = None

    def _counts(self) -> dict:
        return dict(self._acc.value) if self._acc is not None else {}

    def metrics(self) -> dict:
        data = self._counts()
        shuffle = data.pop(SHUFFLE_BYTES, [0.0, 0, 0])
        stages = {k: {"busy_seconds": v[0], "rows": v[1], "batches": v[2]} for k, v in data.items()
                  if not k.startswith("_")}
        return {"stages": stages, "shuffle_bytes": int(shuffle[1])}

    def progress(self) -> dict:
        data = self._counts()
        return {name: int(data.get(key, [0, 0, 0])[1]) for key, name in PROGRESS.items()}

    def log_location(self) -> str:
        return self._log_dir or "the Spark driver's log"

    def cores(self) -> int:
        return max(1, self.spark.sparkContext.defaultParallelism)

    def _frame(self, rows: list[tuple], ddl: str, partitions: int):
        """A DataFrame of driver-side rows in exactly ``partitions`` slices (no shuffle)."""
        sc = self.spark.sparkContext
        return self.spark.createDataFrame(sc.parallelize(rows, max(1, partitions)), ddl)

    # -- phases ---------------------------------------------------------------------------------
    def stream(self, job: StreamJob) -> Iterator[PartWritten]:
        chunks: dict[int, list[dict]] = {}
        for it in job.items:
            chunks.setdefault(it["chunk"], []).append(it)
        fn = _stream_task(job.pools, self._acc)

        def run_chunk(items: list[dict]) -> list[PartWritten]:
            rows = [(it["chunk"], it["path"], it["source"], it["format"], it["decisions"], int(it["bytes"] or 0))
                    for it in items]
            out = self._frame(rows, ITEM_DDL, len(rows)).mapInArrow(fn, PART_DDL).collect()
            return [PartWritten(r["chunk"], r["file"], r["rows"]) for r in out]

        pool = ThreadPoolExecutor(max_workers=max(2, self.cores()), thread_name_prefix="tokenmill-spark")
        try:
            futures = [pool.submit(run_chunk, items) for items in chunks.values()]
            for f in futures:
                yield from f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def run_global(self, job: GlobalJob) -> dict:
        stage = job.stage.build(job.languages)
        stage.setup()
        if not job.parts:
            return {}
        before = self.spark.conf.get("spark.sql.shuffle.partitions")
        self.spark.conf.set("spark.sql.shuffle.partitions", str(self._partitions(job)))
        try:
            if hasattr(stage, "global_step"):
                return self._run_global_step(stage, job)
            self._run_reduce_groups(stage, job)
            return {}
        finally:
            self.spark.conf.set("spark.sql.shuffle.partitions", before)

    def _partitions(self, job: GlobalJob) -> int:
        """Shuffle partitions of a global step: 2 per core, or one per 256 MiB of phase output."""
        return max(2 * self.cores(), -(-job.input_bytes // PARTITION_BYTES))

    def _ops(self, job: GlobalJob) -> SparkDatasetOps:
        parts = self._partitions(job)
        checkpoint = self.pipeline.config.spark.checkpoint
        if checkpoint == "auto":
            checkpoint = "reliable" if self.spark.sparkContext.getCheckpointDir() else "local"
        return SparkDatasetOps(self.spark, parts, run_id=job.run_id, checkpoint=checkpoint)

    def _parts_frame(self, job: GlobalJob):
        rows = [(p, i) for p, i in zip(job.parts, job.part_numbers or [-1] * len(job.parts))]
        return self._frame(rows, "path string, part_no int", min(len(rows), 4 * self.cores()))

    def _run_global_step(self, stage, job: GlobalJob) -> dict:
        ops = self._ops(job)
        read = _keys_task(stage.shuffle_columns(), True, self._acc, as_blobs=True)
        keys = ops.materialize(self._parts_frame(job).mapInArrow(read, BLOB_DDL))
        decisions, figures = stage.global_step(ops, keys)
        self._write_decisions(ops, decisions, job.out_url)
        return figures

    def _run_reduce_groups(self, stage, job: GlobalJob) -> None:
        """A one-key global stage: live rows grouped by its key with Spark's shuffle, ``reduce_group`` each."""
        from pyspark.sql.pandas.types import from_arrow_schema

        cols = list(dict.fromkeys([stage.key_column, "row_key", *stage.group_columns, CHUNK]))
        schema = read_parquet_file(job.parts[0], cols).schema
        spark_schema = from_arrow_schema(spark_types(schema.empty_table()).schema)
        keys = self._parts_frame(job).mapInArrow(_keys_task(cols, False, self._acc, as_blobs=False), spark_schema)
        decisions = keys.groupBy(stage.key_column).applyInArrow(_reduce_task(stage), DECISIONS_DDL)
        self._write_decisions(self._ops(job), decisions.mapInArrow(_blobs_task, BLOB_DDL), job.out_url)

    @staticmethod
    def _write_decisions(ops: SparkDatasetOps, decisions, out_url: str) -> None:
        ops.write_parquet(ops.partition_map([decisions], CHUNK, _sort_by_row_key), out_url, [CHUNK])

    def finalize(self, job: FinalJob) -> list[WriteStats]:
        if not job.items:
            return []
        rows = [(it["chunk"], list(it["parts"]), it["decisions"]) for it in job.items]
        out = self._frame(rows, FINAL_DDL, len(rows)).mapInArrow(_finalize_task(job, self._acc), STATS_DDL).collect()
        return [WriteStats.from_json(json.loads(r["stats"])) for r in out]

