"""What runs inside a worker, for any engine: the stream worker of one pool, and the task that
applies a chunk's decisions and writes its final partitions.

A Ray actor (``executors/ray_executor.py``) or a Spark partition function wraps these; they never
import an engine. Models load once per worker in ``StreamWorker.__init__`` (each stage's
``setup()``), never per batch.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenmill.engine.batches import apply_decisions, per_chunk, run_stage
from tokenmill.engine.durable.attempts import Attempts
from tokenmill.engine.global_ops import DamagedState, node_ids
from tokenmill.engine.io.final_write import FinalWriters
from tokenmill.engine.io.read_rows import QUARANTINED, file_error_table
from tokenmill.engine.io.readers import READ_STAGE, InputFile, read_file
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.io.tokens import count_tokens
from tokenmill.engine.io.transient import configure as configure_retries
from tokenmill.engine.io.writers import write_parts
from tokenmill.engine.jobs import FinalJob, PoolSpec, item_decisions
from tokenmill.engine.report.stats import WriteStats
from tokenmill.engine.schema import CHUNK, EMITTED, conform, live_mask, mark_rejects, set_column
from tokenmill.engine.stage import GeneratingStage

Record = Callable[[str, float, int], None]
#: progress counters a worker records beside its stages' busy time (summed by the engine's metrics)
FILES_DONE, BYTES_DONE, TOKENS_READ, ROWS_REJECTED = "_files", "_bytes", "_tokens", "_rejected"
PROGRESS = {FILES_DONE: "files", BYTES_DONE: "bytes", READ_STAGE: "docs", TOKENS_READ: "tokens", ROWS_REJECTED: "rejected"}


def _no_record(stage: str, seconds: float, rows: int) -> None:
    pass


def release_memory() -> None:
    """Give memory Arrow's allocator holds but no longer uses back to the system: a worker
    process lives for the whole run, and what one large file needed should not stay with it."""
    pa.default_memory_pool().release_unused()


def read_parquet_file(url: str, columns: Optional[list[str]] = None) -> pa.Table:
    """One Parquet file a run wrote (its own work, an index); one that is not Parquet any more
    (damaged where its size did not change) is DamagedState naming it."""
    store = Storage(url)
    try:
        if store.local:
            return pq.read_table(url, columns=columns, partitioning=None)
        with store.open(store.root, "rb") as fh:
            return pq.read_table(fh, columns=columns, partitioning=None)
    except pa.ArrowInvalid as e:
        raise DamagedState(f"{url} is damaged: it cannot be read as Parquet ({e})") from e


def read_live_keys(url: str, columns: list[str], base: int) -> pa.Table:
    """The columns a global step shuffles, for the live rows of one part file (never the text),
    and a dense int64 ``node`` id per row: ``base`` (where this part's rows start in the run) plus
    the row's position; the chunk a decision belongs to is found again from its node."""
    table = read_parquet_file(url, list(dict.fromkeys(columns + ["reject_stage"])))
    mask = live_mask(table)
    live = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)
    return table.filter(mask).select(columns).append_column("node", node_ids(base, live))


def load_decisions(urls: list[str]) -> pa.Table:
    """A chunk's decisions: row_key, reject_reason and any other decision columns of the stage."""
    tables = [read_parquet_file(u) for u in urls]
    if not tables:
        return pa.table({"row_key": pa.array([], pa.string()), "reject_reason": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks()


_WORKERS: dict[str, StreamWorker] = {}
_KEEP_WORKERS = 2


def cached_worker(spec: PoolSpec, make_record: Optional[Callable[[], Optional[Record]]] = None) -> StreamWorker:
    """This process's ``StreamWorker`` for a pool: its stages are built and set up (models
    loaded) on the first batch the process gets, then reused for every later batch and phase of
    the run, as an actor would. The oldest of more than two pools is dropped. ``make_record`` is
    called only when the worker is built (finding the metrics actor is a round trip)."""
    worker = _WORKERS.get(spec.key)
    if worker is None:
        while len(_WORKERS) >= _KEEP_WORKERS:
            _WORKERS.pop(next(iter(_WORKERS)))
        worker = _WORKERS[spec.key] = StreamWorker(spec, make_record() if make_record else None)
    return worker


def through_pools(workers: list, table: pa.Table) -> Iterator[pa.Table]:
    """A work item's table through every pool of a phase in turn, in one process (the executors
    without actor pools: Spark's tasks, the local executor)."""
    if not workers:
        yield table
        return
    for out in workers[0](table):
        yield from through_pools(workers[1:], out)


class StreamWorker:
    """One pool's stages over batches. The first pool of a phase reads its work items (input
    files, or the previous phase's parts with decisions applied); the last writes parts."""

    def __init__(self, spec: PoolSpec, record: Optional[Record] = None):
        self.spec = spec
        self.record = record or _no_record
        configure_retries(spec.io)
        self.attempts = Attempts(spec.attempts_url, spec.io.quarantine_after) \
            if spec.reads and spec.attempts_url and spec.io is not None else None
        self.stages = [rs.build(spec.languages) for rs in spec.stages]
        for st in self.stages:
            st.setup()
        self._decisions: tuple[tuple, list] = ((-1, ""), [])

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        sources = self._read_items(batch) if self.spec.reads else iter([batch])
        for table in sources:
            table = self.run(table)
            yield self._write(table) if self.spec.sink_url else table

    # -- reading -----------------------------------------------------------------------------
    def _read_items(self, items: pa.Table) -> Iterator[pa.Table]:
        for item in items.to_pylist():
            t0 = time.perf_counter()
            tables = self._read_input(item) if item["format"] != "part" else self._read_part(item)
            for table in tables:
                self.record(READ_STAGE, time.perf_counter() - t0, table.num_rows)
                if item["format"] != "part":
                    self.record(TOKENS_READ, 0.0, pc.sum(table["num_tokens"]).as_py() or 0)
                yield table
                t0 = time.perf_counter()
            if item["format"] != "part":
                self.record(FILES_DONE, 0.0, 1)
                self.record(BYTES_DONE, 0.0, int(item.get("bytes") or 0))
            release_memory()

    def _read_input(self, item: dict) -> Iterator[pa.Table]:
        """An input file's tables, tokens counted; a file whose tasks were killed too often
        (``durable/attempts.py``) is one ``quarantined`` row instead."""
        tok = self.spec.tokenizer
        chunk = pa.scalar(item["chunk"], pa.int32())
        f = InputFile(item["path"], item["source"], item["format"])
        mark, why = self.attempts.begin(f.path) if self.attempts is not None else (None, None)
        tables = read_file(f, self.spec.input) if why is None else \
            iter([file_error_table(f.path, f.source, why, QUARANTINED)])
        finished = False
        try:
            for table in tables:
                table = count_tokens(table, tok.kind, tok.encoding, tok.path)
                table = table.append_column(CHUNK, pa.repeat(chunk, table.num_rows))
                yield conform(table, self.spec.schema)
            finished = why is None   # a quarantined file keeps its marks: a retried task skips it too
        finally:   # also on an exception (the task is retried): only a killed process leaves its mark
            if self.attempts is not None:
                self.attempts.end(f.path, mark, finished)

    def _read_part(self, item: dict) -> Iterator[pa.Table]:
        table = read_parquet_file(item["path"])
        for name, table_d in self._chunk_decisions(item):
            table = apply_decisions(table, table_d, name)
        yield conform(table, self.spec.schema)

    def _chunk_decisions(self, item: dict) -> list:
        """The decisions of the item's chunk, loaded once for all of that chunk's parts that carry them
        (after a generating phase, a chunk's generated parts come without the earlier decisions)."""
        key = (item["chunk"], item.get("decisions") or "")   # a chunk's parts may come with different decisions
        if self._decisions[0] != key:
            self._decisions = (key, [(n, load_decisions(u)) for n, u in item_decisions(item)])
        return self._decisions[1]

    # -- stages, writing -------------------------------------------------------------------------
    def run(self, batch: pa.Table) -> pa.Table:
        """Every stage of the pool over a batch, in slices of the pool's batch size."""
        size = self.spec.batch_size
        if batch.num_rows > size:
            return pa.concat_tables([self.run(batch.slice(i, size)) for i in range(0, batch.num_rows, size)])
        for stage in self.stages:
            t0 = time.perf_counter()
            if isinstance(stage, GeneratingStage):
                batch, n_live = self._generate(stage, batch)
            else:
                batch, n_live = run_stage(stage, batch, self.spec.schema, self._recount)
            self.record(stage.name, time.perf_counter() - t0, n_live)
        return batch

    def _recount(self, rows: pa.Table) -> pa.Table:
        """Rows a modifier changed, ``num_tokens`` recounted in the run's tokenizer."""
        tok = self.spec.tokenizer
        return count_tokens(rows, tok.kind, tok.encoding, tok.path)

    def _generate(self, stage: GeneratingStage, batch: pa.Table) -> tuple[pa.Table, int]:
        """A generating stage over the live rows: its new rows only (or, as part of an LLM-engine
        step, its requests, or its new rows from the engine's output)."""
        if self.spec.llm_part == "documents":
            return self.emitted(stage, per_chunk(stage.llm_step().documents, batch)), batch.num_rows
        live = batch.filter(live_mask(batch))
        if self.spec.llm_part == "requests":
            return per_chunk(stage.llm_step().requests, live), live.num_rows
        return self.emitted(stage, per_chunk(stage, live)), live.num_rows

    def emitted(self, stage: GeneratingStage, rows: pa.Table) -> pa.Table:
        """New rows stamped with the stage that wrote them and counted in the run's tokenizer."""
        tok = self.spec.tokenizer
        reasons = rows["reject_reason"] if "reject_reason" in rows.column_names else pa.nulls(rows.num_rows, pa.string())
        for name in ("reject_stage", "reject_reason"):
            rows = set_column(rows, name, pa.nulls(rows.num_rows, pa.string()))
        rows = mark_rejects(rows, stage.name, reasons)
        rows = set_column(rows, "num_chars", pc.utf8_length(rows["text"]).cast(pa.int64()))
        rows = count_tokens(rows, tok.kind, tok.encoding, tok.path)
        rows = set_column(rows, EMITTED, pa.repeat(pa.scalar(stage.name, pa.string()), rows.num_rows))
        return conform(rows, self.spec.schema)

    def _write(self, batch: pa.Table) -> pa.Table:
        self.record(ROWS_REJECTED, 0.0, batch.num_rows - pc.sum(pc.is_null(batch["reject_stage"])).as_py())
        rows = write_parts(batch, self.spec.sink_url)
        return pa.table({"chunk": pa.array([r[0] for r in rows], pa.int32()),
                         "file": pa.array([r[1] for r in rows], pa.string()),
                         "rows": pa.array([r[2] for r in rows], pa.int64()),
                         "tokens": pa.array([r[3] for r in rows], pa.int64())})


def finalize_chunk(item: dict, job: FinalJob) -> WriteStats:
    """Apply a chunk's pending decisions to its parts; write kept rows to ``data/language=xx/`` (a
    generating stage's new rows to ``<its emits_to>/language=xx/``) and rejects to ``rejects/``
    under ``job.out_url``; return what was written, counted."""
    configure_retries(job.io)
    chunk = item["chunk"]
    decisions = [(n, load_decisions(u)) for n, u in item_decisions(item)]
    writers = FinalWriters(job, f"{job.name_prefix}{chunk:05d}")
    stats = WriteStats(writers.score_column, writers.measures)
    for part in item["parts"]:
        table = read_parquet_file(part)
        for name, dec in decisions:
            table = apply_decisions(table, dec, name)
        table = conform(table, job.schema)
        read = pc.is_null(table[EMITTED])
        writers.write_read(table.filter(read), stats)
        writers.write_emitted(table.filter(pc.invert(read)), stats)
    writers.close(stats)
    release_memory()
    return stats
