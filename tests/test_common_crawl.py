"""Common Crawl input (issue 27): WET files (conversion records) built from real text of
shared/data, read by name and by record type, cut files keeping every complete record; a WARC
holding both responses (real HTML of sample.warc.gz) and conversions; ``input.common_crawl``
expanded from a folder laid out like the bucket (``crawl-data/<snapshot>/wet.paths.gz``) to
exactly the chosen shards (a range, a list, a seeded fraction), a wrong snapshot, shard or paths
file a config error, and an incremental run over a widening range taking each shard once; the
extractors (trafilatura's timeout, its process killed mid-page), statuses and url_dedup."""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from fastwarc.warc import ArchiveIterator, WarcRecordType

from tokenmill.engine.config import ConfigError, InputConfig, build_pipeline
from tokenmill.engine.io.common_crawl import (
    CommonCrawlInput,
    ShardFraction,
    shard_numbers,
    snapshot_files,
    snapshot_urls,
)
from tokenmill.engine.io.listing import detect_format
from tokenmill.engine.io.readers import InputFile, read_file

OPTS = InputConfig(paths=["unused"], batch_rows=50)
SNAPSHOT = "CC-MAIN-2025-26"


def warc_record(kind: str, n: int, block: bytes, uri: str, extra: str = "", date: str = "2025-06-01T00:00:00Z") -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Record-ID: <urn:uuid:{kind}-{n}>\r\n"
            f"WARC-Target-URI: {uri}\r\nWARC-Date: {date}\r\n{extra}"
            f"Content-Length: {len(block)}\r\n\r\n").encode()
    return head + block + b"\r\n\r\n"


def conversion(n: int, text: str, uri: str, date: str = "2025-06-01T00:00:00Z") -> bytes:
    return warc_record("conversion", n, text.encode(), uri,
                       f"WARC-Refers-To: <urn:uuid:response-{n}>\r\nContent-Type: text/plain\r\n", date)


def wet_file(path: Path, docs: list[dict]) -> Path:
    """A WET file as Common Crawl writes it: a warcinfo record, then one gzip member per record."""
    info = warc_record("warcinfo", 0, b"software: test\r\n", "", "Content-Type: application/warc-fields\r\n")
    members = [gzip.compress(info)] + [gzip.compress(conversion(i, d["text"], d["url"])) for i, d in enumerate(docs)]
    path.write_bytes(b"".join(members))
    return path


@pytest.fixture(scope="module")
def docs(shared_data) -> list[dict]:
    rows = [json.loads(line) for line in open(shared_data / "web_dev.jsonl", encoding="utf-8")]
    return [{"id": r["id"], "text": r["text"], "url": r.get("url") or f"https://example.org/{r['id']}"} for r in rows]


def read(path: Path, fmt: str) -> list[dict]:
    return [r for t in read_file(InputFile(str(path), path.name, fmt), OPTS) for r in t.to_pylist()]


def test_wet_files_are_detected_by_name_and_read_as_documents(tmp_path, docs):
    path = wet_file(tmp_path / "CC-MAIN-x-00000.warc.wet.gz", docs[:30])
    assert detect_format(str(path)) == "wet" and detect_format("a.warc.gz") == "warc" and detect_format("b.wet") == "wet"
    rows = read(path, "wet")
    assert [r["text"] for r in rows] == [d["text"] for d in docs[:30]]
    assert [r["url"] for r in rows] == [d["url"] for d in docs[:30]] and all(r["reject_reason"] is None for r in rows)
    meta = json.loads(rows[3]["meta"])
    assert meta["refers_to"] == "<urn:uuid:response-3>" and meta["content_type"] == "text/plain"
    assert rows[3]["id"] == "<urn:uuid:conversion-3>"


def test_a_cut_wet_file_keeps_every_complete_record_and_reports_the_cut(tmp_path, docs):
    whole = wet_file(tmp_path / "whole.warc.wet.gz", docs[:20]).read_bytes()
    members = [gzip.compress(conversion(i, d["text"], d["url"])) for i, d in enumerate(docs[:20])]
    first = len(whole) - sum(map(len, members))   # the warcinfo member
    cut_at = first + sum(map(len, members[:12])) + len(members[12]) // 2   # inside the 13th record
    path = tmp_path / "cut.warc.wet.gz"
    path.write_bytes(whole[:cut_at])
    rows = read(path, "wet")
    kept = [r for r in rows if r["reject_reason"] is None]
    assert [r["text"] for r in kept] == [d["text"] for d in docs[:12]]
    assert rows[-1]["reject_reason"] == "truncated_file" and str(path) in rows[-1]["meta"]


def test_a_warc_with_responses_and_conversions_reads_both(tmp_path, shared_data, docs):
    raw = gzip.decompress((shared_data / "sample.warc.gz").read_bytes())
    responses = []
    stream = io.BytesIO(raw)
    for rec in ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=False):
        responses.append(rec.headers.get("WARC-Target-URI"))
    path = tmp_path / "mixed.warc.gz"
    path.write_bytes(gzip.compress(raw) + gzip.compress(conversion(1, docs[0]["text"], docs[0]["url"])))
    rows = read(path, "warc")
    assert [r["url"] for r in rows] == responses + [docs[0]["url"]]
    assert rows[-1]["text"] == docs[0]["text"] and sum(bool(r["text"]) for r in rows[:-1]) >= 0.8 * len(responses)


@pytest.fixture()
def bucket(tmp_path, docs) -> Path:
    """A folder laid out like s3://commoncrawl: 5 WET shards of 6 documents and the paths file."""
    lines = []
    for k in range(5):
        rel = f"crawl-data/{SNAPSHOT}/segments/1750000000.{k}/wet/{SNAPSHOT}-2025061000000{k}-{k:05d}.warc.wet.gz"
        (tmp_path / rel).parent.mkdir(parents=True)
        wet_file(tmp_path / rel, [{**d, "text": d["text"] + f"\nshard {k}"} for d in docs[6 * k:6 * k + 6]])
        lines.append(rel)
    with gzip.open(tmp_path / "crawl-data" / SNAPSHOT / "wet.paths.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return tmp_path


def test_shard_selection(bucket):
    assert shard_numbers("all", 4, "x") == [0, 1, 2, 3] and shard_numbers("1-3", 5, "x") == [1, 2, 3]
    assert shard_numbers([4, "0-1", 1], 5, "x") == [0, 1, 4] and shard_numbers(2, 5, "x") == [2]
    frac = shard_numbers(ShardFraction(fraction=0.4, seed=1), 5, "x")
    assert len(frac) == 2 and frac == shard_numbers(ShardFraction(fraction=0.4, seed=1), 5, "x") == sorted(frac)
    with pytest.raises(ValueError, match=r"shard 5 is past the end of x \(5 shards, numbered 0-4\)"):
        shard_numbers("5-7", 5, "x")
    cc = CommonCrawlInput(snapshot=SNAPSHOT, shards="1-2", base_url=str(bucket))
    urls = snapshot_urls(cc)
    assert [Path(u).name[-17:] for u in urls] == ["00001.warc.wet.gz", "00002.warc.wet.gz"]
    files = snapshot_files(cc)   # the run's input files, taken from the paths file as they are: no request per shard
    assert [f.path for f in files] == urls and {f.format for f in files} == {"wet"}
    assert [f.source for f in files] == [u[len(str(bucket)) + 1:] for u in urls] and files[0].source.startswith("crawl-data/")
    assert {f.listed for f in files} == {(None, SNAPSHOT)}
    for bad, match in (({"snapshot": "2025-26"}, "CC-MAIN-2025-26"), ({"snapshot": SNAPSHOT, "shards": "9-3"}, "ends before")):
        with pytest.raises(ValueError, match=match):
            CommonCrawlInput(**bad)


def config(bucket: Path, out: Path, shards, incremental: bool = False) -> dict:
    return {"name": "cc", "input": {"common_crawl": {"snapshot": SNAPSHOT, "kind": "wet", "shards": shards,
                                                     "base_url": str(bucket)}},
            "output": {"path": str(out), "incremental": incremental}, "engine": "local",
            "stages": [{"type": "langid"}]}


def output_texts(out: Path) -> list[tuple[str, str]]:
    """(id, text) of every row written, kept or rejected."""
    from pipeline_helpers import read_manifest_files

    tables = [read_manifest_files(out, prefix) for prefix in ("data/", "rejects/")]
    return sorted(pair for t in tables if t.num_rows for pair in zip(t["id"].to_pylist(), t["text"].to_pylist()))


def output_ids(out: Path) -> list[str]:
    return [i for i, _ in output_texts(out)]


def test_a_snapshot_run_reads_exactly_the_chosen_shards(bucket, tmp_path):
    from tokenmill.engine.run import run_pipeline

    out = tmp_path / "out"
    run_pipeline(build_pipeline(config(bucket, out, "1-3")), progress=False)
    want = sorted(f"<urn:uuid:conversion-{i}>" for i in range(6)) * 3
    assert output_ids(out) == sorted(want)
    assert sorted(t.rsplit("shard ", 1)[-1] for _, t in output_texts(out)) == sorted(["1", "2", "3"] * 6)


def test_a_wrong_snapshot_or_shard_is_a_config_error(bucket, tmp_path):
    with pytest.raises(ConfigError, match="input.common_crawl: no paths file at .*CC-MAIN-2024-10/wet.paths.gz"):
        build_pipeline({**config(bucket, tmp_path / "o", "0"), "input": {"common_crawl": {
            "snapshot": "CC-MAIN-2024-10", "base_url": str(bucket)}}})
    with pytest.raises(ConfigError, match="input.common_crawl.shards: shard 8 is past the end of .*wet.paths.gz"):
        build_pipeline(config(bucket, tmp_path / "o", "8-9"))
    with pytest.raises(ConfigError, match="either paths .* or common_crawl"):
        build_pipeline({**config(bucket, tmp_path / "o", "0"), "input": {"paths": ["x.jsonl"], "common_crawl": {
            "snapshot": SNAPSHOT}}})


def test_an_incremental_run_over_a_widening_range_takes_each_shard_once(bucket, tmp_path):
    from tokenmill.engine.run import run_pipeline

    out = tmp_path / "out"
    run_pipeline(build_pipeline(config(bucket, out, "0-1", incremental=True)), progress=False)
    first = output_ids(out)
    run_pipeline(build_pipeline(config(bucket, out, "0-3", incremental=True)), progress=False)
    both = output_ids(out)
    assert len(first) == 12 and len(both) == 24      # shards 0-1 once, then 2-3 only


# -- the HTML extractor ------------------------------------------------------------------------------


def warc_config(path: Path, out: Path, engine: str, **inp) -> dict:
    return {"name": "x", "input": {"paths": [str(path)], **inp}, "output": {"path": str(out)}, "engine": engine,
            "stages": [{"type": "langid"}]}


def test_trafilatura_extracts_the_sample_pages_and_the_report_names_it(shared_data, tmp_path, engine):
    from tokenmill.engine.run import run_pipeline

    runs = {}
    for extractor in ("resiliparse", "trafilatura"):
        out = tmp_path / extractor
        run_pipeline(build_pipeline(warc_config(shared_data / "sample.warc.gz", out, engine, extractor=extractor)),
                     progress=False)
        assert json.loads((out / "report.json").read_text())["extractor"] == extractor
        runs[extractor] = dict(output_texts(out))
    assert runs["resiliparse"].keys() == runs["trafilatura"].keys()
    both = [(runs["resiliparse"][k] or "", runs["trafilatura"][k] or "") for k in runs["trafilatura"]]
    filled = [(a, b) for a, b in both if b]
    assert len(filled) >= 0.7 * len(both)                    # trafilatura found main text in most pages
    shared = [len(set(a.split()) & set(b.split())) / max(1, len(set(b.split()))) for a, b in filled]
    assert sorted(shared)[len(shared) // 2] > 0.7            # and mostly the words Resiliparse found


def test_a_page_that_makes_trafilatura_slow_is_a_timeout_reject_and_the_next_page_is_read(tmp_path, shared_data):
    slow = ("<html><body>" + "".join(f"<div><p>paragraph {i} " + "word " * 40 + "</p></div>" for i in range(30000))
            + "</body></html>").encode()
    normal = b"<html><body><article><p>" + b"A short normal page about the weather today. " * 20 + b"</p></article></body></html>"
    block = lambda body: b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body   # noqa: E731
    path = tmp_path / "slow.warc"
    path.write_bytes(warc_record("response", 1, block(slow), "https://slow.example/",
                                 "Content-Type: application/http; msgtype=response\r\n")
                     + warc_record("response", 2, block(normal), "https://ok.example/",
                                   "Content-Type: application/http; msgtype=response\r\n"))
    opts = InputConfig(paths=["unused"], extractor="trafilatura", extraction_timeout=0.5, max_doc_bytes=1 << 30)
    rows = [r for t in read_file(InputFile(str(path), path.name, "warc"), opts) for r in t.to_pylist()]
    assert [r["reject_reason"] for r in rows] == ["html_extraction_timeout", None]
    assert "within 0.5 s" in json.loads(rows[0]["meta"])["error"] and "weather today" in rows[1]["text"]


# -- what the crawl itself holds: statuses and repeated URLs -------------------------------------------


def test_responses_that_are_not_200_are_rejects_counted_by_status(tmp_path, engine):
    from tokenmill.engine.run import run_pipeline

    page = b"<html><body><article><p>" + b"A page about the harbour and its boats in the morning. " * 20 + b"</p></article></body></html>"
    def response(n, status, body=page):   # noqa: E306
        block = f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\n\r\n".encode() + body
        return warc_record("response", n, block, f"https://site.example/{n}", "Content-Type: application/http; msgtype=response\r\n")
    path = tmp_path / "in" / "statuses.warc"
    path.parent.mkdir()
    path.write_bytes(response(1, "200 OK") + response(2, "301 Moved Permanently", b"") + response(3, "404 Not Found")
                     + response(4, "404 Not Found") + response(5, "200 OK"))
    out = tmp_path / "out"
    run_pipeline(build_pipeline(warc_config(path, out, engine)), progress=False)
    reasons = {(r["stage"], r["reason"]): r["docs"] for r in json.loads((out / "report.json").read_text())["reject_reasons"]}
    assert reasons[("read", "http_status:404")] == 2 and reasons[("read", "http_status:301")] == 1
    assert len([i for i, t in output_texts(out) if t and "harbour" in t]) == 2


def test_url_dedup_keeps_the_latest_capture_or_only_reports(tmp_path, docs, engine):
    from tokenmill.engine.run import run_pipeline

    (tmp_path / "in").mkdir()
    same = "https://news.example/story?id=7#comments"
    captures = [("2025-01-05T00:00:00Z", "a"), ("2025-03-01T00:00:00Z", "b"), ("2025-02-01T00:00:00Z", "c")]
    for f, part in enumerate((captures[:2], captures[2:])):
        records = [conversion(10 * f + i, docs[10 * f + i]["text"] + f" capture {tag}", same.replace("https", "HTTPS") if tag == "c" else same, date)
                   for i, (date, tag) in enumerate(part)]
        records += [conversion(10 * f + 5 + i, d["text"], d["url"]) for i, d in enumerate(docs[20 + 5 * f:25 + 5 * f])]
        (tmp_path / "in" / f"part-{f}.warc.wet.gz").write_bytes(b"".join(gzip.compress(r) for r in records))
    for remove in (True, False):
        out = tmp_path / f"out-{remove}"
        run_pipeline(build_pipeline({"name": "u", "input": {"paths": [str(tmp_path / "in")]}, "output": {"path": str(out)},
                                     "engine": engine, "stages": [{"type": "url_dedup", "remove": remove}]}), progress=False)
        report = json.loads((out / "report.json").read_text())
        assert report["global_steps"]["url_dedup"]["urls_captured_more_than_once"] == 1
        assert report["global_steps"]["url_dedup"]["extra_captures"] == 2
        from pipeline_helpers import read_manifest_files

        kept = read_manifest_files(out, "data/")
        tags = sorted(t.rsplit("capture ", 1)[-1] for t in kept["text"].to_pylist() if "capture " in t)
        assert tags == (["b"] if remove else ["a", "b", "c"]) and kept.num_rows == (11 if remove else 13)
        if remove:
            rejects = read_manifest_files(out, "rejects/")
            assert sorted(rejects["reject_reason"].to_pylist()) == ["duplicate_url_of:<urn:uuid:conversion-1>"] * 2


def test_a_trafilatura_process_killed_mid_page_fails_that_page_only():
    import os
    import signal
    import threading

    from tokenmill.engine.io.extract import Sandbox

    box = Sandbox()
    slow = "<html><body>" + "".join(f"<div><p>paragraph {i} " + "word " * 40 + "</p></div>" for i in range(30000)) + "</body></html>"
    assert "weather" in box.extract("<html><body><article><p>" + "The weather today is mild and dry. " * 20
                                    + "</p></article></body></html>", 30)
    threading.Timer(0.3, lambda: os.kill(box.proc.pid, signal.SIGKILL)).start()
    with pytest.raises(ValueError, match="process died on this page"):
        box.extract(slow, 30)
    assert "harbour" in box.extract("<html><body><article><p>" + "The harbour is full of boats this morning. " * 20
                                    + "</p></article></body></html>", 30)
    box.stop()


def test_a_wet_record_over_the_cap_is_too_large_and_the_next_is_read(tmp_path, docs):
    path = tmp_path / "big.warc.wet.gz"
    path.write_bytes(gzip.compress(conversion(1, "x" * 300_000, "https://a.example/"))
                     + gzip.compress(conversion(2, docs[0]["text"], docs[0]["url"])))
    opts = InputConfig(paths=["unused"], max_record_bytes=100_000, reject_text_bytes=1000)
    rows = [r for t in read_file(InputFile(str(path), path.name, "wet"), opts) for r in t.to_pylist()]
    assert [r["reject_reason"] for r in rows] == ["too_large", None] and len(rows[0]["text"]) == 1000
    assert json.loads(rows[0]["meta"])["payload_bytes"] == 300_000 and rows[1]["text"] == docs[0]["text"]


def test_a_paths_file_that_is_not_gzip_is_a_config_error_naming_it(bucket, tmp_path):
    (bucket / "crawl-data" / SNAPSHOT / "wet.paths.gz").write_text("not gzip\n")
    with pytest.raises(ConfigError, match="input.common_crawl: the paths file .*wet.paths.gz: cannot read it"):
        build_pipeline(config(bucket, tmp_path / "o", "0"))


def test_a_store_that_times_out_on_the_paths_file_is_retried(bucket, tmp_path, monkeypatch):
    from tokenmill.engine.io.faults import ENV
    from tokenmill.engine.run import run_pipeline

    state, schedule = tmp_path / "faults", tmp_path / "faults.json"
    schedule.write_text(json.dumps({"inner": "file", "state": str(state), "rules": [
        {"op": "open", "match": "*wet.paths.gz", "kind": "transient", "times": 2}]}))
    monkeypatch.setenv(ENV, str(schedule))
    out = tmp_path / "out"
    run_pipeline(build_pipeline(config(f"faulty://{bucket}", out, "0-1")), progress=False)
    assert len((state / "log.jsonl").read_text().splitlines()) >= 2          # the timeouts happened and were retried
    assert len(output_ids(out)) == 12
