"""The planner: a validated pipeline and its input files -> phases, chunks, pools and folders.

The stage list is cut after every global stage. Phase ``i`` streams every chunk of input through
its stages (phase 0 reads the input files; a later phase reads the previous phase's output with
the decisions of the global stage between them applied), then runs its global stage, if any,
whose decisions are written partitioned by chunk. A generating stage (rephrase) is a phase of its
own that writes only the new rows; the phase after it reads those beside the rows it read. The final step applies the last decisions and
writes the curated partitions. Nothing here runs anything or knows an engine.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa

from tokenmill.engine import __version__ as VERSION
from tokenmill.engine.io.listing import InputFile, stamp_of
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.schema import WORKING_COLUMNS, phase_schema
from tokenmill.engine.stage import Resources

#: the layout of OUT/_work; a change makes older unfinished work unusable, so it is in the fingerprint
WORK_LAYOUT = 4


@dataclass
class Phase:
    """One stream phase and the global stage closing it (if any)."""

    index: int
    stages: list                      # ResolvedStage, streamed in order
    schema: pa.Schema                 # what this phase writes
    barrier: Optional[object] = None  # a global ResolvedStage
    generates: bool = False           # one generating stage: the phase writes only its new rows

    @property
    def stream_dir(self) -> str:
        return f"p{self.index}-stream"

    @property
    def decisions_dir(self) -> Optional[str]:
        return f"p{self.index}-{self.barrier.name}" if self.barrier is not None else None


@dataclass
class Chunk:
    """Input files committed together: the unit of resume. Its name is kept through every phase."""

    index: int
    files: list[InputFile]

    @property
    def name(self) -> str:
        digest = hashlib.sha1("\n".join(f.path for f in self.files).encode()).hexdigest()[:8]
        return f"chunk-{self.index:05d}-{digest}"


@dataclass
class RunPlan:
    phases: list[Phase]
    chunks: list[Chunk]
    final_schema: pa.Schema
    drop_columns: list[str] = field(default_factory=list)   # dropped from the curated data


def plan_run(pipeline, files: list[InputFile]) -> RunPlan:
    phases: list[Phase] = []
    cur: list = []
    done: list = []
    for rs in pipeline.stages:
        if rs.generates:
            if cur or not phases:   # the rows it reads are written by a phase before it
                phases.append(_phase(len(phases), cur, done, None))
                done, cur = done + cur, []
            phases.append(Phase(len(phases), [rs], phase_schema(done + [rs]), generates=True))
            done = done + [rs]
            continue
        cur.append(rs)
        if rs.is_global:
            phases.append(_phase(len(phases), cur, done, rs))
            done, cur = done + cur, []
    if cur or not phases:
        phases.append(_phase(len(phases), cur, done, None))
        done = done + cur
    n = pipeline.config.input.files_per_chunk
    chunks = [Chunk(i, files[j:j + n]) for i, j in enumerate(range(0, len(files), n))]
    final = phase_schema(done)
    internal = {c for rs in pipeline.stages for c in getattr(rs.cls, "internal_columns", ())}
    drop = [c for c in final.names if c in WORKING_COLUMNS or c in internal]
    return RunPlan(phases, chunks, final, drop)


def _phase(index: int, stages: list, before: list, barrier) -> Phase:
    return Phase(index, list(stages), phase_schema(before + stages), barrier)


def plan_pools(stages, fuse_cpu_stages: bool = True) -> list[tuple[list, Resources]]:
    """Group stages into actor pools: consecutive CPU-only stages share one pool when
    ``fuse_cpu_stages`` (no hop between them); GPU stages get their own."""
    groups: list[list] = []
    for rs in stages:
        cpu_only = not rs.resources.num_gpus
        if fuse_cpu_stages and cpu_only and groups and not groups[-1][-1].resources.num_gpus:
            groups[-1].append(rs)
        else:
            groups.append([rs])
    out = []
    for g in groups:
        rs = [x.resources for x in g]
        out.append((g, g[0].resources if len(g) == 1 else Resources(
            num_cpus=max(r.num_cpus for r in rs), num_gpus=0, memory=max((r.memory or 0) for r in rs) or None,
            concurrency=max(r.concurrency for r in rs), batch_size=min(r.batch_size for r in rs))))
    return out


def input_stamps(files: list[InputFile]) -> list[list]:
    """(size, modification stamp) of each input file: from the listing on object stores (no request
    per file), else asked once per run (a local stat)."""
    return [list(f.listed) if f.listed is not None else file_stamp(f.path) for f in files]


def fingerprint(pipeline, files: list[InputFile], stamps: Optional[list[list]] = None) -> str:
    """Changes when anything that changes the output changes: config, language files, inputs."""
    stamps = stamps if stamps is not None else input_stamps(files)
    cfg = pipeline.config.model_dump(mode="json")
    for engine_only in ("engine", "ray", "spark", "local", "io"):   # the same output on any engine, with any retries
        cfg.pop(engine_only, None)
    cfg["output"] = {k: v for k, v in cfg["output"].items()
                     if k not in ("path", "lock_wait_seconds", "lease_seconds")}   # where and when, not what
    for st in cfg["stages"]:
        st.pop("resources", None)
    langs = {iso: pipeline.languages.raw(iso) for iso in pipeline.languages.languages_with_files()}
    inputs = [[f.path, f.source, f.format, *st] for f, st in zip(files, stamps)]
    blob = json.dumps({"v": VERSION, "layout": WORK_LAYOUT, "cfg": cfg, "langs": langs, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def with_external_state(pipeline, base: str, run_id: Optional[str] = None) -> str:
    """The run's fingerprint: ``base`` (config, languages, inputs) plus what stages read besides the
    inputs (``Stage.external_state``); ``base`` alone when no stage reads anything else. What a
    run leaves for later runs is named by ``run_id`` (default ``base[:16]``; an incremental run's
    number), so its own output never counts."""
    states = [rs.build(pipeline.languages).external_state(run_id or base[:16]) for rs in pipeline.stages]
    if all(s is None for s in states):
        return base
    blob = json.dumps({"base": base, "external": states}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_stamp(path: str) -> list:
    """(size, modification stamp) of an input file: size and ETag (or time) on object stores."""
    try:
        if "://" in path:
            st = Storage(path)
            return stamp_of(st.fs.info(st.root))
        st = os.stat(path)
        return [st.st_size, int(st.st_mtime)]
    except OSError:
        return [None, None]
