"""The executor interface: the few operations a run needs from an engine.

The run loop (``engine/run.py``) plans phases and calls these; everything engine-neutral (the
plan, schemas, the stream worker, decision application, the final writer, write-time stats,
storage) lives outside the executors, so an executor only maps work items onto its engine's
tasks, actor pools and shuffles; what they share is in ``common.py``. ``ray.executor.RayExecutor``,
``spark.executor.SparkExecutor`` and ``local.executor.LocalExecutor`` implement it.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from tokenmill.engine.jobs import FinalJob, GlobalJob, PartWritten, StreamJob
from tokenmill.engine.report.stats import WriteStats


class Executor(Protocol):
    def start(self) -> None:
        """Connect to or start the engine (embedded or a cluster)."""

    def stop(self) -> None:
        """Release what ``start`` took."""

    def stream(self, job: StreamJob) -> Iterator[PartWritten]:
        """Stream the job's work items through its pools and write parts, in one execution.

        Yields each written part in the order of the work items (so a chunk is complete once a
        later chunk's part arrives, or the iterator ends); the run loop commits chunks as they
        complete. A retried task may leave unlisted files behind: only yielded parts count."""

    def run_global(self, job: GlobalJob) -> dict:
        """Run a global stage's ``global_step`` over the phase's live rows on the executor's
        ``global_ops.DatasetOps`` and write its decisions partitioned by chunk
        (``common.run_global_step``). Returns what the step reports (e.g. rounds), for the report."""

    def finalize(self, job: FinalJob) -> list[WriteStats]:
        """One task per chunk: apply the decisions, write the final partitions; return the
        tasks' write-time statistics (the run loop merges them by addition)."""

    def dataset_ops(self, parts: int, run_id: str = "run"):
        """The executor's ``global_ops.DatasetOps`` with ``parts`` partitions per shuffle, for a
        command that is not a pipeline run (``tokenmill mix``); call after ``start``."""

    def metrics(self) -> dict:
        """``{"stages": {name: {busy_seconds, rows, batches}}, "shuffle_bytes": N}``: busy time per
        stage summed over every worker, and the bytes that went into the engine's shuffles."""

    def progress(self) -> dict:
        """Cumulative counters for the console, cheap enough to ask every half second:
        ``{"files", "bytes", "docs", "tokens", "rejected"}`` (input files and bytes read, documents
        and tokens read, rejected rows written so far)."""

    def log_location(self) -> str:
        """Where the engine's own logs are (they are kept out of the console unless verbose)."""


def run_executor(name: str, pipeline, **kwargs) -> Executor:
    """The executor for ``name``: ``ray`` (Ray Data), ``spark`` (Spark DataFrames) or ``local``
    (one process)."""
    if name == "ray":
        from tokenmill.engine.executors.ray.executor import RayExecutor

        kwargs.pop("master", None)
        return RayExecutor(pipeline, **kwargs)
    if name == "spark":
        from tokenmill.engine.executors.spark.executor import SparkExecutor

        kwargs.pop("address", None)
        return SparkExecutor(pipeline, **kwargs)
    if name == "local":
        from tokenmill.engine.executors.local.executor import LocalExecutor

        kwargs.pop("address", None)
        kwargs.pop("master", None)
        return LocalExecutor(pipeline, **kwargs)
    raise ValueError(f"unknown executor {name!r}")
