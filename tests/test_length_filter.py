"""The README's example stage: its rule on a batch, and a whole run on the local executor (no
executor code was read or written to add it)."""
from __future__ import annotations

import pyarrow as pa
from pipeline_helpers import output_rows, web_docs, write_jsonl_gz

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.length_filter import LengthFilter, LengthParams


def test_length_filter_rejects_by_characters():
    batch = pa.table({"num_chars": pa.array([3, 50, 5000], pa.int64())})
    out = LengthFilter(LengthParams(min_chars=10, max_chars=1000))(batch)
    assert out["reject_reason"].to_pylist() == ["too_short", None, "too_long"]
    assert out["reject_stage"].to_pylist() == ["length_filter", None, "length_filter"]


def test_length_filter_in_a_run(tmp_path, shared_data):
    rows = web_docs(shared_data)[:40]
    write_jsonl_gz(tmp_path / "in.jsonl.gz", rows)
    pipe = build_pipeline({"name": "len", "input": {"paths": [str(tmp_path / "in.jsonl.gz")]},
                           "output": {"path": str(tmp_path / "out")},
                           "stages": [{"type": "length_filter", "min_chars": 2000}]})
    report = run_pipeline(pipe, progress=False, engine="local", num_cpus=1).report
    kept, rejected = output_rows(tmp_path / "out")
    short = {r["id"] for r in rows if len(r["text"]) < 2000}
    assert {r[0] for r in rejected} == short and 0 < len(short) < len(rows)
    assert {r[0] for r in kept} == {r["id"] for r in rows} - short
    assert report["stages"][-1] == {**report["stages"][-1], "stage": "length_filter", "docs_rejected": len(short)}
