"""Readers on bad input, case by case, with the exact rows each must give: lone surrogates in
JSON, byte-order marks and CRLF, truncated .zst/.gz/.bz2/.xz, cut and corrupt WARC files, empty
files of every format, mistyped Parquet columns, odd JSON values, and a reader that fails."""
from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tokenmill.engine.config import InputConfig
from tokenmill.engine.io import readers
from tokenmill.engine.io.readers import InputFile, detect_format, read_file
from tokenmill.engine.schema import DOCUMENT_SCHEMA

REPO = Path(__file__).resolve().parents[1]
OPTS = InputConfig(paths=["unused"], batch_rows=50)


def read(path: Path, opts=OPTS, fmt=None) -> list[dict]:
    tables = list(read_file(InputFile(str(path), path.name, fmt or detect_format(str(path))), opts))
    assert all(t.schema == DOCUMENT_SCHEMA for t in tables)
    return [r for t in tables for r in t.to_pylist()]


def summary(rows: list[dict]) -> list[tuple]:
    return [(r["id"], r["reject_reason"]) for r in rows]


def file_error(rows: list[dict]) -> tuple[str, str]:
    """(kind, error) of the file's one file-error row, which comes last."""
    kinds = [r for r in rows if r["reject_reason"] in ("unreadable_file", "truncated_file")]
    assert len(kinds) == 1 and kinds[0] is rows[-1]
    return rows[-1]["reject_reason"], json.loads(rows[-1]["meta"])["error"]


def records(n: int, size: int = 200) -> list[dict]:
    return [{"id": f"r{i}", "text": f"record {i} " + "words of text " * (size // 14)} for i in range(n)]


def jsonl(recs: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


# -- 1. lone surrogates ----------------------------------------------------------------------------
def test_lone_surrogate_in_text_is_rejected_and_stored_with_replacement(tmp_path):
    lines = [
        rb'{"id": "s1", "text": "broken \ud800 surrogate in scraped text"}',
        rb'{"id": "low", "text": "a low one \udc00 alone"}',
        rb'{"id": "pair", "text": "an emoji \ud83d\ude00 is a valid pair"}',
        rb'{"id": "fields\udfff", "text": "good text", "url": "http://x.org/\ud800", "lang": "\udc80"}',
        rb'{"id": "nul", "text": "a nul \u0000 and \ud800"}',
        json.dumps({"id": "plain", "text": "a normal record"}).encode(),
    ]
    path = tmp_path / "surrogates.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = read(path)
    assert summary(rows) == [("s1", "invalid_unicode"), ("low", "invalid_unicode"), ("pair", None),
                             ("fields\ufffd", None), ("nul", "contains_nul"), ("plain", None)]
    assert rows[0]["text"] == "broken \ufffd surrogate in scraped text"
    assert rows[1]["text"] == "a low one \ufffd alone"
    assert rows[2]["text"] == "an emoji \U0001F600 is a valid pair"
    assert rows[3]["url"] == "http://x.org/\ufffd" and json.loads(rows[3]["meta"]) == {"lang": "\ufffd"}
    assert rows[4]["text"] == "a nul \x00 and \ufffd"
    assert [r["num_chars"] for r in rows] == [len(r["text"]) for r in rows]


# -- 2. byte-order marks, CRLF, odd lines ----------------------------------------------------------
def test_bom_and_crlf_lines_read_as_records(tmp_path):
    recs = records(3)
    path = tmp_path / "bom.jsonl"
    # a BOM at the start of the file, CRLF endings, and a second file's BOM where files were joined
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(recs[0]).encode() + b"\r\n" + json.dumps(recs[1]).encode()
                     + b"\r\n\xef\xbb\xbf" + json.dumps(recs[2]).encode())
    rows = read(path)
    assert summary(rows) == [("r0", None), ("r1", None), ("r2", None)]
    assert [r["text"] for r in rows] == [r["text"] for r in recs]


def test_odd_json_values_and_lines(tmp_path):
    lines = [
        b"[" * 100_000 + b"]" * 100_000,                   # nested too deeply for json: invalid_json
        b'{"id": "big", "text": ' + b"9" * 5000 + b"}",    # an int too long for Python: invalid_json
        b'{"id": "nan", "text": NaN}',                     # a number: missing_text
        b'{"id": 12, "text": ["a", "list"]}',              # missing_text; id as a string
        b'{"id": {"k": [1, 2]}, "text": "id is an object", "url": 5}',
        b'{"id": null, "text": true}',
        b'{"id": "nul", "text": "a\\u0000b"}',
        b'{"id": "crlf-invalid", "text": "unterminated\r',
        b'{"id": "big-text", "text": "' + b"long text " * 30_000 + b'"}',  # over the cap: streamed past
        b'{"id": "' + "\u00e9".encode() * 3 + b'", "text": "ok"}',
        b'{"id": "raw-nul", "text": "a\x00b"}',           # a raw control character in a string: invalid_json
        bytes(range(256)).replace(b"\n", b""),            # binary garbage: invalid_utf8
    ]
    path = tmp_path / "values.jsonl"
    path.write_bytes(b"\n".join(lines))  # no newline after the last line
    rows = read(path, InputConfig(paths=["unused"], max_doc_bytes=250_000))
    assert summary(rows) == [("values.jsonl:0", "invalid_json"), ("values.jsonl:1", "invalid_json"),
                             ("nan", "missing_text"), ("12", "missing_text"), ('{"k": [1, 2]}', None),
                             ("values.jsonl:5", "missing_text"), ("nul", "contains_nul"),
                             ("values.jsonl:7", "invalid_json"), ("big-text", "too_large"), ("\u00e9" * 3, None),
                             ("values.jsonl:10", "invalid_json"), ("values.jsonl:11", "invalid_utf8")]
    assert [rows[i]["text"] for i in (2, 3, 5)] == ["NaN", '["a", "list"]', "true"]
    assert rows[4]["url"] is None
    assert rows[7]["text"] == '{"id": "crlf-invalid", "text": "unterminated'  # the CR of a CRLF line is dropped


def test_single_huge_line_without_newline(tmp_path):
    text = "All work and no play makes Jack a dull boy. " * 300_000  # 13 MB, over the 10 MB limit
    line = json.dumps({"id": "huge", "text": text}).encode()
    path = tmp_path / "huge.jsonl.gz"
    path.write_bytes(gzip.compress(line, 1))
    rows = read(path)   # streamed past: the reject keeps the text's first 64 KiB, the line's size and hash
    assert summary(rows) == [("huge", "too_large")] and rows[0]["text"] == text[:64 << 10]
    assert json.loads(rows[0]["meta"])["_cut"] == {"line": {"bytes": len(line), "sha256": hashlib.sha256(line).hexdigest()}}


# -- 3. truncated compressed JSONL -----------------------------------------------------------------
def _complete_lines(prefix: bytes) -> int:
    return prefix.count(b"\n")


@pytest.mark.parametrize("fraction", [0.1, 0.37, 0.5, 0.83, 0.999])
def test_truncated_zst_keeps_every_complete_record(tmp_path, fraction):
    recs = records(300)
    data = zstandard.ZstdCompressor(write_checksum=True).compress(jsonl(recs))
    cut = int(len(data) * fraction)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(data[:cut])
    complete = _complete_lines(zstandard.ZstdDecompressor().decompressobj().decompress(data[:cut]))
    rows = read(path)
    assert summary(rows[:-1]) == [(f"r{i}", None) for i in range(complete)]
    kind, error = file_error(rows)
    assert kind == ("truncated_file" if complete else "unreadable_file")
    assert f"cut short at byte {cut}" in error and (f"{complete} records were read" in error or not complete)


def test_multi_frame_and_multi_member_files_read_fully(tmp_path):
    recs = records(120)
    parts = [jsonl(recs[:40]), jsonl(recs[40:80]), jsonl(recs[80:])]
    comp = zstandard.ZstdCompressor()
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"xyz"
    (tmp_path / "frames.jsonl.zst").write_bytes(comp.compress(parts[0]) + skippable + comp.compress(parts[1])
                                                + comp.compress(parts[2]))
    (tmp_path / "members.jsonl.gz").write_bytes(b"".join(gzip.compress(p) for p in parts) + b"\0" * 64)
    (tmp_path / "streams.jsonl.bz2").write_bytes(b"".join(bz2.compress(p) for p in parts))
    (tmp_path / "streams.jsonl.xz").write_bytes(b"".join(lzma.compress(p) for p in parts))
    for name in ("frames.jsonl.zst", "members.jsonl.gz", "streams.jsonl.bz2", "streams.jsonl.xz"):
        assert summary(read(tmp_path / name)) == [(r["id"], None) for r in recs], name


@pytest.mark.parametrize("suffix,compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)])
def test_truncated_gz_bz2_xz_are_reported(tmp_path, suffix, compress):
    recs = records(10_000)  # 2 MB: more than one 900 kB bzip2 block
    data = compress(jsonl(recs))
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(data[: len(data) * 3 // 4])
    rows = read(path)
    kind, error = file_error(rows)
    assert kind == "truncated_file" and "cut short" in error
    kept = summary(rows[:-1])
    assert 0 < len(kept) < len(recs) and kept == [(f"r{i}", None) for i in range(len(kept))]


def test_corrupt_gzip_keeps_everything_before_the_damage(tmp_path):
    recs = records(3000)
    content = jsonl(recs)
    data = bytearray(gzip.compress(content))
    pos = len(data) // 2
    data[pos] ^= 0xFF
    path = tmp_path / "flipped.jsonl.gz"
    path.write_bytes(bytes(data))
    before = _complete_lines(zlib.decompressobj(31).decompress(bytes(data[:pos])))
    rows = read(path)
    kind, error = file_error(rows)
    assert kind == "truncated_file" and "corrupt gzip data" in error
    got = [r["id"] for r in rows[:-1] if r["reject_reason"] is None]
    assert got[:before] == [f"r{i}" for i in range(before)] and before > 1000


def test_gzip_with_trailing_garbage_keeps_its_records_and_is_reported(tmp_path):
    recs = records(20)
    path = tmp_path / "garbage_after.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(recs)) + b"this is not gzip")
    rows = read(path)
    assert summary(rows[:-1]) == [(r["id"], None) for r in recs]
    assert file_error(rows)[0] == "truncated_file"


# -- 4. WARC ---------------------------------------------------------------------------------------
def _members(data: bytes) -> list[int]:
    """Start offsets of the gzip members of a .warc.gz (one record each)."""
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        pos = len(data) - len(d.unused_data)
    return starts


@pytest.fixture(scope="module")
def warc_gz() -> bytes:
    return (REPO / "configs" / "sample" / "sample.warc.gz").read_bytes()


@pytest.fixture(scope="module")
def warc_rows(warc_gz, tmp_path_factory) -> list[dict]:
    path = tmp_path_factory.mktemp("warc") / "sample.warc.gz"
    path.write_bytes(warc_gz)
    rows = read(path)
    assert len(rows) == 22 and not any(r["reject_reason"] in ("truncated_file", "unreadable_file") for r in rows)
    return rows


def doc(row: dict) -> tuple:
    """A row without the file's name (source, row key)."""
    return row["id"], row["text"], row["url"], row["meta"], row["reject_reason"]


def docs(rows: list[dict]) -> list[tuple]:
    return [doc(r) for r in rows]


def _responses_before(data: bytes, offset: int) -> int:
    """How many response records end before ``offset``."""
    import io

    from fastwarc.warc import ArchiveIterator

    recs = [(str(r.record_type), r.stream_pos) for r in ArchiveIterator(io.BytesIO(data), parse_http=False)]
    ends = [s for _, s in recs[1:]] + [len(data)]
    return sum(1 for (t, _), e in zip(recs, ends) if "response" in t and e <= offset)


def test_truncated_warc_gz_is_reported_at_every_kind_of_cut(tmp_path, warc_gz, warc_rows):
    starts = _members(warc_gz)
    cuts = sorted({s + d for s in starts[1::3] for d in (-3, 5, 200)} | {len(warc_gz) - 1, 30})
    path = tmp_path / "sample.warc.gz"
    for cut in cuts:
        path.write_bytes(warc_gz[:cut])
        rows = read(path)
        kept = _responses_before(warc_gz, cut)
        # a record whose content was all decoded before the cut (only its member's trailer cut) may be kept too
        assert rows[:-1] in (warc_rows[:kept], warc_rows[:kept + 1]), cut
        kind, error = file_error(rows)
        assert kind == ("truncated_file" if len(rows) > 1 else "unreadable_file") and "cut short" in error, cut


def test_warc_gz_cut_between_members_is_a_shorter_valid_file(tmp_path, warc_gz, warc_rows):
    """A cut exactly between two records leaves a valid WARC: nothing can tell it was longer."""
    path = tmp_path / "sample.warc.gz"
    for cut in _members(warc_gz)[2::3]:
        path.write_bytes(warc_gz[:cut])
        kept = _responses_before(warc_gz, cut)
        rows = read(path)
        if kept:
            assert rows == warc_rows[:kept], cut
        else:
            assert summary(rows) == [("sample.warc.gz:unreadable_file", "unreadable_file")], cut


def test_warc_gz_with_a_corrupt_member_in_the_middle(tmp_path, warc_gz, warc_rows):
    starts = _members(warc_gz)
    member = starts[20]  # a response's member
    data = bytearray(warc_gz)
    data[member + 40] ^= 0x55
    path = tmp_path / "corrupt.warc.gz"
    path.write_bytes(bytes(data))
    rows = read(path)
    kept = _responses_before(warc_gz, member)
    assert 0 < kept < 22 and docs(rows[:-1]) == docs(warc_rows[:kept])
    kind, error = file_error(rows)
    assert kind == "truncated_file" and f"member that starts at byte {member}" in error


def test_plain_warc_cut_inside_a_record_or_header(tmp_path, warc_gz, warc_rows):
    plain = gzip.decompress(warc_gz)
    header = plain.index(b"WARC/1.0", 200_000)
    path = tmp_path / "sample.warc"
    cuts = [(300_000, "is cut short"), (header + 40, "ends inside a record"), (len(plain) - 1, "ends inside")]
    for cut, what in cuts:
        path.write_bytes(plain[:cut])
        rows = read(path)
        kept = _responses_before(plain, cut)
        assert docs(rows[:-1]) == docs(warc_rows[:kept]), cut
        kind, error = file_error(rows)
        assert kind == "truncated_file" and what in error, (cut, error)
    path.write_bytes(plain)
    assert docs(read(path)) == docs(warc_rows)


def test_warc_with_junk_between_records(tmp_path, warc_gz, warc_rows):
    plain = gzip.decompress(warc_gz)
    at = plain.index(b"WARC/1.0", 300_000)
    path = tmp_path / "junk.warc"
    path.write_bytes(plain[:at] + b"junk that is no WARC header\r\n" * 3 + plain[at:])
    rows = read(path)
    kept = _responses_before(plain, at)
    assert docs(rows[:-1]) == docs(warc_rows[:kept])
    assert file_error(rows)[0] == "truncated_file"


# -- 5. empty files --------------------------------------------------------------------------------
@pytest.mark.parametrize("name,content", [
    ("empty.jsonl", b""), ("empty.jsonl.gz", b""), ("empty.jsonl.zst", b""), ("empty.parquet", b""),
    ("empty.warc.gz", b""), ("empty.warc", b""), ("empty_member.jsonl.gz", gzip.compress(b"", mtime=0)),
    ("blank.jsonl", b"\n  \n\r\n"), ("not_gzip.jsonl.gz", b"plain text, not gzip"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_empty_or_undecodable_file_is_unreadable(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    rows = read(path)
    assert summary(rows) == [(f"{name}:unreadable_file", "unreadable_file")]
    assert json.loads(rows[0]["meta"])["path"] == str(path)


def test_parquet_without_rows_is_unreadable(tmp_path):
    path = tmp_path / "no_rows.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), path)
    kind, error = file_error(read(path))
    assert kind == "unreadable_file" and "no row" in error


# -- Parquet columns -------------------------------------------------------------------------------
def test_parquet_mistyped_and_invalid_columns(tmp_path):
    bad_utf8 = pa.array([b"fine text", b"caf\xe9", None, b"\xff\xfe"], pa.binary())
    decoded = ([None, "invalid_utf8", "missing_text", "invalid_utf8"], ["fine text", "caf\ufffd", None, "\ufffd\ufffd"])
    cases = {
        "binary": (bad_utf8, *decoded),
        "bad_string": (bad_utf8.view(pa.string()), *decoded),
        "int": (pa.array([1, 42, None, 7]), ["missing_text"] * 4, ["1", "42", None, "7"]),
        "list": (pa.array([["a"], [], None, ["b"]]), ["missing_text"] * 4, ['["a"]', "[]", None, '["b"]']),
        "struct": (pa.array([{"x": 1}, {"x": None}, None, {"x": 2}]), ["missing_text"] * 4,
                   ['{"x": 1}', '{"x": null}', None, '{"x": 2}']),
        "all_null": (pa.nulls(4), ["missing_text"] * 4, [None] * 4),
        "dictionary": (pa.array(["a text", " ", None, "a text"]).dictionary_encode(),
                       [None, "empty_text", "missing_text", None], ["a text", " ", None, "a text"]),
    }
    ids = pa.array([{"k": 1}, None, {"k": 2}, {"k": 3}])
    urls = pa.array([1, 2, 3, 4])
    other = pa.array([b"\xfe", b"o", None, b"p"]).view(pa.string())  # invalid UTF-8 in a meta column
    for name, (text, reasons, texts) in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"id": ids, "text": text, "url": urls, "other": other}), path)
        rows = read(path)
        assert [r["reject_reason"] for r in rows] == reasons, name
        assert [r["text"] for r in rows] == texts, name
        assert [r["id"] for r in rows] == ['{"k": 1}', f"{name}.parquet:1", '{"k": 2}', '{"k": 3}']
        assert [r["url"] for r in rows] == [None] * 4
        assert [r["meta"] for r in rows] == ['{"other": "\ufffd"}', '{"other": "o"}', None, '{"other": "p"}']


def test_an_empty_id_is_no_id_in_every_format(tmp_path):
    """A dedup reason names the document kept by its id: an empty id takes the row key, as a
    missing or null one does (JSONL, Parquet string and dictionary ids, and a line too long to keep)."""
    text = "the same words in every record " * 3
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "", "text": text}, {"text": text}, {"id": None, "text": text}, {"id": " ", "text": text}, {"id": 0, "text": text}]))
    assert [r["id"] for r in read(tmp_path / "e.jsonl")] == ["e.jsonl:0", "e.jsonl:1", "e.jsonl:2", " ", "0"]
    for name, ids in (("s", pa.array(["", None, "x"])), ("d", pa.array(["", None, "x"]).dictionary_encode())):
        pq.write_table(pa.table({"id": ids, "text": [text] * 3}), tmp_path / f"{name}.parquet")
        assert [r["id"] for r in read(tmp_path / f"{name}.parquet")] == [f"{name}.parquet:0", f"{name}.parquet:1", "x"]
    long = {"id": "", "text": "x" * 2000}
    (tmp_path / "long.jsonl").write_text(json.dumps(long) + "\n")
    rows = read(tmp_path / "long.jsonl", InputConfig(paths=["unused"], max_doc_bytes=1024))
    assert [(r["id"], r["reject_reason"]) for r in rows] == [("long.jsonl:0", "too_large")]


def test_parquet_corrupt_row_group_loses_only_that_group(tmp_path):
    table = pa.table({"id": [f"b{i}" for i in range(100)], "text": [f"book passage {i} " * 20 for i in range(100)]})
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=25, use_dictionary=False)
    col = pq.ParquetFile(path).metadata.row_group(1).column(1)  # the text of rows 25-49
    data = bytearray(path.read_bytes())
    data[col.data_page_offset] ^= 0xFF  # its page header
    path.write_bytes(bytes(data))
    rows = read(path)
    kind, error = file_error(rows)
    assert kind == "truncated_file" and "1 of 4 row groups could not be read (1)" in error
    assert [r["id"] for r in rows[:-1]] == [f"b{i}" for i in range(100) if not 25 <= i < 50]
    assert [r["row_key"] for r in rows[:-1]][25] == "groups.parquet:50"


# -- 6. a reader that fails -------------------------------------------------------------------------
def test_unknown_format_fails_only_its_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(jsonl(records(2)))
    rows = read(path, fmt="csv")
    assert summary(rows) == [("x.jsonl:unreadable_file", "unreadable_file")] and "KeyError" in file_error(rows)[1]


class PanicException(BaseException):
    """Stands for pyo3's panic exception (a ``BaseException``) that native parsers raise."""


def _failing_reader(error: BaseException):
    def reader(f, opts):
        yield from readers.read_jsonl(f, opts)
        raise error
    return reader


@pytest.mark.parametrize("error", [RuntimeError("reader bug"), PanicException("native panic")])
def test_a_reader_error_keeps_the_rows_and_reports_the_file(tmp_path, monkeypatch, error):
    path = tmp_path / "x.jsonl"
    path.write_bytes(jsonl(records(3)))
    monkeypatch.setitem(readers.READERS, "jsonl", _failing_reader(error))
    rows = read(path)
    assert summary(rows[:-1]) == [("r0", None), ("r1", None), ("r2", None)]
    kind, message = file_error(rows)
    assert kind == "truncated_file" and message.startswith(f"{type(error).__name__}: {error}")


def test_an_interrupt_is_not_swallowed(tmp_path, monkeypatch):
    path = tmp_path / "x.jsonl"
    path.write_bytes(jsonl(records(1)))
    monkeypatch.setitem(readers.READERS, "jsonl", _failing_reader(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        read(path)
