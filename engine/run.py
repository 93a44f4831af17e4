"""Runs a planned pipeline durably, phase by phase, on an executor (``executors/base.py``).

Layout under ``OUT/_work/<fingerprint>/``: ``p<i>-stream/<chunk>/part-*.parquet`` (each chunk
committed on its own by a ``_SUCCESS`` marker as soon as its last part is written),
``p<i>-<global stage>/_chunk=<n>/`` (decisions, committed as one folder) and ``final/`` (the
curated partitions with their write-time counts). On object stores a move is a copy, so the
marker is the commit; a folder without one is redone. A finished run does nothing; a killed
run redoes only unfinished work.

The curated files are written under ``final/`` and moved into place by the commit on a local
disk (a rename). On an object store, where a move is a copy of every byte, they are written
under their final names at once (``IN_PLACE``, written before the first of them, names the
run's file prefix, so a killed run's files are known as its own and removed by the next commit
that does not want them); the manifest, written last, is the atomic step there: a file is part
of the output only once the manifest lists it.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from tokenmill.engine import __version__ as VERSION
from tokenmill.engine.config import ResolvedStage
from tokenmill.engine.durable.budget import TOKENS_FILE, Budget, cut_to_budget
from tokenmill.engine.durable.incremental import IncrementalRun
from tokenmill.engine.durable.lease import LEASE_FOLDER, Lease
from tokenmill.engine.durable.manifest import MANIFEST, OUTPUT_FOLDERS, commit, named_by, remove_superseded
from tokenmill.engine.durable.ownership import IN_PLACE, check_output
from tokenmill.engine.global_ops import part_bases
from tokenmill.engine.io.common_crawl import snapshot_files
from tokenmill.engine.io.listing import list_input_files
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.io.transient import configure as configure_retries
from tokenmill.engine.jobs import (
    Decisions,
    FinalJob,
    GlobalJob,
    PartWritten,
    PoolSpec,
    StreamJob,
    input_item,
    part_item,
)
from tokenmill.engine.plan import (
    Chunk,
    Phase,
    RunPlan,
    fingerprint,
    input_stamps,
    plan_pools,
    plan_run,
    with_external_state,
)
from tokenmill.engine.report.build import build_report, print_summary, write_report
from tokenmill.engine.report.console import Console
from tokenmill.engine.report.stats import WriteStats
from tokenmill.engine.stage import Resources

DONE = "_SUCCESS"
STATS = "_stats.json"
ATTEMPTS = "_attempts"      # marks of input files being read (``durable/attempts.py``)
FIGURES = "_figures.json"   # what a global step reports (e.g. connected-components rounds)
#: (phase, decisions by chunk): parts a phase reads, with what to apply to them
Source = tuple[Phase, dict[int, Decisions]]


def part_name(number: int, rows: int) -> str:
    """A committed stream part's name: its number in the chunk and its row count."""
    return f"part-{number:08d}-n{rows}.parquet"


def part_rows(path: str) -> int:
    """The row count a committed part's name carries (``part_name``)."""
    return int(path.rsplit("-n", 1)[1].split(".", 1)[0])


class RunResult:
    def __init__(self, out: str, manifest: dict, report: Optional[dict], skipped: bool):
        self.out, self.manifest, self.report, self.skipped = out, manifest, report, skipped


class PhaseRunner:
    """Runs each phase of a plan on an executor, skipping what an earlier run committed."""

    def __init__(self, store: Storage, work: str, executor, pipeline, plan: RunPlan, console: Console,
                 sizes: Optional[dict[str, int]] = None, run_id: Optional[str] = None):
        self.store, self.executor, self.pipeline, self.plan = store, executor, pipeline, plan
        self.console, self.say = console, console.say
        self.sizes = sizes or {}
        self.run_id = run_id or work   # names what the run leaves for later runs (a band index)
        self.name_prefix = ""          # starts every output file's name (the run's number or fingerprint)
        self.work = store.path("_work", work)
        self.tmp_root = store.path("_work", "_tmp")
        self.phase_seconds: dict[str, float] = {}
        self.global_figures: dict[str, dict] = {}
        self._listings: dict[int, dict[str, dict[str, int]]] = {}
        self._committed: dict[int, set[str]] = {}
        self.check: Callable[[], None] = lambda: None   # before each commit: the lease is still ours
        self.prepared: dict[str, ResolvedStage] = {}     # stages with what ``prepare`` built for them

    def run(self) -> WriteStats:
        self.prepare()
        sources: list[Source] = []   # what the next phase reads: (phase, pending decisions by chunk)
        for phase in self.plan.phases:
            self._timed(phase.stream_dir, self.stream, phase, sources)
            sources = sources + [(phase, {})] if phase.generates else [(phase, {})]
            if phase.barrier is not None:
                self._timed(phase.decisions_dir, self.run_global, phase)
                sources = [(phase, self.decisions_by_chunk(phase))]
        return self._timed("write", self.finalize, sources)

    def prepare(self) -> None:
        """What stages build once per run for their workers (``Stage.prepare``), by stage name."""
        for rs in self.pipeline.stages:
            params = rs.cls.prepare(rs.params, self.store.url(f"{self.work}/prepared/{rs.name}"))
            if params is not rs.params:
                self.prepared[rs.name] = ResolvedStage(rs.cls, rs.name, params, rs.resources, rs.type_name)

    def _timed(self, name: str, fn, *args):
        t0 = time.time()
        try:
            return fn(*args)
        finally:
            self.phase_seconds[name] = time.time() - t0
            self.console.end_phase()

    def _tmp(self) -> str:
        return f"{self.tmp_root}/{uuid.uuid4().hex[:12]}"

    def remove_work(self) -> None:
        """``_work`` once the run is committed, right after a lease check: while this run holds the
        lease no other run works there, so what is left besides this run's work is a dead run's;
        a run that lost its lease must not touch the next one's."""
        self.check()
        self.store.rm(self.store.path("_work"))

    # -- stream ----------------------------------------------------------------------------------
    def chunk_dir(self, phase: Phase, chunk: Chunk) -> str:
        return f"{self.work}/{phase.stream_dir}/{chunk.name}"

    def parts(self, phase: Phase, chunk: Chunk) -> list[str]:
        return [self.store.url(p) for p in self._listing(phase).get(chunk.name, {})]

    def _listing(self, phase: Phase) -> dict[str, dict[str, int]]:
        """chunk name -> {part path: size} of a phase's committed parts, from one listing of the
        phase folder (a listing per chunk would be thousands of calls on an object store)."""
        if phase.index not in self._listings:
            folder = f"{self.work}/{phase.stream_dir}"
            by_chunk: dict[str, dict[str, int]] = {}
            done: set[str] = set()
            for path, size in self.store.find_sizes(folder).items():
                chunk, _, name = self.store.rel(path, folder).partition("/")
                if name.endswith(".parquet") and "/" not in name:
                    by_chunk.setdefault(chunk, {})[path] = size
                elif name == DONE:
                    done.add(chunk)
            self._listings[phase.index] = by_chunk
            self._committed[phase.index] = done
        return self._listings[phase.index]

    def committed_chunks(self, phase: Phase) -> set[str]:
        """Names of the chunks of a phase committed by their marker (the same one listing)."""
        self._listing(phase)
        return self._committed[phase.index]

    def stream(self, phase: Phase, sources: list[Source]) -> None:
        done = self.committed_chunks(phase)   # one listing, not a request per chunk
        todo = [c for c in self.plan.chunks if c.name not in done]
        n = len(self.plan.chunks)
        if len(todo) < n:
            self.say(f"stream: phase {phase.index}: {n - len(todo)}/{n} chunks already done, skipped")
        if not todo:
            return
        items = []
        for c in todo:
            if not sources:
                items += [input_item(c.index, f, self.sizes.get(f.path) or 0) for f in c.files]
            else:
                items += [part_item(c.index, p, d) for p, d in self.source_parts(sources, c)]
        what = "files" if not sources else "parts"
        self.say(f"stream: phase {phase.index}: {len(todo)} chunk(s), {len(items)} {what} through "
                 f"{' -> '.join(s.name for s in phase.stages) or '(no stages)'}")
        self.console.start_phase(f"{'generate' if phase.generates else 'stream'} {phase.index}",
                                 files_total=len(items) if not sources else None,
                                 bytes_total=sum(it["bytes"] for it in items) or None)
        tmp = self._tmp()
        job = StreamJob(items, self.pools(phase, self.store.url(tmp)))
        budget = self.budget(phase)
        committer = ChunkCommitter(self, phase, todo, tmp, budget)
        self._listings.pop(phase.index, None)
        if budget is None or budget.left > 0:
            for part in self.executor.stream(job):
                committer.add(part)
                if budget is not None and budget.left <= 0:
                    self.say(f"generate: {phase.stages[0].name}: budget of {budget.limit:,} tokens reached")
                    break
        committer.finish()
        self.say(f"stream: phase {phase.index}: {committer.next} chunk(s) committed ({committer.total_rows:,} rows)")

    def source_parts(self, sources: list[Source], chunk: Chunk) -> list[tuple[str, Decisions]]:
        """The part files a phase reads for a chunk, each with the decisions to apply to it."""
        return [(p, pending.get(chunk.index, [])) for phase, pending in sources for p in self.parts(phase, chunk)]

    def budget(self, phase: Phase) -> Optional[Budget]:
        """A generating phase's token budget, less what its committed chunks already hold."""
        if not phase.generates:
            return None
        limit = phase.stages[0].build(self.pipeline.languages).budget()
        if limit is None:
            return None
        done = self.committed_chunks(phase)
        used = sum((self.store.read_json(f"{self.chunk_dir(phase, c)}/{TOKENS_FILE}") or {}).get("tokens", 0)
                   for c in self.plan.chunks if c.name in done)
        return Budget(limit, used)

    def pools(self, phase: Phase, sink_url: str) -> list[PoolSpec]:
        cfg = self.pipeline.config
        groups = plan_pools(phase.stages, cfg.ray.fuse_cpu_stages) or [([], None)]
        specs = []
        for i, (stages, res) in enumerate(groups):
            res = res or Resources()
            stages = [self.prepared.get(rs.name, rs) for rs in stages]
            specs.append(PoolSpec(stages=stages, languages=self.pipeline.languages, schema=phase.schema,
                                  batch_size=res.batch_size, resources=res, reads=i == 0,
                                  input=cfg.input, tokenizer=cfg.tokenizer, io=cfg.io,
                                  attempts_url=self.store.url(self.store.path("_work", ATTEMPTS)),
                                  sink_url=sink_url if i == len(groups) - 1 else None))
        return specs

    def commit_chunk(self, phase: Phase, chunk: Chunk, files: list[tuple[str, int]], tokens: int = 0) -> None:
        """``files``: (path, rows) of each part, in the order they arrived."""
        self.check()
        final = self.chunk_dir(phase, chunk)
        self.store.rm(final)  # a commit cut short
        # named in the order they arrived (input order), so every later phase reads them in that
        # order, with their row counts (a global step numbers rows from them without reading a file)
        self.store.move_files([f for f, _ in files], final, [part_name(i, rows) for i, (_, rows) in enumerate(files)])
        if phase.generates:
            self.store.write_json_atomic(f"{final}/{TOKENS_FILE}", {"tokens": tokens})
        self.store.touch(f"{final}/{DONE}")

    # -- global ----------------------------------------------------------------------------------
    def run_global(self, phase: Phase) -> None:
        final = f"{self.work}/{phase.decisions_dir}"
        if self.store.exists(f"{final}/{DONE}"):
            self.global_figures[phase.barrier.name] = self.store.read_json(f"{final}/{FIGURES}") or {}
            self.say(f"global: {phase.barrier.name} already done, skipped")
            return
        t0 = time.time()
        self.console.start_phase(f"global {phase.barrier.name}")
        listing = self._listing(phase)
        parts = [(p, part_rows(p)) for c in self.plan.chunks for p in sorted(listing.get(c.name, {}))]
        chunk_rows = [sum(part_rows(p) for p in listing.get(c.name, {})) for c in self.plan.chunks]
        size = sum(sum(sizes.values()) for sizes in listing.values())
        tmp = self._tmp()
        figures = self.executor.run_global(GlobalJob(
            phase.barrier, self.pipeline.languages, [self.store.url(p) for p, _ in parts], self.store.url(tmp), size,
            part_bases=part_bases([r for _, r in parts]), chunk_bases=part_bases(chunk_rows),
            run_id=self.run_id, check=self.check)) or {}
        self.store.makedirs(tmp)
        self.store.write_json_atomic(f"{tmp}/{FIGURES}", figures)
        self._commit_dir(tmp, final)
        self.global_figures[phase.barrier.name] = figures
        extra = "".join(f", {k} {v}" for k, v in figures.items() if not isinstance(v, (dict, list)))   # tables: report.json
        self.say(f"global: {phase.barrier.name} done in {time.time() - t0:.1f}s{extra}")

    def decisions_by_chunk(self, phase: Phase) -> dict[int, Decisions]:
        folder = f"{self.work}/{phase.decisions_dir}"
        out: dict[int, list[str]] = {}
        for rel in self.store.list_parquet(folder):
            part = rel.split("/", 1)[0]
            if "=" in part:
                out.setdefault(int(part.split("=", 1)[1]), []).append(self.store.url(f"{folder}/{rel}"))
        return {c: [(phase.barrier.name, urls)] for c, urls in out.items()}

    def _commit_dir(self, tmp: str, final: str) -> None:
        self.check()
        self.store.makedirs(tmp)
        self.store.rm(final)
        self.store.move_dir(tmp, final)
        self.store.touch(f"{final}/{DONE}")

    # -- final -----------------------------------------------------------------------------------
    def finalize(self, sources: list[Source]) -> WriteStats:
        """Each chunk's curated files and their write-time counts: under ``final/`` to be moved
        into place by the commit, or, on an object store, in place at once (``IN_PLACE``)."""
        staged = f"{self.work}/final"
        if self.store.exists(f"{staged}/{DONE}"):
            self.say("write: already done, skipped")
            return WriteStats.from_json(self.store.read_json(f"{staged}/{STATS}") or {})
        items = []
        for c in self.plan.chunks:
            parts = self.source_parts(sources, c)
            decisions = [d for _, pending in sources for d in pending.get(c.index, [])]
            if parts:
                items.append({"chunk": c.index, "parts": [p for p, _ in parts], "decisions": json.dumps(decisions)})
        self.console.start_phase("write")
        tmp = self._tmp()
        cfg = self.pipeline.config
        in_place = not self.store.local
        if in_place:
            self.check()
            self.store.write_json_atomic(f"{self.work}/{IN_PLACE}", {"prefix": self.name_prefix})
        target = self.store.url(self.store.root if in_place else tmp)
        stats = WriteStats()
        for s in self.executor.finalize(FinalJob(items, self.plan.final_schema, self.plan.drop_columns,
                                                 target, cfg.output, list(self.pipeline.stages),
                                                 self.name_prefix, cfg.io)):
            stats.merge(s)
        self.store.makedirs(tmp)
        self.store.write_json_atomic(f"{tmp}/{STATS}", stats.to_json(files=True))
        self._commit_dir(tmp, staged)
        where = "written under their final names" if in_place else "staged"
        self.say(f"write: curated data and rejects {where} ({len(items)} chunk(s))")
        return stats


class ChunkCommitter:
    """Commits a stream phase's chunks as their parts arrive, in chunk order: once a part of a
    later chunk arrives (or the stream ends), every earlier chunk is complete. With a ``budget``
    (a generating phase), the part that reaches it is cut to the rows needed, and the chunks not
    reached are committed empty, so a re-run generates no more."""

    def __init__(self, runner: PhaseRunner, phase: Phase, chunks: list[Chunk], tmp: str,
                 budget: Optional[Budget] = None):
        self.runner, self.phase, self.tmp, self.budget = runner, phase, tmp, budget
        self.chunks = chunks
        self.next = 0
        self.files: dict[int, list[tuple[str, int]]] = {}
        self.tokens: dict[int, int] = {}
        self.total_rows = 0

    def add(self, part: PartWritten) -> None:
        if self.budget is not None and self.budget.left <= 0:
            return
        while self.next < len(self.chunks) and self.chunks[self.next].index < part.chunk:
            self._commit(self.chunks[self.next])
        path = f"{self.tmp}/{part.file.rsplit('/', 1)[-1]}"
        rows, tokens = part.rows, part.tokens
        if self.budget is not None:
            if tokens >= self.budget.left:
                rows, tokens = cut_to_budget(self.runner.store, path, self.budget.left)
            self.budget.used += tokens
        self.files.setdefault(part.chunk, []).append((path, rows))
        self.tokens[part.chunk] = self.tokens.get(part.chunk, 0) + tokens
        self.total_rows += rows

    def finish(self) -> None:
        while self.next < len(self.chunks):
            self._commit(self.chunks[self.next])

    def _commit(self, chunk: Chunk) -> None:
        self.runner.commit_chunk(self.phase, chunk, self.files.pop(chunk.index, []), self.tokens.pop(chunk.index, 0))
        self.next += 1


def run_pipeline(pipeline, address: Optional[str] = None, output: Optional[str] = None,
                 num_cpus: Optional[int] = None, progress: bool = True, keep_work: bool = False,
                 console: Optional[Console] = None, verbose: bool = False, engine: Optional[str] = None,
                 master: Optional[str] = None, lock_wait_s: Optional[float] = None, force: bool = False,
                 lease_holder: Optional[str] = None) -> RunResult:
    """Run a pipeline to completion (or finish an interrupted run). ``engine``: ``ray``, ``spark``
    or ``local`` (default: the config's ``engine``); ``address``: a Ray cluster, ``master``: a Spark
    master; ``console``: where messages and progress go (default: a live display in a terminal,
    progress lines elsewhere, none with ``progress=False``); ``verbose``: let the engine's own logs
    and progress through. The output does not depend on the engine: a run begun on one may be
    finished on the other. With ``output.incremental`` the run takes only input files no earlier
    run took (``incremental.py``).

    Every run holds the output's lease (``lease.py``) from before it looks at anything until it is
    done: ``lock_wait_s`` overrides ``output.lock_wait_seconds`` (raises ``lease.LeaseHeld`` when
    another run holds the output that long; ``lease.LeaseLost`` when the lease is lost midway);
    ``lease_holder`` names the job whose earlier attempts' leases this run takes over at once.
    A folder holding another kind of run, another pipeline's output or files tokenmill did not
    write is refused (``ownership.ForeignOutput``) unless ``force``."""
    console = console or Console.auto("auto" if progress else "off")
    cfg = pipeline.config
    configure_retries(cfg.io)
    out = output or cfg.output.path
    store = Storage(out)
    wait = cfg.output.lock_wait_seconds if lock_wait_s is None else lock_wait_s
    lease = Lease(store, store.path(LEASE_FOLDER), cfg.output.lease_seconds, console.say, holder=lease_holder)
    try:
        lease.acquire(wait)
        owned = check_output(store, cfg.name, cfg.output.incremental, output_folders(pipeline), force)
        inc = IncrementalRun(store, lease, console.say) if cfg.output.incremental else None
        files, problems = (snapshot_files(cfg.input.common_crawl, cfg.input.format), []) if cfg.input.common_crawl \
            else list_input_files(cfg.input.paths, cfg.input.format)
        for where, what in problems:
            console.say(f"input: {where}: {what}")
        stamps = input_stamps(files)
        if inc is not None:
            files = inc.take(files, stamps).files
            stamps, pipeline = inc.stamps_of(files), inc.pipeline(pipeline)
            if not files:
                console.say(f"incremental: no new input files in {cfg.input.described()}; nothing to do")
                return RunResult(out, store.read_json(store.path(MANIFEST)) or {}, None, skipped=True)
        context = RunContext(store, out, files, stamps, problems, inc, console, lease, owned.replaceable(force))
        return _run(pipeline, context, address=address, master=master, num_cpus=num_cpus, engine=engine,
                    keep_work=keep_work, verbose=verbose)
    finally:
        lease.release()


@dataclass
class RunContext:
    """What a run found before any work: its output, inputs, lease and the files it may replace."""

    store: Storage
    out: str
    files: list
    stamps: list
    problems: list
    inc: Optional[IncrementalRun]
    console: Console
    lease: Lease
    owned: set[str]   # the files in the output folders the commit may replace (``Owned.replaceable``)

    def replaceable(self, prefix: Optional[str]) -> set[str]:
        """What the commit may remove: an incremental run only files named with its own run number
        (an earlier attempt's)."""
        return self.owned if prefix is None else {p for p in self.owned if named_by(p, prefix)}


def _run(pipeline, ctx: RunContext, address, master, num_cpus, engine, keep_work: bool, verbose: bool) -> RunResult:
    from tokenmill.engine.executors.base import run_executor

    cfg, store, inc, console = pipeline.config, ctx.store, ctx.inc, ctx.console
    base = fingerprint(pipeline, ctx.files, ctx.stamps)
    run_id = inc.run_id if inc is not None else base[:16]   # names what this run leaves for later runs
    fp = with_external_state(pipeline, base, run_id)
    manifest = store.read_json(store.path(MANIFEST))
    if inc is None and manifest and manifest.get("complete") and manifest.get("fingerprint") == fp:
        return _already_complete(store, ctx.out, pipeline, manifest, ctx.problems, console)

    plan = plan_run(pipeline, ctx.files)
    engine = engine or cfg.engine
    executor = run_executor(engine, pipeline, address=address, master=master, num_cpus=num_cpus, verbose=verbose)
    console.say(f"run {cfg.name} on {engine}: {len(ctx.files)} input files in {len(plan.chunks)} chunk(s), "
                f"{len(plan.phases)} phase(s), output {ctx.out}")
    t_start = time.time()
    executor.start()
    console.poll = executor.progress
    try:
        runner = PhaseRunner(store, fp[:16], executor, pipeline, plan, console,
                             {f.path: st[0] for f, st in zip(ctx.files, ctx.stamps) if st}, run_id=run_id)
        # file names carry the run (an incremental run's number, a plain run's fingerprint), so a
        # run never overwrites a file an earlier manifest lists: that manifest stays true until the
        # new one replaces it, and only then do the files it alone listed go
        runner.name_prefix = inc.name_prefix if inc is not None else f"{fp[:8]}-"
        runner.check = ctx.lease.check
        result = _run_and_commit(runner, ctx, fp, keep_work, t_start)
        console.close()
        print_summary(result.report, ctx.out, logs=executor.log_location())
        return result
    finally:
        console.close()
        executor.stop()


def output_folders(pipeline) -> tuple[str, ...]:
    """``data``, ``rejects``, and the folder of each generating stage (``synthetic``)."""
    extra = [rs.cls.emits_to for rs in pipeline.stages if rs.generates]
    return tuple(dict.fromkeys([*OUTPUT_FOLDERS, *extra]))


def _run_and_commit(runner: PhaseRunner, ctx: RunContext, fp: str, keep_work: bool, t_start: float) -> RunResult:
    """Every phase, then the commit (files, manifest), then the report."""
    pipeline, executor, store, inc, out = runner.pipeline, runner.executor, ctx.store, ctx.inc, ctx.out
    stats = runner.run()
    t0 = time.time()
    problems = ctx.problems
    in_place = store.exists(f"{runner.work}/{IN_PLACE}")
    manifest = commit(store, store.root if in_place else f"{runner.work}/final", f"{runner.work}/_commit.json", fp,
                      {"name": pipeline.config.name, "kind": "incremental" if inc else "plain",
                       "tokenmill_version": VERSION, "inputs": [f.path for f in ctx.files],
                       "input_problems": [list(p) for p in problems], "counts": stats.to_json()},
                      folders=output_folders(pipeline), owned=ctx.replaceable(inc.name_prefix if inc else None),
                      check=ctx.lease.check, written=stats.files,
                      part=inc.part if inc else None, earlier=inc.earlier() if inc else None, in_place=in_place)
    if inc is not None:
        inc.commit(stats, manifest)
    runner.phase_seconds["commit"] = time.time() - t0
    runner.say(f"committed {len(manifest['files'])} files to {out}")
    t0 = time.time()
    metrics = {**executor.metrics(), "global_steps": runner.global_figures}
    report = build_report(pipeline, manifest, stats, problems, metrics,
                          wall_seconds=time.time() - t_start, phase_seconds=runner.phase_seconds)
    if inc is not None:
        report["incremental"] = inc.report_section(pipeline, manifest, build_report)
    report["phase_seconds"]["report"] = round(time.time() - t0, 2)
    report["wall_seconds"] = round(time.time() - t_start, 2)  # everything but the engine's shutdown
    ctx.lease.check()
    write_report(store, report)
    if not keep_work:
        runner.remove_work()
    return RunResult(out, manifest, report, skipped=False)


def _already_complete(store: Storage, out: str, pipeline, manifest: dict, problems, console: Console) -> RunResult:
    report = store.read_json(store.path("report.json"))
    if report is None or report.get("fingerprint") != manifest.get("fingerprint"):
        # killed between the manifest and the report (none, or an earlier run's): rebuilt from the manifest's counts
        report = build_report(pipeline, manifest, WriteStats.from_json(manifest.get("counts") or {}), problems,
                              {}, wall_seconds=0.0, phase_seconds={})
        write_report(store, report)
        console.say(f"{out} was complete but had no report; rebuilt it")
    remove_superseded(store, manifest)   # a commit killed after its manifest
    console.say(f"{out} is already complete for this config and input (fingerprint {manifest['fingerprint'][:12]}); "
                "nothing to do.")
    return RunResult(out, manifest, report, skipped=True)
