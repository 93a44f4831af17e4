"""Storage that misbehaves, through the fault-injecting filesystem (engine/io/faults.py, a
``faulty://`` URL over real local files): transient faults are retried and change nothing,
permanent ones lose only what they must, and a commit survives the failure of any single storage
call. Every run here is a real local-executor run on real files; only the store's answers are
made to fail."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from pipeline_helpers import output_rows, write_jsonl_gz

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.durable.lease import LeaseLost
from tokenmill.engine.io.faults import ENV
from tokenmill.engine.run import run_pipeline


@pytest.fixture
def faults(tmp_path, monkeypatch):
    """``faults(rules, trace=False)`` puts a schedule in force (for this process and the workers
    it starts) and returns its state folder; no rules: the store behaves."""
    counter = iter(range(1000))

    def use(rules: list[dict], trace: bool = False) -> Path:
        n = next(counter)
        state = tmp_path / f"faults-{n}"
        schedule = tmp_path / f"faults-{n}.json"
        schedule.write_text(json.dumps({"inner": "file", "state": str(state), "rules": rules, "trace": trace}))
        monkeypatch.setenv(ENV, str(schedule))
        return state

    use([])
    return use


def _inputs(tmp_path: Path, files: int = 3) -> list[str]:
    (tmp_path / "in").mkdir(exist_ok=True)
    return [str(write_jsonl_gz(tmp_path / "in" / f"s{i}.jsonl.gz",
                               [{"id": f"{i}-{j}", "text": f"Document {j} of shard {i} says something. " * 40}
                                for j in range(30)] + [{"id": f"{i}-short", "text": "x"}]))
            for i in range(files)]


def _config(inputs: list[str], out: Path, min_chars: int = 20, **extra) -> dict:
    return {"name": "faults", "input": {"paths": [f"faulty://{p}" for p in inputs], "files_per_chunk": 1},
            "output": {"path": f"faulty://{out}"}, "engine": "local", "local": {"num_cpus": 1},
            "io": {"retries": 4, "backoff_seconds": 0.001},
            "stages": [{"type": "length_filter", "min_chars": min_chars}, {"type": "exact_dedup"}], **extra}


def _run(cfg: dict):
    return run_pipeline(build_pipeline(cfg), progress=False)


def _log(state: Path, name: str = "log.jsonl") -> list[dict]:
    path = state / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _manifest_true(out: Path) -> bool:
    """Every file the manifest (if any) lists is there with its checksum: what a reader relies on."""
    path = out / "_manifest.json"
    if not path.exists():
        return True
    manifest = json.loads(path.read_text())
    return all((out / f["path"]).exists() and hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
               for f in manifest["files"])


def test_transient_faults_on_reads_and_the_store_change_nothing(tmp_path, faults):
    """30% of the input files fail their first open and a read midway; the output store fails
    listings, moves and writes now and then. Output equals a clean run's; no file_errors."""
    inputs = _inputs(tmp_path, files=6)
    clean = _run(_config(inputs, tmp_path / "clean"))
    out = tmp_path / "out"
    state = faults([
        {"op": "open_read", "match": f"{tmp_path}/in/*", "kind": "transient", "per_path": True, "fraction": 0.3, "seed": 1},
        {"op": "read", "match": f"{tmp_path}/in/*", "after_bytes": 2048, "kind": "transient", "per_path": True},
        {"op": "ls", "match": f"{out}/*", "kind": "transient", "skip": 3, "times": 3},
        {"op": "mv", "match": f"{out}/*", "kind": "transient", "skip": 4, "times": 2},
        {"op": "open_write", "match": f"{out}/*", "kind": "transient", "skip": 2, "times": 2},
    ])
    faulty = _run(_config(inputs, out))
    injected = _log(state)
    assert sum(e["op"] == "read" for e in injected) == 6 and sum(e["op"] == "open_read" for e in injected) == 2
    assert sum(e["op"] in ("mv", "open_write") for e in injected) == 4
    assert faulty.report["file_errors"] == [] == clean.report["file_errors"]
    assert output_rows(out) == output_rows(tmp_path / "clean")


def test_a_permanent_read_failure_is_one_file_error_and_nothing_else_is_lost(tmp_path, faults):
    inputs = _inputs(tmp_path)
    out = tmp_path / "out"
    faults([{"op": "open_read", "match": inputs[1], "kind": "permanent", "times": 100}])
    report = _run(_config(inputs, out)).report
    assert [(e["path"].rsplit("/", 1)[-1], e["kind"]) for e in report["file_errors"]] == [("s1.jsonl.gz", "unreadable_file")]
    faults([])
    clean = _run(_config([inputs[0], inputs[2]], tmp_path / "clean"))
    assert output_rows(out)[0] == output_rows(tmp_path / "clean")[0]
    assert clean.report["output"] == report["output"]


def test_a_read_that_keeps_failing_transiently_fails_the_run_and_a_rerun_takes_the_file(tmp_path, faults):
    """Transient is not damage: when the retries run out the run fails (nothing committed, the file
    named), never 'unreadable_file'; the next run reads the whole file."""
    inputs = _inputs(tmp_path)
    out = tmp_path / "out"
    faults([{"op": "read", "match": inputs[2], "after_bytes": 1024, "kind": "transient", "times": 1000}])
    with pytest.raises(OSError, match="injected transient fault"):
        _run(_config(inputs, out))
    assert not (out / "_manifest.json").exists()
    faults([])
    report = _run(_config(inputs, out)).report
    assert report["file_errors"] == []
    assert output_rows(out)[0]
    assert report["output"] == _run(_config(inputs, tmp_path / "clean")).report["output"]


def _outside_calls(trace: list[dict], out: Path) -> list[dict]:
    return [c for c in trace if c["path"].startswith(f"{out}/")]


@pytest.mark.slow   # about 40 runs (25 s)
def test_a_commit_survives_the_failure_of_each_storage_call_in_turn(tmp_path, faults):
    """An output committed by config A, then config B's run: each storage call of B's commit (from
    reading its plan to removing A's files) fails in turn, permanently. After each failure the
    manifest in place (A's or B's) is true to the disk; a re-run then ends with exactly a clean
    run's manifest and files, and nothing of A left."""
    inputs = _inputs(tmp_path)
    base = tmp_path / "base"
    _run(_config(inputs, base, min_chars=20))
    b_clean = tmp_path / "b-clean"
    shutil.copytree(base, b_clean)
    b_cfg = lambda out: _config(inputs, out, min_chars=30)   # noqa: E731
    want = _run(b_cfg(b_clean)).manifest
    traced = tmp_path / "traced"
    shutil.copytree(base, traced)
    state = faults([], trace=True)
    _run(b_cfg(traced))
    calls = _outside_calls(_log(state, "trace.jsonl"), traced)
    start = next(i for i, c in enumerate(calls) if c["path"].endswith("/_commit.json"))
    end = next(i for i, c in enumerate(calls) if "/_manifest.json.tmp" in c["path"] and c["op"] == "mv")
    window = range(start, min(len(calls), end + 1 + len(want["superseded"]) * 2 + 2))
    assert len(window) > 10
    failed_ops = set()
    for k in window:
        out = tmp_path / f"out-{k}"
        shutil.copytree(base, out)
        state = faults([{"op": "any", "match": f"{out}/*", "skip": k, "times": 1, "kind": "permanent"}])
        try:
            _run(b_cfg(out))
        except PermissionError:
            pass
        failed_ops.update(e["op"] for e in _log(state))
        assert _manifest_true(out), k
        faults([])
        got = _run(b_cfg(out)).manifest
        assert [(f["path"], f["sha256"], f["rows"]) for f in got["files"]] == \
            [(f["path"], f["sha256"], f["rows"]) for f in want["files"]], k
        on_disk = {str(p.relative_to(out)) for p in out.rglob("*.parquet") if "_work" not in p.parts}
        assert on_disk == {f["path"] for f in want["files"]}, k
        shutil.rmtree(out)
    assert {"mv", "exists", "open_write", "rm"} <= failed_ops, failed_ops


def test_lease_renewal_failing_transiently_still_commits(tmp_path, faults):
    """The lease's store fails its renewals twice (a timeout each): renewal tries again sooner, the
    lease holds, and the run commits."""
    inputs = _inputs(tmp_path)
    out = tmp_path / "out"
    cfg = _config(inputs, out)
    cfg["output"]["lease_seconds"] = 10
    cfg["stages"].insert(0, {"type": "test_lease:Sleeper", "seconds": 1.6})   # about 5 s of work
    state = faults([{"op": "open_write", "match": f"{out}/_lease/*", "kind": "transient", "skip": 1, "times": 2}])
    result = _run(cfg)
    assert json.loads((out / "_manifest.json").read_text())["complete"] and result.report["output"]["docs"] > 0
    assert [e["op"] for e in _log(state)] == ["open_write", "open_write"]


@pytest.mark.slow   # waits out a lease's time to live (10 s)
def test_a_lease_that_cannot_be_renewed_before_it_expires_stops_the_run(tmp_path, faults):
    inputs = _inputs(tmp_path, files=8)
    out = tmp_path / "out"
    cfg = _config(inputs, out)
    cfg["output"]["lease_seconds"] = 10
    cfg["stages"].insert(0, {"type": "test_lease:Sleeper", "seconds": 2.0})   # 16 s of work
    faults([{"op": "open_write", "match": f"{out}/_lease/*", "kind": "permanent", "skip": 1, "times": 1000}])
    with pytest.raises(LeaseLost, match="not renewed before it expired"):
        _run(cfg)
    assert not (out / "_manifest.json").exists() and not (out / "data").exists()


def test_the_cli_names_the_file_and_exits_1_when_a_transient_fault_persists(tmp_path, faults):
    import subprocess
    import sys

    import yaml
    from conftest import REPO

    inputs = _inputs(tmp_path)
    out = tmp_path / "out"
    faults([{"op": "open_read", "match": inputs[0], "kind": "transient", "times": 1000}])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_config(inputs, out)))
    done = subprocess.run([sys.executable, "-m", "tokenmill.engine.cli", "run", str(cfg), "--progress", "off"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "did not go away after the retries" in done.stderr and inputs[0] in done.stderr
    assert "Traceback" not in done.stderr and not (out / "_manifest.json").exists()


def test_a_read_cut_short_in_transit_is_read_again_not_taken_for_a_cut_file(tmp_path, faults):
    """The store ends a gzip body early without an error (once per file): the decoder sees a cut
    file, a second read finds the damage gone, so the task is retried instead of the file being
    reported 'truncated_file' with its last records lost. A file that is really cut stays one."""
    inputs = _inputs(tmp_path)
    clean = _run(_config(inputs, tmp_path / "clean")).report
    sizes = [Path(p).stat().st_size for p in inputs]
    assert min(sizes) > 300
    state = faults([{"op": "read", "match": f"{tmp_path}/in/*", "after_bytes": 300, "kind": "short", "per_path": True}])
    report = _run(_config(inputs, tmp_path / "out")).report
    assert len(_log(state)) == 3 and report["file_errors"] == []
    assert output_rows(tmp_path / "out") == output_rows(tmp_path / "clean") and report["output"] == clean["output"]
    cut = Path(inputs[0])
    cut.write_bytes(cut.read_bytes()[:300])
    faults([])
    report = _run(_config(inputs, tmp_path / "cut")).report
    assert [e["kind"] for e in report["file_errors"]] == ["truncated_file"]


@pytest.mark.parametrize("then", ["same config", "another config", "incremental"])
def test_a_run_killed_while_writing_in_place_is_finished_or_cleared_by_the_next(tmp_path, faults, then):
    """On an object store the curated files are written under their final names (no move: a copy
    there). A run stopped by a permanent fault after its first curated file leaves files no
    manifest lists; the next run of the same config finishes it, another config's run removes them
    with its commit (they carry the killed run's prefix, named in its work folder), and neither is
    refused as foreign; an incremental run's killed attempt is finished the same way."""
    inputs = _inputs(tmp_path)
    incremental = then == "incremental"
    cfg = lambda out, min_chars=20: _config(inputs, out, min_chars, output={  # noqa: E731
        "path": f"faulty://{out}", "incremental": incremental})
    clean = tmp_path / "clean"
    second = 30 if then == "another config" else 20
    want = _run(cfg(clean, second)).manifest
    out = tmp_path / "out"
    faults([{"op": "open_write", "match": f"{out}/data/*", "skip": 1, "times": 1, "kind": "permanent"}])
    with pytest.raises(PermissionError):
        _run(cfg(out))
    left = {str(p.relative_to(out)) for p in out.rglob("*.parquet") if "_work" not in p.parts}
    assert left and not (out / "_manifest.json").exists()   # written in place, listed by no manifest
    assert list(out.glob("_work/*/_in_place.json"))
    faults([])
    got = _run(cfg(out, second)).manifest
    assert [(f["path"], f["sha256"]) for f in got["files"]] == [(f["path"], f["sha256"]) for f in want["files"]]
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.parquet") if not {"_work", "_index"} & set(p.parts)}
    assert on_disk == {f["path"] for f in want["files"]}   # the killed run's files: rewritten or removed
    assert _manifest_true(out)
