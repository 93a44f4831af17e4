"""The local executor (``engine: local``: one process and its workers, no Ray) gives Ray's output
row for row (the quickstart: test_quickstart.py): bad input, MinHash with hubs spread, quality keep_top, a generating stage
under a token budget, and incremental runs alternating the two engines. Its own behaviour (no Ray
started, one CPU inline, a stage's error failing the run) is checked without Ray."""
from __future__ import annotations

import gzip
import json
import sys
import threading

import pytest
from pipeline_helpers import (
    extra_columns,
    make_pipeline,
    minhash_config,
    output_rows,
    read_manifest_files,
    report_counts,
    web_docs,
    write_interleaved,
    write_jsonl_gz,
)
from pydantic import BaseModel

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.engine.stage import Stage


def _run_both(pipe_for, tmp_path):
    got = {}
    for engine in ("ray", "local"):
        out = tmp_path / engine
        result = run_pipeline(pipe_for(out), progress=False, engine=engine)
        got[engine] = (output_rows(out), result.report, out)
    return got


@pytest.mark.slow   # runs Ray too
def test_bad_input_on_local_equals_ray(tmp_path, shared_data, ray_local):
    rows = web_docs(shared_data)
    good = write_jsonl_gz(tmp_path / "good.jsonl.gz", rows[:150] + rows[:20])
    cut = tmp_path / "cut.jsonl.gz"
    blob = gzip.compress("".join(json.dumps(r) + "\n" for r in rows[150:250]).encode())
    cut.write_bytes(blob[: len(blob) // 2])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine but short"}\nnot json at all\n{"id": 3}\n{"text": "\\ud800 lone"}\n')
    (tmp_path / "empty.jsonl.gz").write_bytes(b"")
    inputs = [good, cut, bad, tmp_path / "empty.jsonl.gz"]
    got = _run_both(lambda out: make_pipeline(inputs, out, batch_size=40, files_per_chunk=2)[0], tmp_path)
    assert got["local"][0] == got["ray"][0]
    assert report_counts(got["local"][1]) == report_counts(got["ray"][1])
    assert sorted(e["kind"] for e in got["local"][1]["file_errors"]) == ["truncated_file", "unreadable_file"]


@pytest.mark.slow   # runs Ray too
def test_minhash_with_hubs_on_local_equals_ray(tmp_path, ray_local):
    from neardup_corpus import build_corpus, write_jsonl

    rows = build_corpus(1500, seed=3)
    write_jsonl(rows, tmp_path / "in", shards=4)
    got = _run_both(lambda out: build_pipeline(minhash_config(tmp_path / "in", out, hub_degree=8)), tmp_path)
    assert got["local"][0] == got["ray"][0]
    removed = [r for r in got["local"][0][1] if r[1] == "minhash_dedup"]
    assert len(removed) > 300
    assert extra_columns(got["local"][2], "dup_cluster_size") == extra_columns(got["ray"][2], "dup_cluster_size")
    # the step's own figures depend on the partitions (cores); the components do not
    steps = [got[e][1]["global_steps"]["minhash_dedup"] for e in ("ray", "local")]
    # (a component of k ends as k - 1 star edges: its removed members and its broken chains)
    assert steps[0]["star_edges"] == steps[1]["star_edges"] == len(removed) + steps[0]["guard"]["broken_chains"]
    assert steps[0]["guard"] == steps[1]["guard"] and steps[0]["source_losses"] == steps[1]["source_losses"]
    assert steps[0]["hubs_spread"] > 10 and steps[1]["hubs_spread"] > 10


@pytest.mark.slow   # runs Ray too
def test_quality_keep_top_on_local_equals_ray(tmp_path, shared_data, ray_local, quality_model):
    rows = [json.loads(line) for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()]
    write_interleaved(rows, tmp_path / "in", 3)

    def cfg(out):
        return build_pipeline({"name": "q", "input": {"paths": [str(tmp_path / "in")], "files_per_chunk": 1},
                               "output": {"path": str(out)},
                               "stages": [{"type": "langid"},
                                          {"type": "quality_fasttext", "model_path": str(quality_model),
                                           "keep_top": 0.3, "resources": {"batch_size": 100}}]})

    got = _run_both(cfg, tmp_path)
    assert got["local"][0] == got["ray"][0]
    assert extra_columns(got["local"][2], "quality_score") == extra_columns(got["ray"][2], "quality_score")
    assert got["local"][1]["global_steps"] == got["ray"][1]["global_steps"]
    assert got["local"][1]["quality_scores"] == got["ray"][1]["quality_scores"]


@pytest.mark.slow   # runs Ray too
def test_rephrase_under_a_budget_on_local_equals_ray(tmp_path, shared_data, ray_local, tiny_model):
    """A generating stage (transformers backend, a tiny LM): the same synthetic documents, cut at
    the same row by the token budget, each in the chunk of the document it came from."""
    rows = [json.loads(line) for line in open(shared_data / "web_dev.jsonl", encoding="utf-8")][:16]
    write_interleaved(rows, tmp_path / "in", 2)
    stage = {"type": "rephrase", "backend": "transformers", "model": str(tiny_model), "max_input_tokens": 256,
             "max_output_tokens": 8, "min_chars": 0, "reject_truncated": False, "budget_tokens": 700,
             "resources": {"batch_size": 32}}

    def cfg(out):
        return build_pipeline({"name": "r", "input": {"paths": [str(tmp_path / "in")], "files_per_chunk": 1},
                               "output": {"path": str(out)}, "stages": [{"type": "langid"}, stage]})

    got = _run_both(cfg, tmp_path)
    syn = {e: read_manifest_files(got[e][2], "synthetic/").sort_by("id") for e in ("ray", "local")}
    assert syn["ray"].num_rows > 20 and syn["local"].to_pylist() == syn["ray"].to_pylist()
    assert got["local"][1]["generated"]["rephrase"]["kept"] == got["ray"][1]["generated"]["rephrase"]["kept"]


@pytest.mark.slow   # runs Ray too
def test_incremental_runs_alternating_local_and_ray_equal_one_run(tmp_path, shared_data, ray_local):
    rows = web_docs(shared_data)[:90]
    copies = [{"id": f"{r['id']}~again", "text": r["text"] + " again"} for r in rows[:10]]
    (tmp_path / "in").mkdir()

    def cfg(out, incremental: bool):
        return build_pipeline({**minhash_config(tmp_path / "in", out), "output": {"path": str(out),
                                                                              "incremental": incremental}})

    for i, (engine, part) in enumerate((("local", rows[:30]), ("ray", rows[30:60] + copies[:5]),
                                        ("local", rows[60:] + copies[5:]))):
        write_jsonl_gz(tmp_path / "in" / f"{i}.jsonl.gz", part)
        run_pipeline(cfg(tmp_path / "inc", True), progress=False, engine=engine)
    run_pipeline(cfg(tmp_path / "once", False), progress=False, engine="ray")
    assert output_rows(tmp_path / "inc") == output_rows(tmp_path / "once")


def test_local_runs_start_no_ray_one_cpu_runs_inline_and_two_give_the_same_output(tmp_path, shared_data):
    """Ray is never imported; with one CPU every stage runs on the calling thread (a breakpoint
    stops there), with two in worker processes; both write the same rows and counts."""
    calls = set()

    def watch(frame, event, arg):   # where a stage's __call__ runs
        if event == "call" and frame.f_code.co_name == "__call__" and "/stages/" in frame.f_code.co_filename:
            calls.add(threading.get_ident())

    write_jsonl_gz(tmp_path / "a.jsonl.gz", web_docs(shared_data)[:60])
    write_jsonl_gz(tmp_path / "b.jsonl.gz", web_docs(shared_data)[40:90])   # 20 exact duplicates of a
    was_loaded = "ray" in sys.modules
    got = {}
    for cpus in (1, 2):
        pipe = make_pipeline([tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"], tmp_path / f"out{cpus}")[0]
        calls.clear()
        sys.settrace(watch)
        try:
            result = run_pipeline(pipe, progress=False, engine="local", num_cpus=cpus)
        finally:
            sys.settrace(None)
        got[cpus] = (output_rows(tmp_path / f"out{cpus}"), report_counts(result.report), set(calls))
    assert got[1][2] == {threading.get_ident()} and got[2][2] == set()
    assert got[1][:2] == got[2][:2] and sum(1 for r in got[1][0][1] if r[1] == "exact_dedup") >= 10
    if not was_loaded:
        assert "ray" not in sys.modules


class NoParams(BaseModel):
    pass


class Explodes(Stage):
    """A user's stage that fails on one document."""

    name = "explodes"
    Params = NoParams

    def __call__(self, batch):
        if any("BOOM" in (t or "") for t in batch["text"].to_pylist()):
            raise RuntimeError("this stage cannot handle BOOM")
        return batch


@pytest.mark.parametrize("cpus", [1, 2])
def test_a_stage_error_fails_the_run_and_commits_nothing(tmp_path, cpus):
    write_jsonl_gz(tmp_path / "a.jsonl.gz", [{"id": "1", "text": "fine"}, {"id": "2", "text": "BOOM here"}])
    pipe = build_pipeline({"name": "x", "input": {"paths": [str(tmp_path / "a.jsonl.gz")]},
                           "output": {"path": str(tmp_path / "out")},
                           "stages": [{"type": "test_local_executor:Explodes"}]})
    with pytest.raises(RuntimeError, match="cannot handle BOOM"):
        run_pipeline(pipe, progress=False, engine="local", num_cpus=cpus)
    assert not (tmp_path / "out" / "_manifest.json").exists() and not (tmp_path / "out" / "data").exists()


def _slow_touch(item: dict, env=None) -> str:
    import time
    from pathlib import Path
    time.sleep(item["sleep"])
    Path(item["path"]).write_text("late")
    return item["path"]


def test_a_reader_that_stops_early_leaves_no_task_running(tmp_path):
    """A generation budget stops reading the stream early; the tasks still running in the worker
    processes finish before the stream returns (the run then removes its work folder: a task still
    writing there made that removal fail), and the tasks not started never start."""
    from tokenmill.engine.executors.local.executor import LocalExecutor
    (tmp_path / "in").mkdir()
    write_jsonl_gz(tmp_path / "in" / "a.jsonl.gz", [{"id": "1", "text": "fine"}])
    ex = LocalExecutor(make_pipeline([tmp_path / "in" / "a.jsonl.gz"], tmp_path / "out")[0], num_cpus=2)
    ex.start()
    try:
        items = [{"sleep": 0.0, "path": str(tmp_path / "first")}, {"sleep": 1.5, "path": str(tmp_path / "slow")}]
        items += [{"sleep": 0.0, "path": str(tmp_path / f"later-{i}")} for i in range(20)]
        stream = ex._in_processes(_slow_touch, items)
        assert next(stream) == str(tmp_path / "first")
        stream.close()
        written = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
        assert "slow" in written, written            # the running task finished before close() returned
        assert len(written) < len(items)             # and the queued ones were cancelled
    finally:
        ex.stop()
