"""The report's counts come from statistics gathered while the final partitions were written; they
must equal a recount of the files on disk, also when the report is rebuilt from the manifest."""
from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import make_pipeline, read_manifest_files, web_docs, write_jsonl_gz

from tokenmill.engine.io.readers import FILE_REASONS
from tokenmill.engine.io.writers import PartitionedWriter
from tokenmill.engine.report.stats import WriteStats
from tokenmill.engine.run import run_pipeline


@pytest.fixture
def engine() -> str:
    """The local executor only: the Ray runs of these algorithms are the parity tests (local,
    Spark) and the child-process tests below."""
    return "local"


def _recount(out):
    data = read_manifest_files(out, "data/").to_pylist()
    rejects = read_manifest_files(out, "rejects/").to_pylist()
    langs = defaultdict(lambda: [0, 0, 0])
    for r in data:
        v = langs[r["language"]]
        v[0] += 1
        v[1] += r["num_chars"]
        v[2] += r["num_tokens"]
    reasons, stages, files = Counter(), Counter(), []
    for r in rejects:
        if r["reject_reason"] in FILE_REASONS:
            files.append((json.loads(r["meta"])["path"], r["reject_reason"]))
            continue
        label = "duplicate" if r["reject_reason"].startswith("duplicate_of:") else r["reject_reason"]
        reasons[(r["reject_stage"], label)] += 1
        stages[r["reject_stage"]] += 1
    return dict(langs), reasons, stages, sorted(files)


def _from_report(report):
    langs = {item["language"]: [item["docs"], item["chars"], item["tokens"]] for item in report["languages"]}
    reasons = Counter({(r["stage"], r["reason"]): r["docs"] for r in report["reject_reasons"]})
    stages = Counter({s["stage"]: s["docs_rejected"] for s in report["stages"] if s["docs_rejected"]})
    files = sorted((e["path"], e["kind"]) for e in report["file_errors"] if e["kind"] != "input")
    return langs, reasons, stages, files


def test_report_counts_equal_a_recount_of_the_files(tmp_path, shared_data, engine):
    rows = web_docs(shared_data)
    good = write_jsonl_gz(tmp_path / "good.jsonl.gz", rows[:150] + rows[:20])  # 20 exact duplicates
    cut = tmp_path / "cut.jsonl.gz"
    blob = gzip.compress("".join(json.dumps(r) + "\n" for r in rows[150:250]).encode())
    cut.write_bytes(blob[: len(blob) // 2])                                     # truncated: head kept
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine but short"}\nnot json at all\n{"id": 3}\n')
    out = tmp_path / "out"
    pipe, _ = make_pipeline([good, cut, bad], out, batch_size=40, files_per_chunk=2)
    result = run_pipeline(pipe, progress=False, engine=engine)
    report = json.loads((out / "report.json").read_text())

    recount = _recount(out)
    assert _from_report(report) == recount
    langs, reasons, stages, files = recount
    assert reasons[("exact_dedup", "duplicate")] >= 10 and reasons[("read", "invalid_json")] == 1
    assert files == [(str(cut), "truncated_file")]
    assert report["output"]["docs"] == sum(v[0] for v in langs.values())
    assert report["stages"][0]["docs_in"] == sum(f["rows"] for f in result.manifest["files"]) - len(files)
    assert report["shuffle_bytes"] > 0

    # a report lost after the commit is rebuilt from the manifest's counts, without the engine
    (out / "report.json").unlink()
    again = run_pipeline(pipe, progress=False, engine=engine)
    assert again.skipped and _from_report(again.report) == recount


def test_write_stats_merge_by_addition():
    t = pa.table({"language": ["en", "en", "de", None], "num_chars": [10, 20, 5, 1], "num_tokens": [2, 4, 1, 1],
                  "reject_stage": pa.array([None] * 4, pa.string())})
    a, b = WriteStats(), WriteStats()
    a.add_kept(t)
    b.add_kept(t.slice(0, 1))
    merged = WriteStats.from_json(json.loads(json.dumps(a.to_json()))).merge(b)
    assert merged.kept == {"en": [3, 40, 8], "de": [1, 5, 1], "und": [1, 1, 1]}
    rej = pa.table({"reject_stage": ["exact_dedup", "exact_dedup", "read"], "reject_reason": ["duplicate_of:x", "duplicate_of:y", "unreadable_file"],
                    "language": ["en", "en", None], "num_chars": [3, 4, 0], "num_tokens": [1, 1, 0],
                    "source": ["s", "s", "f"], "meta": [None, None, json.dumps({"path": "/in/f", "error": "boom"})]})
    s = WriteStats()
    s.add_rejected(rej, lambda stage, r: pa.compute.if_else(pa.compute.starts_with(r, "duplicate_of:"), "duplicate", r))
    assert s.rejected == {("exact_dedup", "duplicate", "en"): [2, 7, 2]}
    assert s.file_errors == [{"path": "/in/f", "kind": "unreadable_file", "error": "boom"}]


def test_partitioned_writer_rotates_files_and_keeps_partitions_pure(tmp_path):
    w = PartitionedWriter(str(tmp_path), "00007", "language", max_rows=25, group_rows=10)
    for _ in range(6):
        w.write(pa.table({"language": ["en"] * 12 + ["fr"] * 3, "n": list(range(15))}))
    paths = w.close()
    counts = {p: pq.ParquetFile(p).metadata.num_rows for p in paths}
    en = [p for p in paths if "/language=en/" in p]
    assert sorted(counts[p] for p in en) == [22, 25, 25] and sum(counts.values()) == 90
    assert all(p.rsplit("/", 1)[-1].startswith("part-00007-") for p in paths)
    for p in paths:
        assert set(pq.read_table(p)["language"].to_pylist()) == {p.split("language=")[1].split("/")[0]}


def test_without_token_counts_the_report_measures_in_characters(tmp_path, shared_data, engine):
    """``tokenizer.kind: none`` skips the BPE count: num_tokens stays null on disk, and the report and
    its HTML say so and measure in characters (their figures still equal a recount of the files)."""
    rows = web_docs(shared_data)[:60]
    src = write_jsonl_gz(tmp_path / "in.jsonl.gz", rows + rows[:10])
    out = tmp_path / "out"
    pipe, _ = make_pipeline([src], out, tokenizer={"kind": "none"})
    report = run_pipeline(pipe, progress=False, engine=engine).report
    data = read_manifest_files(out, "data/")
    assert data.num_rows == report["output"]["docs"] > 0 and data["num_tokens"].null_count == data.num_rows
    assert report["size_unit"] == "chars" and report["output"]["tokens"] == 0
    assert report["output"]["chars"] == sum(data["num_chars"].to_pylist())
    assert report["stages"][-1]["chars_out"] == report["output"]["chars"]
    html = (out / "report.html").read_text()
    assert "Tokens were not counted" in html and "Funnel: chars after each stage" in html
