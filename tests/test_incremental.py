"""Incremental runs (output.incremental): cron-style runs over growing input add up to one run over
all of it, no input file is processed twice (also after a killed run), and two runs on one output
never work at the same time."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO
from neardup_corpus import build_corpus, write_jsonl
from pipeline_helpers import env_with_tests, kill_run_after_first_chunk, read_manifest_files, start_holding_the_lease

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.durable.lease import Lease
from tokenmill.engine.durable.ledger import Ledger
from tokenmill.engine.durable.manifest import manifest_files, part_names
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.run import run_pipeline


@pytest.fixture
def engine() -> str:
    """The local executor only: the Ray runs of these algorithms are the parity tests (local,
    Spark) and the child-process tests below."""
    return "local"


SHARDS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[dict], list[Path]]:
    """Originals, then their near-duplicate and exact copies, over six shards named in arrival
    order: as on the web, a copy arrives with its original or after it, so most copies meet their
    original only through an earlier run's index. (A document arriving later that links two
    clusters an earlier run kept apart cannot retract what that run wrote: README, Incremental.)"""
    rows = build_corpus(240, seed=3)
    rows = sorted(rows, key=lambda r: r["mutation"] != "original")   # stable: corpus order otherwise
    folder = tmp_path_factory.mktemp("incr-corpus")
    return rows, write_jsonl(rows, folder / "shard.jsonl", shards=SHARDS)


def _config(inputs: list[Path], out: Path, guard: float = 0.0, **output) -> dict:
    """``guard`` 0: plain components, whose cron runs equal one run exactly (the guard's hops
    through documents an earlier run removed are not in any index: see the test with the guard)."""
    return {"name": "incr", "input": {"paths": [str(p) for p in inputs], "files_per_chunk": 2},
            "output": {"path": str(out), **output},
            "stages": [{"type": "langid"}, {"type": "exact_dedup"},
                       {"type": "minhash_dedup", "threshold": 0.7, "scope": "global", "guard": guard}]}


def _kept_and_rejected(out: Path) -> tuple[set, dict]:
    data = read_manifest_files(out, "data/")
    rej = read_manifest_files(out, "rejects/")
    decisions = {i: (s, r.split(":", 1)[0] if r else r) for i, s, r in zip(
        rej["id"].to_pylist(), rej["reject_stage"].to_pylist(), rej["reject_reason"].to_pylist())}
    return set(data["id"].to_pylist()), decisions


def test_three_cron_runs_equal_one_run_over_all_input(engine, tmp_path, corpus):
    rows, shards = corpus
    single = tmp_path / "single"
    run_pipeline(build_pipeline(_config(shards, single)), progress=False, engine=engine)
    want_kept, want_rejected = _kept_and_rejected(single)
    assert want_rejected, "the corpus must hold duplicates for this test to mean anything"

    inc = tmp_path / "inc"
    seen_input = tmp_path / "landing"
    seen_input.mkdir()
    reports = []
    for upto in (2, 4, 6):   # each night two more shards have landed
        for s in shards[:upto]:
            if not (seen_input / s.name).exists():
                (seen_input / s.name).write_bytes(s.read_bytes())
        result = run_pipeline(build_pipeline(_config([seen_input], inc, incremental=True)), progress=False, engine=engine)
        reports.append(result.report)
        assert result.report["incremental"]["run"] == len(reports)
        assert result.report["incremental"]["input_files"] == 2
    got_kept, got_rejected = _kept_and_rejected(inc)
    assert got_kept == want_kept
    assert got_rejected == want_rejected
    # each file processed once, by one run; earlier runs' output files untouched and still listed
    runs = Ledger(Storage(str(inc))).records()
    taken = [f["path"] for r in runs for f in r["files"]]
    assert len(taken) == len(set(taken)) == SHARDS
    manifest = json.loads((inc / "_manifest.json").read_text())
    assert manifest["part_runs"] == [[1, 3]]   # sharded: a part per run
    assert part_names(manifest) == [f"_manifest/run-{n:06d}.json" for n in (1, 2, 3)]
    assert {f["path"] for f in manifest["files"]} == {f["path"] for f in runs[-1]["added"]}   # the last run's
    every = manifest_files(Storage(str(inc)), manifest)
    assert {f["path"] for r in runs for f in r["added"]} == {f["path"] for f in every}
    assert manifest["file_counts"]["data"] == sum(1 for f in every if f["path"].startswith("data/"))
    assert {p.relative_to(inc).as_posix() for p in inc.rglob("*.parquet") if "_index" not in str(p)} == \
        {f["path"] for f in every}
    # running totals: every input document once
    totals = reports[-1]["incremental"]["totals"]
    assert totals["input"]["docs"] == len(rows)
    assert totals["output"]["docs"] == len(want_kept)
    assert [r["input_files"] for r in reports[-1]["incremental"]["runs"]] == [2, 2, 2]
    # the minhash and exact indexes of the earlier runs were read
    assert reports[-1]["global_steps"]["minhash_dedup"]["indexed_runs"] == 2
    assert reports[-1]["global_steps"]["exact_dedup"]["indexed_runs"] == 2
    # a run with nothing new does nothing
    again = run_pipeline(build_pipeline(_config([seen_input], inc, incremental=True)), progress=False, engine=engine)
    assert again.skipped and len(Ledger(Storage(str(inc))).records()) == 3


def test_three_cron_runs_with_the_guard_keep_at_most_a_few_more(engine, tmp_path, corpus):
    """With the guard (default 0.7), a copy in a later run is checked against the indexed document
    it links to (its sketch is in the index), so cron runs decide as one run would, except where
    one run's guard passed a copy through another copy that an earlier cron run removed (not
    indexed): such a copy is kept instead. Never the other way round, and only a few."""
    rows, shards = corpus
    single = tmp_path / "single"
    run_pipeline(build_pipeline(_config(shards, single, guard=0.7)), progress=False, engine=engine)
    want_kept, want_rejected = _kept_and_rejected(single)
    inc = tmp_path / "inc"
    for upto in (2, 4, 6):
        run_pipeline(build_pipeline(_config(shards[:upto], inc, guard=0.7, incremental=True)), progress=False,
                     engine=engine)
    got_kept, got_rejected = _kept_and_rejected(inc)
    assert want_kept <= got_kept and len(got_kept - want_kept) <= 0.02 * len(rows)
    assert {k: v for k, v in got_rejected.items()} == {k: v for k, v in want_rejected.items() if k not in got_kept}
    plain = tmp_path / "plain"
    run_pipeline(build_pipeline(_config(shards, plain)), progress=False, engine=engine)
    assert len(_kept_and_rejected(plain)[0]) < len(want_kept)     # the guard did keep some here


def _slow_local_run(cfg: Path, config: dict, cpus: int) -> tuple[list[str], dict]:
    """A ``tokenmill run`` command on the local executor whose config first sleeps 1 s a batch
    (``test_lease.Sleeper``): slow enough to be killed or overlapped at a chosen point, no Ray
    (the child-process kill on Ray is test_fault_tolerance's); and the environment it needs."""
    config = {**config, "stages": [{"type": "test_lease:Sleeper", "seconds": 1.0}, *config["stages"]]}
    cfg.write_text(yaml.safe_dump(config))
    env = env_with_tests()
    return [sys.executable, "-m", "tokenmill.engine.cli", "run", str(cfg), "--engine", "local", "--num-cpus", str(cpus),
            "--progress", "log"], env


@pytest.mark.slow   # tokenmill run child processes, killed
def test_killed_run_is_picked_up_without_taking_a_file_twice(tmp_path, corpus):
    _, shards = corpus
    landing = tmp_path / "landing"
    landing.mkdir()
    for s in shards[:4]:
        (landing / s.name).write_bytes(s.read_bytes())
    out = tmp_path / "out"
    cmd, env = _slow_local_run(tmp_path / "incr.yaml", _config([landing], out, incremental=True), cpus=2)
    kill_run_after_first_chunk(cmd, out, REPO, env=env)
    pending = json.loads((out / "_ledger" / "pending.json").read_text())
    assert pending["run"] == 1 and len(pending["files"]) == 4
    for s in shards[4:]:   # more input lands before the next run
        (landing / s.name).write_bytes(s.read_bytes())
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the files of run 1, which did not finish" in done.stdout + done.stderr
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = Ledger(Storage(str(out))).records()
    assert [len(r["files"]) for r in runs] == [4, 2]
    taken = [f["path"] for r in runs for f in r["files"]]
    assert len(set(taken)) == SHARDS == len(taken)
    ids = read_manifest_files(out, "data/")["id"].to_pylist() + read_manifest_files(out, "rejects/")["id"].to_pylist()
    assert len(ids) == len(set(ids))   # no document written twice


@pytest.mark.slow   # tokenmill run child processes
def test_two_runs_at_once_one_works_the_other_exits(tmp_path, corpus):
    _, shards = corpus
    out = tmp_path / "out"
    cmd, env = _slow_local_run(tmp_path / "incr.yaml", _config(shards[:2], out, incremental=True), cpus=1)
    first = start_holding_the_lease(cmd, out, REPO, env)
    lease = Lease(Storage(str(out)), str(out / "_lease"))
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 75
    assert "another run holds" in second.stderr and "did nothing" in second.stderr
    # a third one waits for the lease (--lock-wait), then finds nothing new and does nothing
    third = subprocess.Popen(cmd + ["--lock-wait", "600"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    assert first.wait(timeout=600) == 0, first.stdout.read()[-3000:]
    said = third.communicate(timeout=300)[0]
    assert third.returncode == 0, said[-3000:]
    assert "waiting up to 600 s" in said and "no new input files" in said
    assert not lease.holder()
    runs = Ledger(Storage(str(out))).records()
    assert len(runs) == 1 and len(runs[0]["files"]) == 2


def test_incremental_output_keeps_earlier_files_byte_for_byte(engine, tmp_path, corpus):
    _, shards = corpus
    landing = tmp_path / "landing"
    landing.mkdir()
    out = tmp_path / "out"
    (landing / shards[0].name).write_bytes(shards[0].read_bytes())
    run_pipeline(build_pipeline(_config([landing], out, incremental=True)), progress=False, engine=engine)
    before = {p: p.read_bytes() for p in out.glob("data/language=*/*.parquet")}
    assert before and all(p.name.startswith("part-r000001-") for p in before)
    assert run_pipeline(build_pipeline(_config([landing], out, incremental=True)), progress=False, engine=engine).skipped
    (landing / shards[1].name).write_bytes(shards[1].read_bytes())   # lands after a night with nothing new
    second = run_pipeline(build_pipeline(_config([landing], out, incremental=True)), progress=False, engine=engine)
    assert second.report["incremental"]["run"] == 2 and second.report["incremental"]["input_files"] == 1
    for p, content in before.items():
        assert p.read_bytes() == content
    assert any(p.name.startswith("part-r000002-") for p in out.glob("data/language=*/*.parquet"))
    report = json.loads((out / "report.json").read_text())
    assert sum(pq.read_metadata(p).num_rows for p in out.glob("data/language=*/*.parquet")) == \
        sum(r["output_docs"] for r in report["incremental"]["runs"]) == report["incremental"]["totals"]["output"]["docs"]
    page = (out / "report.html").read_text()
    assert "Incremental: run 2" in page and f"{report['incremental']['totals']['input']['docs']:,} documents" in page



@pytest.mark.slow   # tokenmill run child processes on Ray, killed
def test_run_killed_after_writing_its_index_does_not_reject_its_own_documents(tmp_path, corpus):
    """Killed once its exact-dedup index is committed, then resumed with a config whose fingerprint
    differs (max_rows_per_file): the leftover index is the run's own, not an earlier run's."""
    _, shards = corpus
    landing = tmp_path / "landing"
    landing.mkdir()
    for s in shards[:3]:   # originals and some of their copies
        (landing / s.name).write_bytes(s.read_bytes())
    out = tmp_path / "out"
    cfg = tmp_path / "incr.yaml"
    cfg.write_text(yaml.safe_dump(_config([landing], out, incremental=True)))
    cmd = [sys.executable, "-m", "tokenmill.engine.cli", "run", str(cfg), "--num-cpus", "2", "--progress", "log"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(out.glob("_index/exact_dedup/run=*/_SUCCESS")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before its index was written"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert not (out / "_ledger" / "run-000001.json").exists()
    cfg.write_text(yaml.safe_dump(_config([landing], out, incremental=True, max_rows_per_file=1000)))
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    kept = set(read_manifest_files(out, "data/")["id"].to_pylist())
    rej = read_manifest_files(out, "rejects/")
    targets = [r.split(":", 1)[1] for r in rej["reject_reason"].to_pylist() if r and "duplicate_of:" in r]
    assert targets and set(targets) <= kept   # every duplicate points at a kept document, none at itself
    assert len(list(out.glob("_index/exact_dedup/run=*/_SUCCESS"))) == 1


def test_incremental_refuses_an_output_written_by_a_plain_run(engine, tmp_path, corpus):
    from tokenmill.engine.durable.ownership import ForeignOutput

    _, shards = corpus
    out = tmp_path / "out"
    out.mkdir()
    (out / "_manifest.json").write_text(json.dumps({"complete": True, "files": [], "fingerprint": "x"}))
    with pytest.raises(ForeignOutput, match="not incremental"):
        run_pipeline(build_pipeline(_config(shards[:1], out, incremental=True)), progress=False, engine=engine)
    assert not Lease(Storage(str(out)), str(out / "_lease")).holder()   # released
    assert not (out / "_ledger").exists()                                 # nothing written


