"""Ray Data executor: the executor interface (``base.Executor``) on Ray Data.

- stream: one execution per phase: ``from_items(work items)`` -> ``map_batches`` of
  ``StreamWorker``s, one per pool (the first reads, the last writes parts): CPU pools as tasks on
  Ray's reused worker processes (stages set up once per process), GPU pools as actor pools;
  order preserved so the run loop can commit each chunk as soon as its last part arrives.
- global step: the key columns of live rows, read by tasks, then the stage's ``global_step`` on
  ``RayDatasetOps`` (``common.run_global_step``): only keys are shuffled, with Ray Data's sort
  shuffle for small runs and its hash shuffle above 1 GiB.
- finalize: one task per chunk (``map_batches`` over chunk items) applying decisions and writing
  the final partitions; the tasks return their write-time statistics.

Nothing here knows a concrete stage, a schema or a file layout; backpressure, retries and actor
restarts are Ray Data's.
"""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import pyarrow as pa

from tokenmill.engine.executors.common import (
    SHUFFLE_BYTES,
    progress_of,
    run_global_step,
    shuffle_partitions,
    stage_metrics,
)
from tokenmill.engine.executors.ray.llm import engine_errors, llm_step_of, processor, split_pool
from tokenmill.engine.executors.ray.logs import quiet_raylet_warnings, ray_data_console, session_logs
from tokenmill.engine.executors.ray.ops import RayDatasetOps
from tokenmill.engine.jobs import FinalJob, GlobalJob, PartWritten, PoolSpec, StreamJob
from tokenmill.engine.plan import plan_pools
from tokenmill.engine.report.stats import WriteStats
from tokenmill.engine.worker import StreamWorker, cached_worker, finalize_chunk, read_live_keys

log = logging.getLogger("tokenmill")
#: below this much phase output, a global step uses Ray Data's task-based sort shuffle (no
#: shuffle actors to start); above it, the hash shuffle meant for large data
SMALL_SHUFFLE_BYTES = 1 << 30
PARTS_PER_KEY_TASK = 64


def _metrics_actor(name: Optional[str]):
    if not name:
        return None
    import ray

    try:
        return ray.get_actor(name)
    except ValueError:
        return None


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
        return {k: list(v) for k, v in self.data.items()}


def _recorder(metrics_name: Optional[str]):
    metrics = _metrics_actor(metrics_name)
    return (lambda stage, seconds, rows: metrics.add.remote(stage, seconds, rows)) if metrics else None


class StageActor:
    """One actor of a GPU pool: a ``StreamWorker`` whose busy time goes to the metrics actor."""

    def __init__(self, spec: PoolSpec, metrics_name: Optional[str] = None):
        self.worker = StreamWorker(spec, _recorder(metrics_name))

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        yield from self.worker(batch)


def stage_task(batch: pa.Table, spec: PoolSpec, metrics_name: Optional[str] = None) -> Iterator[pa.Table]:
    """A task of a CPU pool: the worker process's cached ``StreamWorker`` (set up once per process)."""
    yield from cached_worker(spec, lambda: _recorder(metrics_name))(batch)


def _read_keys(batch: pa.Table, columns: list[str], metrics_name: Optional[str]) -> pa.Table:
    """Task body: the key columns of live rows of the part files named in a batch of work items,
    with a ``node`` id per row (from where the part's rows start in the run)."""
    items = zip(batch["path"].to_pylist(), batch["base"].to_pylist())
    keys = pa.concat_tables([read_live_keys(url, columns, no) for url, no in items])
    metrics = _metrics_actor(metrics_name)
    if metrics is not None:
        metrics.add.remote(SHUFFLE_BYTES, 0.0, keys.nbytes)
    return keys


def _finalize(batch: pa.Table, job: FinalJob) -> pa.Table:
    stats = [finalize_chunk(item, job).to_json(files=True) for item in batch.to_pylist()]
    return pa.table({"stats": pa.array([json.dumps(s) for s in stats], pa.string())})


class RayExecutor:
    def __init__(self, pipeline, address: Optional[str] = None, num_cpus: Optional[int] = None, verbose: bool = False):
        self.pipeline = pipeline
        self.address = address if address is not None else pipeline.config.ray.address
        self.num_cpus = num_cpus or pipeline.config.ray.num_cpus
        self.verbose = verbose
        self._log_dir: Optional[str] = None
        self.metrics_name = None
        self._metrics = None
        self._started_ray = False
        self._reservation_before: Optional[bool] = None   # dataset_ops turns the reservation off until stop
        self._said_gpus: set = set()   # pools whose want of GPUs was said (once per run)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            # quiet unless verbose: workers' output and Ray's warnings stay in the session's log folder
            kwargs = dict(include_dashboard=False, log_to_driver=self.verbose,
                          logging_level=logging.INFO if self.verbose else logging.ERROR)
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                cfg = self.pipeline.config.ray
                ray.init(num_cpus=self.local_cpus(), num_gpus=cfg.num_gpus,
                         object_store_memory=cfg.object_store_memory, **kwargs)
            self._started_ray = True
        self._log_dir = session_logs()
        if not self.verbose:  # Ray Data's advice (UserWarning, DeprecationWarning) is for its own users
            warnings.filterwarnings("ignore", module=r"ray(\.|$)")
            quiet_raylet_warnings()
        ray_data_console(logging.INFO if self.verbose else logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = self.verbose
        ctx.print_on_execution_start = False
        ctx.verbose_stats_logs = False
        # outputs in input order: a chunk is complete once a later chunk's part arrives
        self._preserve_order_before = ctx.execution_options.preserve_order
        ctx.execution_options.preserve_order = True
        self.metrics_name = f"tokenmill-metrics-{os.getpid()}-{int(time.time())}"
        # on the driver's node: a worker node that leaves the cluster must not take the counts with it
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self._metrics = ray.remote(StageMetrics).options(name=self.metrics_name, num_cpus=0,
                                                         scheduling_strategy=here).remote()

    def local_cpus(self) -> int:
        """CPUs the embedded Ray declares: the machine's, or enough for one actor per pool plus a
        task, so a small laptop cannot deadlock with every CPU held by idle actors."""
        cores = self.num_cpus or os.cpu_count() or 1
        pools = plan_pools(self.pipeline.stages, self.pipeline.config.ray.fuse_cpu_stages)
        need = 1 + sum(max(1, int(r.num_cpus + 0.999)) for _, r in pools)
        if need > cores:
            log.warning("embedded Ray: %d cores but the pipeline needs %d CPU slots (one actor per pool + a "
                        "task); declaring %d logical CPUs", cores, need, need)
        return max(cores, need)

    def stop(self) -> None:
        import ray

        if self._metrics is not None:
            ray.kill(self._metrics)
            self._metrics = None
            ray.data.DataContext.get_current().execution_options.preserve_order = self._preserve_order_before
        if self._reservation_before is not None:
            ray.data.DataContext.get_current().op_resource_reservation_enabled = self._reservation_before
            self._reservation_before = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def _counts(self, timeout: float) -> dict:
        import ray

        return ray.get(self._metrics.get.remote(), timeout=timeout) if self._metrics is not None else {}

    def metrics(self) -> dict:
        try:
            data = self._counts(timeout=60)
        except Exception as exc:  # timings are for the report: losing them never fails a committed run
            log.warning("stage timings unavailable (%s: %s)", type(exc).__name__, exc)
            data = {}
        return stage_metrics(data)

    def progress(self) -> dict:
        return progress_of(self._counts(timeout=10))

    def log_location(self) -> str:
        if self._log_dir:
            return self._log_dir
        return "on the Ray cluster's head node (/tmp/ray/session_latest/logs)"

    def cluster_cpus(self) -> int:
        import ray

        return int(ray.cluster_resources().get("CPU", 1))

    # -- phases ---------------------------------------------------------------------------------
    def stream(self, job: StreamJob) -> Iterator[PartWritten]:
        import ray

        if not job.items:
            return
        one_op = len(job.pools) == 1 and not job.pools[0].resources.num_gpus and llm_step_of(job.pools[0]) is None
        with self._no_reservation(one_op):
            ds = self.map_stages(ray.data.from_items(job.items, override_num_blocks=len(job.items)), job.pools,
                                 items=len(job.items))
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                yield PartWritten(row["chunk"], row["file"], row["rows"], row["tokens"])

    def map_stages(self, ds, pools: list[PoolSpec], items: Optional[int] = None):
        """``ds`` through each pool. A CPU pool is a ``map_batches`` of tasks (``concurrency`` at
        once) on Ray's reused worker processes, each of which sets the pool's stages up once; a
        GPU pool is an actor pool (a model stays on its GPU). A reading pool takes one work item
        per call. A generating stage with an LLM-engine step runs as three: its requests (CPU
        tasks), Ray Data's ``ray.data.llm`` processor (the engine's own actor pool), its new rows
        (CPU tasks, which write). Ray Data retries a failed task and restarts a killed actor."""
        for pool in pools:
            step = llm_step_of(pool)
            if step is None:
                ds = self._map_pool(ds, pool, items)
                continue
            before, after = split_pool(pool)
            ds = self._map_pool(self._map_pool(ds, before, items), after, items, llm=(step, pool.resources))
        return ds

    def _map_pool(self, ds, pool: PoolSpec, items: Optional[int], llm=None):
        from ray.data import ActorPoolStrategy

        try:
            from ray.data import TaskPoolStrategy
        except ImportError:   # Ray 2.50 has it, but not at the package's top
            from ray.data._internal.compute import TaskPoolStrategy

        if llm is not None:   # the LLM engine's own actor pool between a pool's two halves
            ds = processor(*llm)(ds).map_batches(engine_errors, batch_format="pyarrow", batch_size=None)
        r = pool.resources
        common = dict(batch_format="pyarrow", batch_size=1 if pool.reads else r.batch_size,
                      num_cpus=r.num_cpus, memory=r.memory)
        if not self._gpus_for(pool):
            return ds.map_batches(stage_task, fn_kwargs=dict(spec=pool, metrics_name=self.metrics_name),
                                  compute=TaskPoolStrategy(size=r.concurrency), **common)
        start = max(1, min(r.concurrency, items or r.concurrency))
        return ds.map_batches(StageActor, fn_constructor_kwargs=dict(spec=pool, metrics_name=self.metrics_name),
                              compute=ActorPoolStrategy(min_size=start, max_size=r.concurrency),
                              num_gpus=r.num_gpus, **common)

    def _gpus_for(self, pool: PoolSpec) -> float:
        """The GPUs each worker of ``pool`` asks Ray for: its ``num_gpus``, except on the Ray this
        run started itself when that has fewer GPUs than one worker needs: no node could ever run
        it, so the pool runs on CPU (as on the local executor) and says so. On a cluster it stays
        (an autoscaler may add GPU nodes), with a warning while the cluster has too few."""
        import ray

        want = pool.resources.num_gpus or 0
        have = ray.cluster_resources().get("GPU", 0)
        if not want or want <= have:
            return want
        names = ", ".join(s.name for s in pool.stages)
        said, self._said_gpus = names in self._said_gpus, self._said_gpus | {names}
        if self._started_ray and not self.address:
            if not said:
                log.warning("%s: %g GPU per worker asked, this machine's Ray has %g: running on CPU (ray.num_gpus "
                            "declares GPUs Ray did not find)", names, want, have)
            return 0
        if not said:
            log.warning("%s: %g GPU per worker asked, the cluster has %g now: the stage waits for nodes with GPUs "
                        "(an autoscaler adds them; without one, remove its resources.num_gpus)", names, want, have)
        return want

    def dataset_ops(self, parts: int, run_id: str = "run") -> RayDatasetOps:
        """``DatasetOps`` for a command that is not a pipeline run (``tokenmill mix``). Its datasets
        are short chains (map, pack, shuffle) of CPU operators: Ray Data's per-operator reservation
        would hold CPUs back for the operators waiting on the shuffle (on 2 cores: one task at a
        time, 1.3x slower), so it is off until ``stop``."""
        import ray

        ctx = ray.data.DataContext.get_current()
        if self._reservation_before is None:
            self._reservation_before = ctx.op_resource_reservation_enabled
        ctx.op_resource_reservation_enabled = False
        return RayDatasetOps(parts, materialize_before_shuffle=False, run_id=run_id)

    def run_global(self, job: GlobalJob) -> dict:
        """The stage's global step on ``RayDatasetOps`` (``common.run_global_step``)."""
        parts = shuffle_partitions(job.input_bytes, self.cluster_cpus())
        with self._shuffle(job.input_bytes) as strategy:  # a Dataset copies the context when it is created
            ops = RayDatasetOps(parts, materialize_before_shuffle=strategy == "sort", run_id=job.run_id)
            return run_global_step(job, ops, lambda columns: ops.materialize(self._keys(job, columns)))

    def _keys(self, job: GlobalJob, columns: list[str]):
        """The key columns of every live row of the phase, read by a few tasks (never the text)."""
        import ray

        n = max(2, self.cluster_cpus())
        blocks = min(len(job.parts), max(2 * n, -(-len(job.parts) // PARTS_PER_KEY_TASK)))
        items = [{"path": p, "base": b} for p, b in zip(job.parts, job.part_bases)]
        keys = ray.data.from_items(items, override_num_blocks=blocks)
        return keys.map_batches(_read_keys, fn_kwargs=dict(columns=columns, metrics_name=self.metrics_name),
                                batch_size=None, batch_format="pyarrow")

    @contextmanager
    def _no_reservation(self, one_operator: bool = True):
        """Datasets created inside run one CPU operator: Ray Data's per-operator reservation (half
        the CPUs held back so no operator of a longer plan starves) would only hold back CPUs
        from the one operator there is -- on 2 cores it ran one task at a time."""
        import ray

        ctx = ray.data.DataContext.get_current()
        before = ctx.op_resource_reservation_enabled
        if one_operator:
            ctx.op_resource_reservation_enabled = False
        try:
            yield
        finally:
            ctx.op_resource_reservation_enabled = before

    @contextmanager
    def _shuffle(self, input_bytes: int):
        """Ray Data's shuffle for this step: ``ray.shuffle`` from the config, or by size (auto)."""
        import ray
        from ray.data.context import ShuffleStrategy

        choice = self.pipeline.config.ray.shuffle
        if choice == "auto":
            choice = "sort" if input_bytes < SMALL_SHUFFLE_BYTES else "hash"
        ctx = ray.data.DataContext.get_current()
        before = ctx.shuffle_strategy
        ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED if choice == "sort" else ShuffleStrategy.HASH_SHUFFLE
        try:
            yield choice
        finally:
            ctx.shuffle_strategy = before

    def finalize(self, job: FinalJob) -> list[WriteStats]:
        import ray

        if not job.items:
            return []
        with self._no_reservation():
            ds = ray.data.from_items(job.items, override_num_blocks=len(job.items))
            ds = ds.map_batches(_finalize, fn_kwargs=dict(job=job.without_items()), batch_size=1, batch_format="pyarrow",
                                num_cpus=1)
        return [WriteStats.from_json(json.loads(r["stats"])) for r in ds.take_all()]
