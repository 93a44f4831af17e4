"""Bad input is data, not a crash: every bad record lands in rejects with a reason, every
unreadable file is reported with its path, and nothing else is lost."""
from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill.engine.run import run_pipeline

from pipeline_helpers import make_pipeline, read_manifest_files, web_docs


def test_bad_input_corpus(ray_local, tmp_path, shared_data):
    d = tmp_path / "in"
    d.mkdir()
    good = web_docs(shared_data)[:40]

    # 1. one JSONL file mixing good records with every kind of bad record
    lines = [json.dumps(r).encode() for r in good[:20]]
    lines += [b'{"id": "broken-1", "text": "unterminated', b"not json at all", b'["a", "list"]']  # invalid_json x3
    lines += [b'{"id": "latin1", "text": "caf\xe9 cr\xe8me"}', b'{"id": "bad-bytes", "text": "\xff\xfe"}']  # invalid_utf8 x2
    lines += [json.dumps({"id": "nul", "text": "hello\x00world " * 20}).encode()]  # contains_nul
    lines += [json.dumps({"id": "empty", "text": ""}).encode(), json.dumps({"id": "blank", "text": "  \n "}).encode()]
    lines += [json.dumps({"id": "no-text", "body": "text under another key"}).encode()]  # missing_text
    lines += [json.dumps({"id": "num-text", "text": 42}).encode()]  # missing_text (not a string)
    (d / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    # 2. a single 50 MB document
    huge = {"id": "huge", "text": ("All work and no play makes Jack a dull boy. " * 1_200_000)[:50_000_000]}
    (d / "huge.jsonl").write_text(json.dumps(huge) + "\n")

    # 3. a truncated .gz: the records before the cut are kept, the file is reported
    payload = b"".join(json.dumps(r).encode() + b"\n" for r in good[20:40])
    gz = gzip.compress(payload)
    (d / "truncated.jsonl.gz").write_bytes(gz[: len(gz) * 2 // 3])

    # 4. a Parquet file without a text column, a file that is not gzip, a dangling path
    pq.write_table(pa.table({"id": ["a", "b"], "content": ["x", "y"]}), d / "no_text.parquet")
    (d / "garbage.jsonl.gz").write_bytes(b"this is not gzip data" * 10)
    os.symlink(d / "does-not-exist.jsonl", d / "dangling.jsonl")

    out = tmp_path / "out"
    pipe, _ = make_pipeline([str(d / "*")], out)
    result = run_pipeline(pipe, progress=False)
    report = result.report
    rejects = read_manifest_files(out, "rejects/")
    data = read_manifest_files(out, "data/")

    read_rejects = [r for r in rejects.to_pylist() if r["reject_stage"] == "read"]
    by_reason: dict[str, int] = {}
    for r in read_rejects:
        by_reason[r["reject_reason"]] = by_reason.get(r["reject_reason"], 0) + 1
    assert by_reason == {"invalid_json": 3, "invalid_utf8": 2, "contains_nul": 1, "empty_text": 2,
                         "missing_text": 2, "too_large": 1, "unreadable_file": 3, "truncated_file": 1}
    # the bad records keep what could be kept of them
    huge_row = next(r for r in read_rejects if r["id"] == "huge")
    assert len(huge_row["text"]) == 50_000_000
    assert next(r for r in read_rejects if r["id"] == "latin1")["text"].startswith("caf")
    assert next(r for r in read_rejects if r["reject_reason"] == "invalid_json" and "unterminated" in r["text"])

    # whole files: reported with path and error
    errors = {os.path.basename(e["path"]): e for e in report["file_errors"]}
    assert errors["no_text.parquet"]["kind"] == "unreadable_file" and "text" in errors["no_text.parquet"]["error"]
    assert errors["garbage.jsonl.gz"]["kind"] == "unreadable_file"
    assert errors["dangling.jsonl"]["kind"] == "unreadable_file"
    assert errors["truncated.jsonl.gz"]["kind"] == "truncated_file"

    # nothing else is lost: every good record read is either kept or rejected by a later stage
    truncated_ids = [r["id"] for r in rejects.to_pylist() + data.to_pylist() if r["source"] == "truncated.jsonl.gz"
                     and r.get("reject_reason") != "truncated_file"]
    assert 0 < len(truncated_ids) < 20
    assert sorted(truncated_ids) == sorted(r["id"] for r in good[20:20 + len(truncated_ids)])
    seen_good = {r["id"] for r in data.to_pylist()} | {r["id"] for r in rejects.to_pylist() if r["reject_stage"] != "read"}
    assert {r["id"] for r in good[:20]} <= seen_good
    assert report["stages"][0]["docs_in"] == 20 + 11 + len(truncated_ids)
    for s in report["stages"]:
        assert s["docs_in"] == s["docs_out"] + s["docs_rejected"]
