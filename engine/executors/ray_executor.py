"""Ray Data executor: runs stream phases as ``map_batches`` over actor pools, global stages as a
Ray Data ``groupby(...).map_groups`` shuffle, and joins their decisions back with ``Dataset.join``.

Nothing here knows a concrete stage: it gets ``ResolvedStage`` objects from the config.
Backpressure, retries and progress bars are Ray Data's; this module only wires them up.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.compute as pc

from ..readers import InputFile, read_file
from ..schema import DOCUMENT_SCHEMA, live_mask, mark_rejects
from ..tokens import count_tokens

log = logging.getLogger("tokenmill")
MARK_REASON = "_mark_reason"


def conform(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give a batch exactly ``schema``'s columns (missing ones null-filled, types cast)."""
    cols = []
    for f in schema:
        if f.name in batch.column_names:
            col = batch[f.name]
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(batch.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def phase_schema(stages) -> pa.Schema:
    """The document schema plus every column the given stages add, in stage order."""
    fields = list(DOCUMENT_SCHEMA)
    names = {f.name for f in fields}
    for rs in stages:
        for name, typ in getattr(rs.cls, "adds", {}).items():
            if name not in names:
                fields.append(pa.field(name, typ))
                names.add(name)
    return pa.schema(fields)


def read_files_batch(batch: pa.Table, input_opts, tokenizer_opts, schema: pa.Schema,
                     metrics_name: Optional[str] = None) -> Iterator[pa.Table]:
    """Ray task body: read the files named in a batch of (path, source, format) rows."""
    metrics = _metrics_actor(metrics_name)
    for path, source, fmt in zip(batch["path"].to_pylist(), batch["source"].to_pylist(), batch["format"].to_pylist()):
        t0 = time.perf_counter()
        for table in read_file(InputFile(path, source, fmt), input_opts):
            table = count_tokens(table, tokenizer_opts.kind, tokenizer_opts.encoding, tokenizer_opts.path)
            if metrics is not None:
                metrics.add.remote("read", time.perf_counter() - t0, table.num_rows)
            yield conform(table, schema)
            t0 = time.perf_counter()


def _metrics_actor(name: Optional[str]):
    if not name:
        return None
    import ray

    try:
        return ray.get_actor(name)
    except ValueError:
        return None


class StageActor:
    """One actor of a pool running one stage, or several consecutive CPU stages fused (each
    stage built and set up once per actor, batches passed between them in memory)."""

    def __init__(self, resolved, languages, schema: pa.Schema, metrics_name: Optional[str] = None):
        resolved = resolved if isinstance(resolved, (list, tuple)) else [resolved]
        self.stages = [rs.build(languages) for rs in resolved]
        for st in self.stages:
            st.setup()
        self.schema = schema
        self.metrics = _metrics_actor(metrics_name)

    def __call__(self, batch: pa.Table) -> pa.Table:
        for stage in self.stages:
            batch = self._one(stage, batch)
        return batch

    def _one(self, stage, batch: pa.Table) -> pa.Table:
        t0 = time.perf_counter()
        live = live_mask(batch)
        n_live = pc.sum(pc.cast(live, pa.int64())).as_py() or 0
        if n_live == batch.num_rows:
            out = stage(batch)
        elif n_live == 0:
            out = batch
        else:
            out = pa.concat_tables([conform(stage(batch.filter(live)), self.schema),
                                    conform(batch.filter(pc.invert(live)), self.schema)])
        if self.metrics is not None:
            self.metrics.add.remote(stage.name, time.perf_counter() - t0, n_live)
        return conform(out, self.schema)


class StageMetrics:
    """Named actor collecting busy seconds and rows per stage (for docs/s in the report)."""

    def __init__(self):
        self.data: dict[str, list[float]] = {}

    def add(self, stage: str, seconds: float, rows: int) -> None:
        s = self.data.setdefault(stage, [0.0, 0, 0])
        s[0] += seconds
        s[1] += rows
        s[2] += 1

    def get(self) -> dict:
        return {k: {"busy_seconds": v[0], "rows": v[1], "batches": v[2]} for k, v in self.data.items()}


class RayExecutor:
    def __init__(self, pipeline, address: Optional[str] = None, num_cpus: Optional[int] = None, progress: bool = True):
        self.pipeline = pipeline
        self.address = address if address is not None else pipeline.config.ray.address
        self.num_cpus = num_cpus or pipeline.config.ray.num_cpus
        self.progress = progress
        self.metrics_name = None
        self._metrics = None
        self._started_ray = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                cfg = self.pipeline.config.ray
                ray.init(num_cpus=self.local_cpus(), object_store_memory=cfg.object_store_memory, **kwargs)
            self._started_ray = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = self.progress
        ctx.print_on_execution_start = False
        ctx.verbose_stats_logs = False
        self.metrics_name = f"tokenmill-metrics-{os.getpid()}-{int(time.time())}"
        self._metrics = ray.remote(StageMetrics).options(name=self.metrics_name, num_cpus=0).remote()

    def local_cpus(self) -> int:
        """CPUs the embedded Ray declares: the machine's, or enough for one actor per pool plus a
        reader task, so a small laptop cannot deadlock with every CPU held by idle actors."""
        cores = self.num_cpus or os.cpu_count() or 1
        need = 1 + sum(max(1, int(r.num_cpus + 0.999)) for _, r in self.pools(self.pipeline.stages))
        if need > cores:
            log.warning("embedded Ray: %d cores but the pipeline needs %d CPU slots (one actor per pool + a "
                        "reader); declaring %d logical CPUs", cores, need, need)
        return max(cores, need)

    def stop(self) -> None:
        import ray

        if self._metrics is not None:
            ray.kill(self._metrics)
            self._metrics = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def stage_metrics(self) -> dict:
        import ray

        return ray.get(self._metrics.get.remote()) if self._metrics is not None else {}

    def cluster_cpus(self) -> int:
        import ray

        return int(ray.cluster_resources().get("CPU", 1))

    # -- building blocks ---------------------------------------------------------------------
    def pools(self, stages) -> list[tuple[list, object]]:
        """Group stages into actor pools: consecutive CPU-only stages share one pool when
        ``ray.fuse_cpu_stages`` (no object-store hop between them); GPU stages get their own."""
        from ..stage import Resources

        groups: list[list] = []
        for rs in stages:
            cpu_only = not rs.resources.num_gpus
            if self.pipeline.config.ray.fuse_cpu_stages and cpu_only and groups and not groups[-1][-1].resources.num_gpus:
                groups[-1].append(rs)
            else:
                groups.append([rs])
        out = []
        for g in groups:
            if len(g) == 1:
                out.append((g, g[0].resources))
                continue
            rs = [x.resources for x in g]
            out.append((g, Resources(num_cpus=max(r.num_cpus for r in rs), num_gpus=0,
                                     memory=max((r.memory or 0) for r in rs) or None,
                                     concurrency=max(r.concurrency for r in rs),
                                     batch_size=min(r.batch_size for r in rs))))
        return out

    def _apply_stages(self, ds, stages, schema: pa.Schema):
        from ray.data import ActorPoolStrategy

        for group, r in self.pools(stages):
            ds = ds.map_batches(
                StageActor,
                fn_constructor_kwargs=dict(resolved=group, languages=self.pipeline.languages, schema=schema,
                                           metrics_name=self.metrics_name),
                batch_format="pyarrow",
                batch_size=r.batch_size,
                compute=ActorPoolStrategy(min_size=1, max_size=r.concurrency),
                num_cpus=r.num_cpus,
                num_gpus=r.num_gpus or None,
                memory=r.memory,
            )  # Ray Data's actor pools restart a killed actor and retry its batches (max_restarts=-1)
        return ds

    def _apply_marks(self, ds, marks: list[tuple[str, str]], schema: pa.Schema):
        """Left-join each global stage's (row_key -> reason) table and stamp the rejects."""
        import ray

        for stage_name, folder in marks:
            if not _has_parquet(folder):
                continue
            right = ray.data.read_parquet(folder).rename_columns({"reject_reason": MARK_REASON})
            ds = ds.join(right, join_type="left_outer", num_partitions=max(2, self.cluster_cpus()), on=("row_key",))
            ds = ds.map_batches(_stamp_marks, fn_kwargs=dict(stage_name=stage_name, schema=schema),
                                batch_format="pyarrow")
        return ds

    def _write(self, ds, folder: str, partition_cols=None, max_rows: Optional[int] = None, compression: str = "zstd"):
        from ray.data.datasource import FilenameProvider

        class PartNames(FilenameProvider):
            def get_filename_for_task(self, write_uuid, task_index):
                return f"part-{task_index:05d}-{write_uuid}.parquet"

        ds.write_parquet(folder, partition_cols=partition_cols, filename_provider=PartNames(),
                         max_rows_per_file=max_rows, compression=None if compression == "none" else compression)

    # -- phases ---------------------------------------------------------------------------------
    def run_stream(self, files: Optional[list[InputFile]], source_dir: Optional[str], marks, stages,
                   schema: pa.Schema, in_schema: Optional[pa.Schema], out_dir: str) -> None:
        import ray

        cfg = self.pipeline.config
        if files is not None:
            rows = [{"path": f.path, "source": f.source, "format": f.format} for f in files]
            ds = ray.data.from_items(rows, override_num_blocks=len(rows))
            ds = ds.map_batches(read_files_batch, batch_size=1, batch_format="pyarrow",
                                fn_kwargs=dict(input_opts=cfg.input, tokenizer_opts=cfg.tokenizer, schema=schema,
                                               metrics_name=self.metrics_name),
                                num_cpus=1)
        else:
            ds = ray.data.read_parquet(source_dir)
            ds = self._apply_marks(ds, marks, in_schema)
            ds = ds.map_batches(conform, fn_kwargs=dict(schema=schema), batch_format="pyarrow")
        ds = self._apply_stages(ds, stages, schema)
        self._write(ds, out_dir, compression="zstd")

    def run_global(self, rs, source_dir: str, out_dir: str) -> None:
        import ray

        stage = rs.build(self.pipeline.languages)
        cols = list(dict.fromkeys([stage.key_column, "row_key", *stage.group_columns, "reject_stage"]))
        keys = ray.data.read_parquet(source_dir).select_columns(cols)
        keys = keys.map_batches(_live_only, batch_format="pyarrow")
        marks = keys.groupby(stage.key_column, num_partitions=max(2, self.cluster_cpus())).map_groups(
            stage.reduce_group, batch_format="pyarrow")
        self._write(marks, out_dir)

    def run_final(self, source_dir: str, marks, schema: pa.Schema, staged: str) -> None:
        """Kept rows to ``data/language=xx/`` (working columns dropped), rejected rows to ``rejects/``."""
        import ray

        out = self.pipeline.config.output
        ds = ray.data.read_parquet(source_dir)
        ds = self._apply_marks(ds, marks, schema)
        drop = [c for c in schema.names if c in ("row_key", "reject_stage", "reject_reason")
                or c in _internal_columns(self.pipeline)]
        kept = ds.map_batches(_kept_rows, fn_kwargs=dict(drop=drop), batch_format="pyarrow")
        raw = f"{staged}/_data"
        self._write(kept, raw, partition_cols=[DEST], max_rows=out.max_rows_per_file, compression=out.compression)
        if out.write_rejects:
            rejects = ds.map_batches(_rejected_rows, batch_format="pyarrow")
            self._write(rejects, f"{staged}/rejects", max_rows=out.max_rows_per_file, compression=out.compression)
        # Ray names hive folders after the partition column; files keep their language column
        from ..manifest import out_fs

        fs, _ = out_fs(raw)
        if fs.exists(raw):
            for folder in fs.ls(raw, detail=False):
                name = folder.rstrip("/").rsplit("/", 1)[-1]
                if name.startswith(f"{DEST}="):
                    target = f"{staged}/data/language={name.split('=', 1)[1]}"
                    fs.makedirs(target, exist_ok=True)
                    for f in fs.ls(folder, detail=False):
                        fs.mv(f, f"{target}/{f.rsplit('/', 1)[-1]}")
            fs.rm(raw, recursive=True)

    def aggregate(self, paths: list[str], group: list[str], columns: list[str]) -> list[dict]:
        """Count and sum ``columns`` grouped by ``group`` over Parquet files (Ray Data aggregation)."""
        import ray
        from ray.data.aggregate import Count, Sum

        if not paths:
            return []
        ds = ray.data.read_parquet(paths, partitioning=None).select_columns(list(dict.fromkeys(group + columns)))
        ds = ds.map_batches(_fill_group_nulls, fn_kwargs=dict(group=group), batch_format="pyarrow")
        res = ds.groupby(group, num_partitions=max(1, min(len(paths), self.cluster_cpus()))).aggregate(Count(), *[Sum(c) for c in columns])
        return res.take_all()


def _internal_columns(pipeline) -> set[str]:
    cols = set()
    for rs in pipeline.stages:
        cols |= set(getattr(rs.cls, "internal_columns", ()))
    return cols


def _has_parquet(folder: str) -> bool:
    from ..manifest import list_parquet, out_fs

    fs, root = out_fs(folder)
    return bool(list_parquet(fs, root))


def _live_only(batch: pa.Table) -> pa.Table:
    return batch.filter(live_mask(batch)).drop_columns(["reject_stage"])


def _stamp_marks(batch: pa.Table, stage_name: str, schema: pa.Schema) -> pa.Table:
    batch = mark_rejects(batch, stage_name, batch[MARK_REASON])
    return conform(batch.drop_columns([MARK_REASON]), schema)


DEST = "_dest"


def _kept_rows(batch: pa.Table, drop: list[str]) -> pa.Table:
    kept = batch.filter(live_mask(batch)).drop_columns([c for c in drop if c in batch.column_names])
    if "language" not in kept.column_names:
        kept = kept.append_column("language", pa.nulls(kept.num_rows, pa.string()))
    lang = pc.fill_null(kept["language"], "und")
    kept = kept.set_column(kept.column_names.index("language"), "language", lang)
    return kept.append_column(DEST, lang)


def _rejected_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.invert(live_mask(batch)))


def _fill_group_nulls(batch: pa.Table, group: list[str]) -> pa.Table:
    for g in group:
        if g in batch.column_names:
            batch = batch.set_column(batch.column_names.index(g), g, pc.fill_null(batch[g].cast(pa.string()), ""))
    return batch
