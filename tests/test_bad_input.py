"""Bad input is data, not a crash: every bad record lands in rejects with a reason, every
unreadable file is reported with its path, and nothing else is lost."""
from __future__ import annotations

import gzip
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from fastwarc.warc import ArchiveIterator
from pipeline_helpers import make_pipeline, read_manifest_files, web_docs

from tokenmill.engine.run import run_pipeline


@pytest.fixture
def engine() -> str:
    """The local executor only: these runs on Ray are test_local_executor's parity tests."""
    return "local"


def _responses_before(warc_gz: bytes, cut: int) -> int:
    """Response records of a .warc.gz whose gzip member ends before ``cut``."""
    recs = [(str(r.record_type), r.stream_pos) for r in ArchiveIterator(io.BytesIO(warc_gz), parse_http=False)]
    ends = [pos for _, pos in recs[1:]] + [len(warc_gz)]
    return sum(1 for (kind, _), end in zip(recs, ends) if "response" in kind and end <= cut)


def test_bad_input_corpus(engine, tmp_path, shared_data):
    d = tmp_path / "in"
    d.mkdir()
    docs = web_docs(shared_data)
    good, extra = docs[:40], docs[40:80]

    # 1. one JSONL file mixing good records with every kind of bad record
    lines = [json.dumps(r).encode() for r in good[:20]]
    lines += [b'{"id": "broken-1", "text": "unterminated', b"not json at all", b'["a", "list"]']  # invalid_json x3
    lines += [b'{"id": "latin1", "text": "caf\xe9 cr\xe8me"}', b'{"id": "bad-bytes", "text": "\xff\xfe"}']  # invalid_utf8 x2
    lines += [json.dumps({"id": "nul", "text": "hello\x00world " * 20}).encode()]  # contains_nul
    lines += [json.dumps({"id": "empty", "text": ""}).encode(), json.dumps({"id": "blank", "text": "  \n "}).encode()]
    lines += [json.dumps({"id": "no-text", "body": "text under another key"}).encode()]  # missing_text
    lines += [json.dumps({"id": "num-text", "text": 42}).encode()]  # missing_text (not a string)
    lines += [b'{"id": "lone", "text": "a lone surrogate \\ud800 escaped in JSON"}']  # invalid_unicode
    # a lone surrogate in the id only: repaired, the record goes on
    lines += [json.dumps({"id": "surrogate-id-\udc00", "text": extra[0]["text"]}).encode()]
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

    # 5. a BOM and CRLF endings; a cut .jsonl.zst and .warc.gz; empty files; a text column of numbers
    bom_lines = b"\r\n".join(json.dumps(r).encode() for r in extra[1:3]) + b"\r\n"
    (d / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + bom_lines)
    zobj = zstandard.ZstdCompressor(write_checksum=True).compressobj()  # a block per record, as a streaming writer
    zst = b"".join(zobj.compress(json.dumps(r).encode() + b"\n") + zobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
                   for r in extra[5:25]) + zobj.flush()
    zst_cut = len(zst) * 2 // 3
    (d / "cut.jsonl.zst").write_bytes(zst[:zst_cut])
    zst_kept = zstandard.ZstdDecompressor().decompressobj().decompress(zst[:zst_cut]).count(b"\n")
    assert 0 < zst_kept < 20
    warc = (shared_data / "sample.warc.gz").read_bytes()
    (d / "cut.warc.gz").write_bytes(warc[:100_000])
    warc_kept = _responses_before(warc, 100_000)
    for name in ("empty.jsonl", "empty.jsonl.gz", "empty.jsonl.zst", "empty.parquet", "empty.warc.gz"):
        (d / name).write_bytes(b"")
    pq.write_table(pa.table({"id": ["n1", "n2"], "text": [1, 2]}), d / "numbers.parquet")

    out = tmp_path / "out"
    pipe, _ = make_pipeline([str(d / "*")], out)
    result = run_pipeline(pipe, progress=False, engine=engine)
    report = result.report
    rejects = read_manifest_files(out, "rejects/")
    data = read_manifest_files(out, "data/")

    read_rejects = [r for r in rejects.to_pylist() if r["reject_stage"] == "read"]
    by_reason: dict[str, int] = {}
    for r in read_rejects:
        by_reason[r["reject_reason"]] = by_reason.get(r["reject_reason"], 0) + 1
    assert by_reason == {"invalid_json": 3, "invalid_utf8": 2, "invalid_unicode": 1, "contains_nul": 1,
                         "empty_text": 2, "missing_text": 4, "too_large": 1, "unreadable_file": 8,
                         "truncated_file": 3}
    # the bad records keep what could be kept of them
    huge_row = next(r for r in read_rejects if r["id"] == "huge")
    assert len(huge_row["text"]) == 64 << 10   # streamed past: a prefix, the line's size in meta
    assert json.loads(huge_row["meta"])["_cut"]["line"]["bytes"] == len(json.dumps(huge))
    assert next(r for r in read_rejects if r["id"] == "latin1")["text"].startswith("caf")
    assert next(r for r in read_rejects if r["reject_reason"] == "invalid_json" and "unterminated" in r["text"])
    assert next(r for r in read_rejects if r["id"] == "lone")["text"] == "a lone surrogate \ufffd escaped in JSON"
    assert [r["text"] for r in read_rejects if r["source"] == "numbers.parquet"] == ["1", "2"]

    # whole files: reported with path and error
    errors = {os.path.basename(e["path"]): e for e in report["file_errors"]}
    assert errors["no_text.parquet"]["kind"] == "unreadable_file" and "text" in errors["no_text.parquet"]["error"]
    assert errors["garbage.jsonl.gz"]["kind"] == "unreadable_file"
    assert errors["dangling.jsonl"]["kind"] == "unreadable_file"
    assert errors["truncated.jsonl.gz"]["kind"] == "truncated_file"
    assert errors["cut.jsonl.zst"]["kind"] == "truncated_file"
    assert f"cut short at byte {zst_cut}" in errors["cut.jsonl.zst"]["error"]
    assert errors["cut.warc.gz"]["kind"] == "truncated_file"
    assert f"{warc_kept} records were read" in errors["cut.warc.gz"]["error"]
    for name in ("empty.jsonl", "empty.jsonl.gz", "empty.jsonl.zst", "empty.parquet", "empty.warc.gz"):
        assert errors[name]["kind"] == "unreadable_file", name
    assert len(report["file_errors"]) == 11

    # nothing else is lost: every good record read is either kept or rejected by a later stage
    truncated_ids = [r["id"] for r in rejects.to_pylist() + data.to_pylist() if r["source"] == "truncated.jsonl.gz"
                     and r.get("reject_reason") != "truncated_file"]
    assert 0 < len(truncated_ids) < 20
    assert sorted(truncated_ids) == sorted(r["id"] for r in good[20:20 + len(truncated_ids)])
    seen_good = {r["id"] for r in data.to_pylist()} | {r["id"] for r in rejects.to_pylist() if r["reject_stage"] != "read"}
    expected_ids = {r["id"] for r in good[:20] + extra[1:3] + extra[5:5 + zst_kept]} | {"surrogate-id-\ufffd"}
    assert expected_ids <= seen_good
    warc_ids = {r["id"] for r in data.to_pylist() + rejects.to_pylist() if r["source"] == "cut.warc.gz"}
    assert len(warc_ids - {"cut.warc.gz:truncated_file"}) == warc_kept > 0
    assert report["stages"][0]["docs_in"] == 20 + 11 + len(truncated_ids) + 2 + 2 + zst_kept + warc_kept + 2
    for s in report["stages"]:
        assert s["docs_in"] == s["docs_out"] + s["docs_rejected"]
