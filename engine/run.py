"""Plans a validated pipeline into phases and runs them durably on an executor.

Phases: the stage list is cut after every global stage. Phase 0 streams the input files (in
chunks of ``input.files_per_chunk``, each committed on its own) through the stream stages; a
global phase writes its decisions (row_key -> reason); the next stream phase (or the final
write) joins them back. Every phase writes to a temporary folder and renames it when done, so
a re-run after a kill redoes only unfinished work, and a finished run does nothing.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

import fsspec

from .config import Pipeline
from .languages import deep_merge
from .manifest import MANIFEST, commit, move_dir, out_fs, read_json, write_json_atomic
from .readers import list_input_files

log = logging.getLogger("tokenmill")
VERSION = "0.1.0"
DONE = "_SUCCESS"


@dataclass
class Segment:
    stream: list = field(default_factory=list)   # ResolvedStage, streamed in order
    barrier: Optional[object] = None             # a global ResolvedStage closing the segment


def plan_segments(pipeline: Pipeline) -> list[Segment]:
    segs, cur = [], Segment()
    for rs in pipeline.stages:
        cur.stream.append(rs)
        if rs.is_global:
            cur.barrier = rs
            segs.append(cur)
            cur = Segment()
    if cur.stream or not segs:
        segs.append(cur)
    return segs


def fingerprint(pipeline: Pipeline, files) -> str:
    """Changes when anything that changes the output changes: config, language files, inputs."""
    cfg = pipeline.config.model_dump(mode="json")
    cfg.pop("ray", None)
    cfg["output"] = {k: v for k, v in cfg["output"].items() if k != "path"}
    for st in cfg["stages"]:
        st.pop("resources", None)
    langs = {iso: pipeline.languages.raw(iso) for iso in pipeline.languages.languages_with_files()}
    inputs = []
    for f in files:
        try:
            if "://" in f.path:  # object store: size and ETag (or modification time), from the listing's cache
                rfs, rpath = fsspec.core.url_to_fs(f.path)
                info = rfs.info(rpath)
                stamp = next((info[k] for k in ("ETag", "etag", "LastModified", "mtime", "updated") if info.get(k)), None)
                inputs.append([f.path, f.source, f.format, info.get("size"), None if stamp is None else str(stamp)])
                continue
            st = os.stat(f.path)
            inputs.append([f.path, f.source, f.format, st.st_size, int(st.st_mtime)])
        except OSError:
            inputs.append([f.path, f.source, f.format, None, None])
    blob = json.dumps({"v": VERSION, "cfg": cfg, "langs": langs, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def say(msg: str) -> None:
    print(f"[tokenmill] {msg}", file=sys.stderr, flush=True)


class RunResult:
    def __init__(self, out: str, manifest: dict, report: Optional[dict], skipped: bool):
        self.out, self.manifest, self.report, self.skipped = out, manifest, report, skipped


def run_pipeline(pipeline: Pipeline, address: Optional[str] = None, output: Optional[str] = None,
                 num_cpus: Optional[int] = None, progress: bool = True, keep_work: bool = False) -> RunResult:
    from .executors.ray_executor import RayExecutor, phase_schema
    from .report import build_report, print_summary, write_report

    cfg = pipeline.config
    out = output or cfg.output.path
    fs, root = out_fs(out)
    files, problems = list_input_files(cfg.input.paths, cfg.input.format)
    for where, what in problems:
        say(f"input: {where}: {what}")
    fp = fingerprint(pipeline, files)
    manifest = read_json(fs, f"{root}/{MANIFEST}")
    if manifest and manifest.get("complete") and manifest.get("fingerprint") == fp:
        report = read_json(fs, f"{root}/report.json")
        if report is None:  # killed between the manifest and the report: rebuild it from the output
            executor = RayExecutor(pipeline, address=address, num_cpus=num_cpus, progress=progress)
            executor.start()
            try:
                report = build_report(executor, pipeline, fs, root, manifest, problems, wall_seconds=0.0, phase_seconds={})
                write_report(fs, root, report)
            finally:
                executor.stop()
            say(f"{out} was complete but had no report; rebuilt it")
        say(f"{out} is already complete for this config and input (fingerprint {fp[:12]}); nothing to do.")
        return RunResult(out, manifest, report, skipped=True)

    work = f"{root}/_work/{fp[:16]}"
    tmp_root = f"{root}/_work/_tmp"
    fs.makedirs(work, exist_ok=True)
    fs.makedirs(tmp_root, exist_ok=True)
    segments = plan_segments(pipeline)
    executor = RayExecutor(pipeline, address=address, num_cpus=num_cpus, progress=progress)
    t_start = time.time()
    phase_times: dict[str, float] = {}
    say(f"run {cfg.name}: {len(files)} input files, {len(segments)} segment(s), output {out}")
    executor.start()
    try:
        proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]

        def U(path: str) -> str:  # what the engine gets: a URL again for object stores
            return path if proto in ("file", "local") else f"{proto}://{path}"

        def atomic_dir(final: str, build) -> bool:
            """Build a phase's output in a temporary folder, move it into place, then mark it
            done (``_SUCCESS``): on object stores a move is a copy, so the marker is the commit."""
            if fs.exists(f"{final}/{DONE}"):
                return False
            if fs.exists(final):
                fs.rm(final, recursive=True)  # a move that was cut short
            tmp = f"{tmp_root}/{uuid.uuid4().hex[:12]}"
            build(U(tmp))
            if not fs.exists(tmp):
                fs.makedirs(tmp, exist_ok=True)
            move_dir(fs, tmp, final)
            fs.touch(f"{final}/{DONE}")
            return True

        done_stages: list = []
        marks: list[tuple[str, str]] = []
        prev_dir = None
        in_schema = None
        for i, seg in enumerate(segments):
            done_stages = done_stages + seg.stream
            schema = phase_schema(done_stages)
            stream_dir = f"{work}/p{i}-stream"
            t0 = time.time()
            if i == 0:
                fs.makedirs(stream_dir, exist_ok=True)
                n = cfg.input.files_per_chunk
                chunks = [files[j:j + n] for j in range(0, len(files), n)]
                for c, chunk in enumerate(chunks):
                    digest = hashlib.sha1("\n".join(f.path for f in chunk).encode()).hexdigest()[:8]
                    final = f"{stream_dir}/chunk-{c:05d}-{digest}"
                    if fs.exists(f"{final}/{DONE}"):
                        say(f"stream: chunk {c + 1}/{len(chunks)} already done, skipped")
                        continue
                    say(f"stream: chunk {c + 1}/{len(chunks)} ({len(chunk)} files) through "
                        f"read -> {' -> '.join(s.name for s in seg.stream) or '(no stages)'}")
                    atomic_dir(final, lambda tmp, chunk=chunk: executor.run_stream(
                        chunk, None, [], seg.stream, schema, None, tmp))
            elif not fs.exists(f"{stream_dir}/{DONE}"):
                say(f"stream: phase {i} through {' -> '.join(s.name for s in seg.stream)}")
                atomic_dir(stream_dir, lambda tmp: executor.run_stream(None, U(prev_dir), [(n, U(m)) for n, m in marks],
                                                                       seg.stream, schema, in_schema, tmp))
                marks = []
            else:
                say(f"stream: phase {i} already done, skipped")
                marks = []
            phase_times[f"p{i}-stream"] = time.time() - t0
            prev_dir, in_schema = stream_dir, schema
            if seg.barrier is not None:
                rs = seg.barrier
                mdir = f"{work}/p{i}-{rs.name}"
                t0 = time.time()
                if atomic_dir(mdir, lambda tmp: executor.run_global(rs, U(stream_dir), tmp)):
                    say(f"global: {rs.name} done in {time.time() - t0:.1f}s")
                else:
                    say(f"global: {rs.name} already done, skipped")
                phase_times[f"p{i}-{rs.name}"] = time.time() - t0
                marks.append((rs.name, mdir))

        staged = f"{work}/final"
        t0 = time.time()
        if atomic_dir(staged, lambda tmp: executor.run_final(U(prev_dir), [(n, U(m)) for n, m in marks], in_schema, tmp)):
            say(f"write: curated data and rejects staged in {time.time() - t0:.1f}s")
        phase_times["write"] = time.time() - t0
        manifest = commit(fs, root, staged, f"{work}/_commit.json", fp,
                          {"name": cfg.name, "tokenmill_version": VERSION, "inputs": [f.path for f in files],
                           "input_problems": [list(p) for p in problems]})
        say(f"committed {len(manifest['files'])} files to {out}")
        t0 = time.time()
        report = build_report(executor, pipeline, fs, root, manifest, problems,
                              wall_seconds=time.time() - t_start, phase_seconds=phase_times)
        report["phase_seconds"]["report"] = round(time.time() - t0, 2)
        report["wall_seconds"] = round(time.time() - t_start, 2)  # everything but Ray's shutdown
        write_report(fs, root, report)
        if not keep_work:
            fs.rm(f"{root}/_work", recursive=True)
        print_summary(report, out)
        return RunResult(out, manifest, report, skipped=False)
    finally:
        executor.stop()
