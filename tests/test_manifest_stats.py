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
    assert any(c["op"] == "mv" and c["path"].startswith(f"{out}/_manifest.json") for c in driver)   # the commit
    # an object store (faulty:// stands for one): the curated files were written under their final
    # names by the tasks, never moved (a copy of every byte there)
    assert not any(c["op"] == "mv" and ("/data/" in c["path"] or "/rejects/" in c["path"]) for c in trace)
    assert {f["path"] for f in files} <= {c["path"][len(str(out)) + 1:] for c in trace if c["op"] == "open_write"}
    reads = [c for c in driver if c["op"] == "open_read" and c["path"].endswith(".parquet")
             and ("/final/" in c["path"] or c["path"].startswith((f"{out}/data/", f"{out}/rejects/")))]
    assert reads == []


def test_a_run_killed_after_its_manifest_counts_its_files_once_when_it_is_finished(tmp_path, shared_data, monkeypatch):
    """The ledger record of run 2 cannot be written (the run stops after its sharded manifest);
    the next run finishes run 2: the index lists each part once and counts each file once."""
    from tokenmill.engine.durable.manifest import manifest_files, part_names
    from tokenmill.engine.io.storage import Storage

    (tmp_path / "in").mkdir()
    shards = web_shards(tmp_path / "in", shared_data, shards=2, copies=1)
    landing, out = tmp_path / "landing", tmp_path / "out"
    landing.mkdir()
    schedule = tmp_path / "faults.json"
    schedule.write_text(json.dumps({"inner": "file", "state": str(tmp_path / "faults-state"), "rules": [
        {"op": "mv", "match": "*_ledger/run-000002.json*", "kind": "permanent", "times": 1}]}))
    monkeypatch.setenv(ENV, str(schedule))

    def run():
        cfg = _config([landing], f"faulty://{out}")
        cfg["output"]["incremental"] = True
        return run_pipeline(build_pipeline(cfg), progress=False)

    for shard in shards:
        (landing / shard.name).write_bytes(shard.read_bytes())
        if shard is shards[0]:
            run()
    try:
        run()
        raise AssertionError("the ledger record of run 2 was to fail")
    except PermissionError:
        pass
    killed = json.loads((out / "_manifest.json").read_text())
    assert killed["part_runs"] == [[1, 2]]   # it got as far as its index
    result = run()
    assert result.report["incremental"]["run"] == 2 and result.report["incremental"]["resumed"]
    manifest = json.loads((out / "_manifest.json").read_text())
    every = manifest_files(Storage(str(out)), manifest)
    assert manifest["part_runs"] == [[1, 2]]
    assert part_names(manifest) == ["_manifest/run-000001.json", "_manifest/run-000002.json"]
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet") if "_index" not in str(p))
    assert sorted(f["path"] for f in every) == on_disk
    for folder in ("data", "rejects"):
        assert manifest["file_counts"][folder] == sum(1 for f in every if f["path"].startswith(f"{folder}/"))
    assert result.report["files"] == {k: manifest["file_counts"].get(k, 0) for k in result.report["files"]}


def test_the_index_of_a_sharded_manifest_names_its_parts_by_ranges():
    """The index does not grow with the runs: ranges of run numbers, also read from an index of
    the first kind (every part by name)."""
    from tokenmill.engine.durable.manifest import is_sharded, part_names, part_runs, with_run

    runs: list[list[int]] = []
    for n in [*range(1, 1001), 1000, 1003]:
        runs = with_run(runs, n)
    assert runs == [[1, 1000], [1003, 1003]]
    assert part_names({"part_runs": runs})[-2:] == ["_manifest/run-001000.json", "_manifest/run-001003.json"]
    old = {"parts": ["_manifest/run-000001.json", "_manifest/run-000002.json", "_manifest/run-000004.json"]}
    assert is_sharded(old) and part_runs(old) == [[1, 2], [4, 4]] and part_names(old) == old["parts"]
    assert not is_sharded({"files": []})
