"""Helpers for the integration tests: build configs in tmp folders, read a run's output back."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.durable.manifest import manifest_files
from tokenmill.engine.io.storage import Storage


def make_pipeline(inputs: list[str], out: Path, batch_size: int = 1000, files_per_chunk: int = 64, **extra):
    data = {
        "name": "test",
        "input": {"paths": [str(p) for p in inputs], "files_per_chunk": files_per_chunk},
        "output": {"path": str(out)},
        "stages": [
            {"type": "langid", "resources": {"batch_size": batch_size}},
            {"type": "heuristics", "resources": {"batch_size": batch_size}},
            {"type": "exact_dedup", "resources": {"batch_size": batch_size}},
        ],
    }
    data.update(extra)
    return build_pipeline(data), data


def write_jsonl_gz(path: Path, rows: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def web_docs(shared_data: Path, copies: int = 1) -> list[dict]:
    """Real web documents; each extra copy is a distinct document (a line appended), not a duplicate."""
    base = [json.loads(item) for item in open(shared_data / "web_dev.jsonl", encoding="utf-8")]
    rows = []
    for c in range(copies):
        for r in base:
            text = r["text"] if c == 0 else r["text"] + f"\nRevision {c} of this page was archived separately."
            rows.append({"id": f"{r['id']}-c{c}", "text": text, "url": r.get("url")})
    return rows


def read_manifest_files(out: Path, prefix: str) -> pa.Table:
    manifest = json.loads((out / "_manifest.json").read_text())
    files = manifest_files(Storage(str(out)), manifest)   # every run's, of a sharded (incremental) manifest
    tables = [pq.read_table(out / f["path"], partitioning=None) for f in files if f["path"].startswith(prefix)]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def output_rows(out: Path) -> tuple[list, list]:
    """(sorted kept rows, sorted reject rows) as comparable tuples."""
    data = read_manifest_files(out, "data/")
    rej = read_manifest_files(out, "rejects/")
    kept = sorted(zip(data["id"].to_pylist(), data["language"].to_pylist(), data["text"].to_pylist(),
                      data["num_tokens"].to_pylist()))
    rejected = sorted(zip(rej["id"].to_pylist(), rej["reject_stage"].to_pylist(), rej["reject_reason"].to_pylist()))
    return kept, rejected


def web_shards(folder: Path, shared_data: Path, shards: int = 4, copies: int = 4) -> list[Path]:
    """Real web documents (``copies`` distinct copies of each) cut into gzipped JSONL shards."""
    rows = web_docs(shared_data, copies=copies)
    n = len(rows) // shards
    return [write_jsonl_gz(folder / f"shard-{i}.jsonl.gz", rows[i * n:(i + 1) * n if i < shards - 1 else None])
            for i in range(shards)]


def kill_run_after_first_chunk(cmd: list[str], out: Path, cwd: Path, env: dict | None = None) -> None:
    """Start a ``tokenmill run`` command and SIGKILL it (the driver and everything it started) once
    its first input chunk is committed; the run must not have finished by then."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list(out.glob("_work/*/p0-stream/chunk-*/_SUCCESS")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert not (out / "_manifest.json").exists()


def run_while_killing(run, victims, settle: float = 0.0) -> list[int]:
    """Call ``run()`` while a thread SIGKILLs one worker process: the first that ``victims()`` (a
    list of psutil processes) offers, ``settle`` seconds after it first offers any. Returns the
    killed pids (empty when no victim showed up before ``run`` ended)."""
    import threading
    import time

    import psutil

    killed: list[int] = []
    stop = threading.Event()

    def killer():
        while not stop.is_set() and not killed:
            if victims():
                time.sleep(settle)
                for proc in victims()[:1]:
                    try:
                        proc.kill()
                        killed.append(proc.pid)
                    except psutil.NoSuchProcess:
                        pass
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        run()
    finally:
        stop.set()
        t.join(10)
    return killed

def report_counts(report: dict) -> tuple:
    return (report["input"], report["output"], sorted(json.dumps(r, sort_keys=True) for r in report["reject_reasons"]),
            sorted(json.dumps(r, sort_keys=True) for r in report["languages"]),
            [(s["stage"], s["docs_in"], s["docs_out"], s["tokens_out"]) for s in report["stages"]],
            sorted(json.dumps(r, sort_keys=True) for r in report["file_errors"]))


def extra_columns(out: Path, column: str) -> dict:
    data = read_manifest_files(out, "data/")
    return dict(zip(data["id"].to_pylist(), data[column].to_pylist())) if column in data.column_names else {}


def run_quality_embed(rows: list[dict], folder: Path, **stage) -> tuple:
    """``rows`` (id, text) through one ``quality_embed`` stage (``stage``: its options) on Ray, annotating
    only; (the run's result, the kept data table)."""
    from tokenmill.engine.run import run_pipeline

    inp, out = folder / "in.jsonl", folder / "out"
    inp.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    result = run_pipeline(build_pipeline({
        "name": "embed", "input": {"paths": [str(inp)]}, "output": {"path": str(out)},
        "stages": [{"type": "quality_embed", "annotate_only": True, **stage}]}), progress=False, engine="ray")
    return result, read_manifest_files(out, "data/")


def minhash_config(inputs: Path, out: Path, **params) -> dict:
    return {"name": "mh", "input": {"paths": [str(inputs)], "files_per_chunk": 2},
            "output": {"path": str(out)},
            "stages": [{"type": "minhash_dedup", "scope": "global", "resources": {"batch_size": 300}, **params}]}


def write_interleaved(rows: list[dict], folder: Path, parts: int) -> Path:
    """``rows`` (id and text only) dealt over ``parts`` JSONL files ``p<i>.jsonl`` in ``folder``."""
    folder.mkdir(exist_ok=True)
    for i in range(parts):
        (folder / f"p{i}.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n"
                                                    for r in rows[i::parts]))
    return folder


def env_with_tests() -> dict:
    """This environment with tests/ on PYTHONPATH, so a ``tokenmill run`` child process finds the
    tests' own stages (``test_lease:Sleeper``)."""
    import os

    tests = str(Path(__file__).resolve().parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}


def start_holding_the_lease(cmd: list[str], out: Path, cwd: Path, env: dict, stdout=None):
    """Start a ``tokenmill run`` command and return it once it holds the output's lease."""
    import subprocess
    import time

    from tokenmill.engine.durable.lease import Lease
    from tokenmill.engine.io.storage import Storage

    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout or subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lease = Lease(Storage(str(out)), str(out / "_lease"))
    deadline = time.time() + 120
    while not lease.holder() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert lease.holder(), proc.stdout.read()[-2000:]
    return proc
