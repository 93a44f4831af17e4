"""The quickstart config end to end, as a user runs it (``tokenmill run`` on an embedded Ray, once
per session: ``conftest.quickstart_run``): partitions, report, manifest, re-runs."""
from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
from conftest import QUICKSTART
from pipeline_helpers import output_rows, read_manifest_files, report_counts

from tokenmill.engine.config import load_config
from tokenmill.engine.run import run_pipeline

SAMPLE_DOCS = 117 + 30 + 472 + 161 + 22  # web, recrawl, udhr, books, warc responses


def test_quickstart_end_to_end(quickstart_run, tmp_path):
    proc, out = quickstart_run
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "_manifest.json").read_text())

    # partitions: language=xx folders whose files hold only that language, zstd-compressed
    parts = sorted(p.name for p in (out / "data").iterdir())
    assert {"language=en", "language=de"} <= set(parts)
    for part in parts:
        lang = part.split("=", 1)[1]
        for f in (out / "data" / part).glob("*.parquet"):
            assert f.name.startswith("part-")
            t = pq.read_table(f, partitioning=None)
            assert set(t["language"].to_pylist()) == {lang}
            assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"
            assert {"id", "text", "source", "url", "meta", "num_tokens", "language_score"} <= set(t.column_names)
            assert "reject_reason" not in t.column_names and "dedup_key" not in t.column_names

    # manifest: exactly the files on disk, each with the right row count and checksum
    on_disk = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert sorted(f["path"] for f in manifest["files"]) == on_disk
    assert manifest["complete"] is True
    for f in manifest["files"]:
        path = out / f["path"]
        assert pq.ParquetFile(path).metadata.num_rows == f["rows"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
    assert not (out / "_work").exists()

    # report: every stage's in = out + rejected (+ what a modifier removed: chars, tokens); stages
    # chain; totals match disk
    stages = report["stages"]
    assert [s["stage"] for s in stages] == ["read", "text_repair", "langid", "pii", "heuristics", "exact_dedup"]
    for s in stages:
        assert s["docs_in"] == s["docs_out"] + s["docs_rejected"], s["stage"]
        for unit in ("chars", "tokens"):
            assert s[f"{unit}_in"] == s[f"{unit}_out"] + s[f"{unit}_rejected"] + s[f"{unit}_removed"], (s["stage"], unit)
    repair = stages[1]
    assert repair["docs_modified"] > 0 and repair["chars_removed"] > 0
    assert report["stage_counts"]["text_repair"]["counts"]["docs_modified"] == repair["docs_modified"]
    for a, b in zip(stages, stages[1:]):
        assert a["docs_out"] == b["docs_in"] and a["tokens_out"] == b["tokens_in"]
    assert stages[0]["docs_in"] == SAMPLE_DOCS
    assert stages[0]["tokens_in"] > 500_000
    data = read_manifest_files(out, "data/")
    rejects = read_manifest_files(out, "rejects/")
    assert report["output"]["docs"] == data.num_rows == stages[-1]["docs_out"]
    assert report["output"]["tokens"] == sum(data["num_tokens"].to_pylist())
    assert data["num_chars"].to_pylist() == [len(t) for t in data["text"].to_pylist()]
    assert data.num_rows + rejects.num_rows == SAMPLE_DOCS
    assert all(n > 0 for n in data["num_tokens"].to_pylist())
    assert len(set(data["id"].to_pylist())) == data.num_rows
    assert sum(r["docs"] for r in report["reject_reasons"]) == rejects.num_rows
    langs = {item["language"]: item for item in report["languages"]}
    assert langs["en"]["docs"] == sum(1 for x in data["language"].to_pylist() if x == "en")
    assert report["file_errors"] == []
    assert "<svg" in (out / "report.html").read_text()

    # exact dedup: the re-crawled copies are rejected, pointing at a kept document
    dups = [r for r in rejects.to_pylist() if r["reject_stage"] == "exact_dedup"]
    assert len(dups) >= 10
    kept_ids = set(data["id"].to_pylist())
    assert all(d["reject_reason"].startswith("duplicate_of:") for d in dups)
    assert all(d["reject_reason"].split(":", 1)[1] in kept_ids for d in dups)
    # stage wall time / docs per second are reported
    assert stages[1]["docs_per_second"] and stages[2]["busy_seconds"] is not None

    # re-running a finished run does nothing and says so
    again = run_pipeline(load_config(QUICKSTART), output=str(out), progress=False)
    assert again.skipped and again.manifest["fingerprint"] == manifest["fingerprint"]
    assert again.report["output"] == report["output"]

    # the same input and config give the same output rows, on any engine (here: in this process)
    out2 = tmp_path / "out2"
    local = run_pipeline(load_config(QUICKSTART), output=str(out2), progress=False, engine="local")
    assert output_rows(out2) == output_rows(out)
    assert report_counts(local.report) == report_counts(report)
