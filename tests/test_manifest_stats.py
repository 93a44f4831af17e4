"""The manifest is built from what the writers counted while writing: its rows, sizes and checksums
equal a recount of the files and the run's write-time counts, and the driver's commit opens no
output file for reading (traced through the ``faulty://`` filesystem, which logs every call)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
from pipeline_helpers import web_shards

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.io.faults import ENV
from tokenmill.engine.run import run_pipeline


def _config(inputs: list[Path], out: str) -> dict:
    return {"name": "counted", "input": {"paths": [str(p) for p in inputs], "files_per_chunk": 1},
            "output": {"path": out, "max_rows_per_file": 40}, "engine": "local", "local": {"num_cpus": 2},
            "tokenizer": {"kind": "none"},
            "stages": [{"type": "langid"}, {"type": "heuristics"}, {"type": "exact_dedup"}]}


def test_manifest_entries_equal_a_recount_and_the_driver_reads_no_output_file(tmp_path, shared_data, monkeypatch):
    (tmp_path / "in").mkdir()
    shards = web_shards(tmp_path / "in", shared_data, shards=3, copies=2)
    out = tmp_path / "out"
    state = tmp_path / "faults-state"
    schedule = tmp_path / "faults.json"
    schedule.write_text(json.dumps({"inner": "file", "state": str(state), "rules": [], "trace": True}))
    monkeypatch.setenv(ENV, str(schedule))
    result = run_pipeline(build_pipeline(_config(shards, f"faulty://{out}")), progress=False)

    files = result.manifest["files"]
    assert len(files) >= 4 and any(f["path"].startswith("rejects/") for f in files)
    for f in files:
        path = out / f["path"]
        assert pq.ParquetFile(path).metadata.num_rows == f["rows"]
        assert path.stat().st_size == f["bytes"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
    kept = sum(f["rows"] for f in files if f["path"].startswith("data/"))
    rejected = sum(f["rows"] for f in files if f["path"].startswith("rejects/"))
    stats = result.manifest["counts"]
    assert kept == sum(row[1] for row in stats["kept"]) == result.report["output"]["docs"]
    assert rejected == sum(row[3] for row in stats["rejected"]) == \
        result.report["input"]["docs"] - result.report["output"]["docs"]

    trace = [json.loads(line) for line in (state / "trace.jsonl").read_text().splitlines()]
    driver = [c for c in trace if c["pid"] == os.getpid()]
    assert any(c["op"] == "mv" and "/data/" in c["path"] for c in driver)   # the trace sees the commit
    reads = [c for c in driver if c["op"] == "open_read" and c["path"].endswith(".parquet")
             and ("/final/" in c["path"] or c["path"].startswith((f"{out}/data/", f"{out}/rejects/")))]
    assert reads == []
