"""Bounded memory per record: bench/bombs.py's hostile inputs, scaled down, with the caps lowered so
that every path is taken. One ``tokenmill run --engine local`` reads all of them, in a child process
whose tree RSS is sampled every 50 ms; a second reads the same good records without them. Each
case checks: exit 0, its good records out, its bad part reported (a ``too_large`` reject with its
prefix, full length and SHA-256, its lines as rows, or an ``input`` file error), and the peak tree
RSS within a margin of the run without it (smaller than one bomb line: a line held whole, let
alone several times, would pass it). Below, the pieces alone: decoder blocks, lines, cuts, tokens."""
from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tokenmill.engine.config import InputConfig
from tokenmill.engine.io.decode import BLOCK, CODECS, ZSTD_BLOCK, Oversized, _decode, iter_lines
from tokenmill.engine.io.read_rows import RowBatch, cut_rows
from tokenmill.engine.io.readers import InputFile, read_file
from tokenmill.engine.io.tokens import count_tokens

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bombs  # noqa: E402  (bench/bombs.py: the same hostile inputs, full size)

MiB = 1 << 20
CAP = 256 << 10          # input.max_doc_bytes, lowered: every bomb line is streamed past
KEEP = 4096              # input.reject_text_bytes
MARGIN_MIB = 48          # under one bomb line (64 MiB)
CODECS_ = ("gzip", "bz2", "xz", "zstd")

#: case -> (builder of its folder, expected); sizes scaled down from the bench's
CASES = {
    **{f"{c}-line": (lambda f, bad, c=c: bombs.line_bomb(f, c, 64 * MiB, bad), "too_large") for c in CODECS_},
    **{f"{c}-lines": (lambda f, bad, c=c: bombs.lines_bomb(f, c, MiB // 2, bad), "lines") for c in CODECS_},
    "zstd-real-line": (lambda f, bad: bombs.real_line(f, 32 * MiB, bad), "too_large"),
    "warc-record": (lambda f, bad: bombs.warc_record(f, 16 * MiB, bad), "too_large"),
    "token-10mb": (lambda f, bad: bombs.one_word(f, CAP + 1, bad), "too_large"),
    "token-9mb": (lambda f, bad: bombs.one_word(f, CAP - 1000, bad), "row"),
    "fifo": (bombs.fifo, "input"),
    "symlink-loop": (bombs.symlink_loop, "input"),
}


def _config(folder: Path, out: Path) -> Path:
    cfg = {"name": "bombs", "input": {"paths": [str(folder)], "max_doc_bytes": CAP, "reject_text_bytes": KEEP,
                                      "max_record_bytes": MiB, "batch_rows": 256},
           "output": {"path": str(out)}, "stages": [{"type": "langid"}], "local": {"num_cpus": 1}}
    path = out.parent / f"{out.name}.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_data) -> dict:
    """Both runs: ``bad`` (every case's folder with its hostile part) and ``base`` (without)."""
    root = tmp_path_factory.mktemp("bombs")
    result: dict = {"built": {}}
    for kind, bad in (("base", False), ("bad", True)):
        for name, (build, _) in CASES.items():
            folder = root / kind / name
            folder.mkdir(parents=True)
            built = build(folder, bad)
            if bad:
                result["built"][name] = built
        out = root / f"out-{kind}"
        rc, peak, _ = bombs.run(_config(root / kind, out), timeout=300)
        rows = {"data": bombs.output_rows(out, "data", ["id", "url", "source", "num_tokens"]),
                "rejects": bombs.output_rows(out, "rejects", ["id", "url", "source", "text", "meta", "reject_stage",
                                                        "reject_reason", "num_tokens"])}
        report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
        result[kind] = {"rc": rc, "peak": peak, "rows": rows, "report": report}
    return result


def _case_rows(run: dict, name: str, folder: str) -> list[dict]:
    return [r for r in run["rows"][folder] if r["source"].startswith(f"{name}/")]


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(runs, name):
    bad, base, expect = runs["bad"], runs["base"], CASES[name][1]
    assert bad["rc"] == 0 and base["rc"] == 0
    good = sorted(r["id"] for r in _case_rows(bad, name, "data") if not bombs.is_bomb(r))
    assert good and good == sorted(r["id"] for r in _case_rows(base, name, "data"))
    rows = [r for f in ("data", "rejects") for r in _case_rows(bad, name, f) if bombs.is_bomb(r)]
    built = runs["built"][name]
    if expect == "input":
        errors = [e for e in bad["report"]["file_errors"] if e["kind"] == "input" and f"/{name}/" in e["path"]]
        assert len(errors) == 1 and not rows
    elif expect == "lines":
        assert len(rows) == built.lines > 0
    elif expect == "row":
        assert len(rows) == 1 and rows[0]["num_tokens"] > 0   # under the cap: read, tokenized
    else:
        assert [(r["reject_stage"], r["reject_reason"]) for r in rows] == [("read", "too_large")]
        assert rows[0]["num_tokens"] == 0
        if built.line is not None:   # streamed past: a prefix, the line's length and hash
            assert len(rows[0]["text"].encode()) == KEEP
            note = json.loads(rows[0]["meta"])["_cut"]["line"]
            assert (note["bytes"], note["sha256"]) == built.line
    assert bad["peak"] - base["peak"] <= MARGIN_MIB, (bad["peak"], base["peak"])


# -- the pieces ----------------------------------------------------------------------------------------
COMPRESS = {".gz": lambda d: gzip.compress(d, 9), ".bz2": bz2.compress, ".xz": lzma.compress,
            ".zst": lambda d: zstandard.ZstdCompressor(level=19).compress(d)}


@pytest.mark.parametrize("ext", list(COMPRESS))
def test_a_decoder_call_never_hands_out_more_than_a_block(ext):
    data = b"\0" * (96 * MiB)
    blob = COMPRESS[ext](data)
    sizes = [len(b) for b in _decode(iter([blob[i:i + MiB] for i in range(0, len(blob), MiB)]), *CODECS[ext])]
    assert sum(sizes) == len(data) and max(sizes) <= BLOCK + ZSTD_BLOCK


def test_long_lines_are_streamed_past_with_their_length_and_hash():
    long = b"y" * 5000
    blocks = [b"short\n", long[:3000], long[3000:] + b"\nexact" + b"z" * 995 + b"\n", b"tail " * 300]
    lines = list(iter_lines(iter(blocks), 1000, 10))
    assert lines[0] == b"short\n" and lines[2] == b"exact" + b"z" * 995 + b"\n"
    assert lines[1] == Oversized(b"y" * 10, 5000, hashlib.sha256(long).hexdigest())
    assert lines[3] == Oversized(b"tail tail ", 1500, hashlib.sha256(b"tail " * 300).hexdigest())


def test_a_streamed_line_keeps_its_text_start_and_the_fields_before_it(tmp_path):
    text = "caf\u00e9 \\ \"quoted\" " * 20_000
    lines = [{"id": "first", "url": "http://x.org/", "lang": "fr", "text": text}, {"text": text, "id": "after"},
             {"id": "ok", "text": "a short record"}]
    raw = [json.dumps(r).encode() for r in lines]
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"\n".join(raw) + b"\n")
    opts = InputConfig(paths=["-"], max_doc_bytes=100_000, reject_text_bytes=KEEP)
    rows = [r for t in read_file(InputFile(str(path), "long.jsonl", "jsonl"), opts) for r in t.to_pylist()]
    assert [(r["id"], r["url"], r["reject_reason"]) for r in rows] == [
        ("first", "http://x.org/", "too_large"), ("long.jsonl:1", None, "too_large"), ("ok", None, None)]
    for row, line in zip(rows[:2], raw):
        assert text.encode().startswith(row["text"].encode()) and KEEP - 3 < len(row["text"].encode()) <= KEEP
        meta = json.loads(row["meta"])
        assert meta["_cut"] == {"line": {"bytes": len(line), "sha256": hashlib.sha256(line).hexdigest()}}
    assert json.loads(rows[0]["meta"])["lang"] == "fr"


def test_fields_over_the_limit_are_cut_and_noted():
    opts = InputConfig(paths=["-"], max_field_bytes=100, reject_text_bytes=10)
    b = RowBatch(10, opts)
    b.add("i" * 300, "a rejected text \u00e9\u00e9", "s", "http://" + "u" * 200, json.dumps({"k": "v" * 300}), "empty_text")
    b.add("ok", "a kept text that is long enough", "s", None, None, None)
    rows = b.emit().to_pylist()
    cut = json.loads(rows[0]["meta"])
    assert rows[0]["id"] == "i" * 100 and rows[0]["url"] == ("http://" + "u" * 200)[:100]
    assert rows[0]["text"] == "a rejected" and rows[0]["num_chars"] == 10
    assert cut["_cut"]["id"] == {"bytes": 300, "sha256": hashlib.sha256(b"i" * 300).hexdigest()}
    assert cut["_cut"]["text"]["bytes"] == len("a rejected text \u00e9\u00e9".encode())
    assert cut["_cut"]["meta"]["bytes"] == len(json.dumps({"k": "v" * 300})) and cut["_meta_prefix"].startswith('{"k": "vvv')
    assert rows[1]["text"] == "a kept text that is long enough" and rows[1]["meta"] is None
    plain = RowBatch(1)
    plain.add("x", "text", "s")
    table = plain.emit()
    assert cut_rows(table, opts) is table   # nothing over: the table as it was


def test_a_parquet_text_over_the_cap_is_rejected_with_a_prefix(tmp_path):
    big = "word " * 400_000   # 2 MB
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"id": ["a", "big", "c"], "text": ["fine text", big, "more text"]}), path)
    opts = InputConfig(paths=["-"], max_doc_bytes=CAP, reject_text_bytes=KEEP)
    rows = [r for t in read_file(InputFile(str(path), "big.parquet", "parquet"), opts) for r in t.to_pylist()]
    assert [(r["id"], r["reject_reason"]) for r in rows] == [("a", None), ("big", "too_large"), ("c", None)]
    assert rows[1]["text"] == big[:KEEP] and rows[1]["num_chars"] == KEEP
    note = json.loads(rows[1]["meta"])["_cut"]["text"]
    assert note == {"bytes": len(big), "sha256": hashlib.sha256(big.encode()).hexdigest()}


def test_rows_rejected_at_read_are_not_tokenized():
    b = RowBatch(10)
    b.add("a", "some words to count", "s")
    b.add("b", "{not json", "s", reason="invalid_json")
    table = count_tokens(b.emit())
    assert table["num_tokens"].to_pylist()[1] == 0 and table["num_tokens"].to_pylist()[0] > 0
