"""Fuzzing every reader with seeded damage to real files: no damage makes a reader raise, and
nothing vanishes: every record intact in the damaged file comes out (kept or rejected) as it does
from the undamaged file, and a file that lost records says so with a file-error row. Random
values in JSONL fields and random Parquet column types give one row per record with the reject
reason worked out independently. A last test runs one pipeline over a folder of damaged files.

The cases are seeded (``random.Random``), so a failure names a case that can be replayed;
``FUZZ_SEED=<n>`` runs another set of cases.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from pipeline_helpers import make_pipeline, read_manifest_files
from reader_fuzz_cases import (
    Damage,
    check,
    compressed_jsonl_expect,
    damage,
    parquet_expect,
    plain_jsonl_expect,
    read_rows,
    warc_expect,
)

from tokenmill.engine.run import run_pipeline


@pytest.fixture
def engine() -> str:
    """The local executor only: the Ray runs of these algorithms are the parity tests (local,
    Spark) and the child-process tests below."""
    return "local"


REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "configs" / "sample"
SEED = int(os.environ.get("FUZZ_SEED", "6"))


def _small_jsonl(shared: Path) -> bytes:
    """Real web documents cut to 300 characters, so that damage lands in many lines."""
    lines = [json.loads(item) for item in open(shared / "web_dev.jsonl", encoding="utf-8")][:150]
    return b"".join(json.dumps({**r, "text": r["text"][:300]}, ensure_ascii=False).encode() + b"\n" for r in lines)


def _zstd_frames(content: bytes, frames: int = 3) -> bytes:
    """Content as several zstd frames with checksums (as the zstd tool writes them)."""
    cut = [len(content) * i // frames for i in range(frames + 1)]
    comp = zstandard.ZstdCompressor(write_checksum=True)
    return b"".join(comp.compress(content[a:b]) for a, b in zip(cut, cut[1:]))


@pytest.fixture(scope="module")
def originals(tmp_path_factory, shared_data) -> dict[str, Path]:
    """The undamaged files: real samples as they are, and a few made from real data."""
    d = tmp_path_factory.mktemp("originals")
    for name in ("recrawl.jsonl", "web.jsonl.gz", "udhr.jsonl.zst", "books.parquet", "sample.warc.gz"):
        shutil.copy(SAMPLE / name, d / name)
    small = _small_jsonl(shared_data)
    (d / "small.jsonl").write_bytes(small)
    (d / "small.jsonl.gz").write_bytes(gzip.compress(small, mtime=0))
    (d / "small.jsonl.zst").write_bytes(_zstd_frames(small))
    pq.write_table(pq.read_table(SAMPLE / "books.parquet"), d / "books_groups.parquet", row_group_size=20,
                   compression="snappy")
    (d / "sample.warc").write_bytes(gzip.decompress((SAMPLE / "sample.warc.gz").read_bytes()))
    return {p.name: p for p in d.iterdir()}


ALL = ("cut", "flip", "insert")
#: file -> (cases, damage kinds); a plain .warc is only cut: nothing could tell a flipped header byte
FUZZ = {
    "recrawl.jsonl": (25, ALL), "small.jsonl": (40, ALL), "small.jsonl.gz": (40, ALL), "small.jsonl.zst": (40, ALL),
    "web.jsonl.gz": (25, ALL), "udhr.jsonl.zst": (25, ALL), "books.parquet": (30, ALL),
    "books_groups.parquet": (40, ALL), "sample.warc.gz": (40, ALL), "sample.warc": (25, ("cut",)),
}


def expect_for(path: Path, clean: list[dict], d: Damage):
    name = path.name
    data = path.read_bytes()
    if name.endswith(".jsonl"):
        return plain_jsonl_expect(data, clean, d)
    if name.endswith((".jsonl.gz", ".jsonl.zst")):
        return compressed_jsonl_expect(data, "gzip" if name.endswith(".gz") else "zstd", clean, d)
    if name.endswith(".parquet"):
        return parquet_expect(path, clean, d)
    return warc_expect(data, clean, d)


@pytest.mark.parametrize("name", list(FUZZ))
def test_damaged_file_loses_nothing_unreported(name, originals, tmp_path):
    path = originals[name]
    clean, errors = read_rows(path)
    assert clean and not errors, f"the undamaged {name} reads cleanly"
    cases, kinds = FUZZ[name]
    rng = random.Random(f"{SEED}:{name}")
    data = path.read_bytes()
    reported = hit = 0
    for i in range(cases):
        d = damage(data, rng, kinds)
        target = tmp_path / name  # same name: ids that derive from the source stay comparable
        target.write_bytes(d.data)
        rows, errs = read_rows(target)
        expect = expect_for(path, clean, d)
        check(f"{name} case {i} {d.name}", rows, errs, expect)
        reported += bool(errs)
        hit += len(expect.kept) < len(clean)
    assert hit > cases // 2, "most cases damage records"
    assert reported or name.endswith(".jsonl"), "damage to a compressed or binary file is noticed"


# -- random values ---------------------------------------------------------------------------------
def _random_value(rng: random.Random, texts: list[str], depth: int = 0):
    kind = rng.choice(["str", "str", "str", "none", "bool", "int", "bigint", "float", "list", "dict", "weird"])
    if kind == "str":
        return rng.choice(texts)[: rng.randint(0, 400)]
    if kind == "weird":
        return rng.choice(["", "   \n\t", "nul\x00byte", "\ufeffbom start", "emoji \U0001F600", "lone \ud800 high",
                           "lone \udc00 low", "\udfff", "mix \ud83d\ude00 \ud83d ok"])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-1000, 1000)
    if kind == "bigint":
        return rng.randint(10 ** 20, 10 ** 60)
    if kind == "float":
        return rng.choice([0.5, -1e300, float("nan"), float("inf")])
    if depth > 3:
        return None
    if kind == "list":
        return [_random_value(rng, texts, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}": _random_value(rng, texts, depth + 1) for i in range(rng.randint(0, 3))}


def _fixed(value):
    """A value as it is stored: lone surrogates in its strings (and keys) as U+FFFD."""
    if isinstance(value, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    if isinstance(value, list):
        return [_fixed(v) for v in value]
    if isinstance(value, dict):
        return {_fixed(k): _fixed(v) for k, v in value.items()}
    return value


def _text_reason(text) -> object:
    """The read-time reason for a text value, worked out from the value alone."""
    if not isinstance(text, str):
        return "missing_text"
    if not text.strip():
        return "empty_text"
    if "\x00" in text:
        return "contains_nul"
    return "invalid_unicode" if text != _fixed(text) else None


def _expected_id(given, key: str) -> str:
    if given is None or given == "":   # no id: the row key
        return key
    if isinstance(given, (dict, list)):
        return _fixed(json.dumps(given, ensure_ascii=False, sort_keys=True))
    return _fixed(given) if isinstance(given, str) else str(given)


def test_random_json_values_give_one_row_each(tmp_path, shared_data):
    texts = [json.loads(item)["text"] for item in open(shared_data / "web_dev.jsonl", encoding="utf-8")][:50]
    rng = random.Random(SEED)
    records, lines = [], []
    for _ in range(400):
        rec = {k: _random_value(rng, texts) for k in ("id", "text", "url", "extra") if rng.random() < 0.85}
        line = json.dumps(rec, ensure_ascii=rng.random() < 0.5)
        if line != _fixed(line):  # lone surrogates can only be written as \u escapes
            line = json.dumps(rec)
        lines.append(line.encode())
        records.append(json.loads(line))  # as JSON reads it: an escaped surrogate pair is one character
    path = tmp_path / "values.jsonl"
    path.write_bytes(b"\r\n".join(lines[:200]) + b"\r\n" + b"\n".join(lines[200:]))  # CRLF and LF lines
    rows, errors = read_rows(path)
    assert not errors and len(rows) == len(records)
    rows.sort(key=lambda r: int(r["row_key"].rsplit(":", 1)[1]))
    for i, (rec, row) in enumerate(zip(records, rows)):
        key = f"values.jsonl:{i}"
        assert row["row_key"] == key
        assert row["reject_reason"] == _text_reason(rec.get("text")), (i, rec.get("text"), row["reject_reason"])
        assert row["id"] == _expected_id(rec.get("id"), key), i
        assert row["url"] == (_fixed(rec["url"]) if isinstance(rec.get("url"), str) else None), i
        if isinstance(rec.get("text"), str):
            assert row["text"] == _fixed(rec["text"]), i
        expected_meta = {"extra": rec["extra"]} if "extra" in rec else None
        assert row["meta"] == (_fixed(json.dumps(expected_meta, ensure_ascii=False, sort_keys=True))
                               if expected_meta else None), i


# -- random Parquet column types ---------------------------------------------------------------------
STRING_KINDS = ["string", "large_string", "dictionary", "binary", "bad_string"]
PARQUET_KINDS = STRING_KINDS + ["int", "float", "list", "struct", "null"]


def _cells(values: list, rng: random.Random, kind: str) -> list:
    """The cells of a column of ``kind``: the text values, as bytes (some not UTF-8) for the
    binary kinds."""
    if kind in ("binary", "bad_string"):
        return [None if v is None else v.encode() + (b"\xff\xfe" if rng.random() < 0.3 else b"") for v in values]
    return values


def _column(kind: str, cells: list) -> pa.Array:
    """A Parquet column of ``kind`` made from text cells (``_cells``)."""
    if kind in ("string", "large_string"):
        return pa.array(cells, getattr(pa, kind)())
    if kind == "dictionary":
        return pa.array(cells, pa.string()).dictionary_encode()
    if kind == "binary":
        return pa.array(cells, pa.binary())
    if kind == "bad_string":  # a string column holding invalid UTF-8: Parquet does not check it
        return pa.array(cells, pa.binary()).view(pa.string())
    if kind == "int":
        return pa.array([None if v is None else len(v) for v in cells], pa.int64())
    if kind == "float":
        return pa.array([None if v is None else len(v) / 3 for v in cells], pa.float64())
    if kind == "list":
        return pa.array([None if v is None else v.split()[:3] for v in cells], pa.list_(pa.string()))
    if kind == "struct":
        return pa.array([None if v is None else {"s": v[:20], "n": len(v)} for v in cells])
    return pa.nulls(len(cells))


def _parquet_row(cell, kind: str) -> tuple:
    """(reason, text) a text cell must give, worked out from the cell alone."""
    if kind not in STRING_KINDS:
        return "missing_text", None if cell is None or kind == "null" else "skip"
    text = cell
    if isinstance(cell, bytes):
        try:
            text = cell.decode("utf-8")
        except UnicodeDecodeError:
            return "invalid_utf8", cell.decode("utf-8", "replace")
    if text is None:
        return "missing_text", None
    if not text.strip():
        return "empty_text", text
    return ("contains_nul" if "\x00" in text else None), text


def test_random_parquet_column_types(tmp_path, shared_data):
    texts = [json.loads(item)["text"] for item in open(shared_data / "web_dev.jsonl", encoding="utf-8")][:60]
    texts += ["", "  \n", "nul\x00byte"]
    rng = random.Random(SEED)
    for case in range(40):
        n = rng.randint(1, 40)
        values = [None if rng.random() < 0.1 else rng.choice(texts)[: rng.randint(0, 300)] for _ in range(n)]
        kinds = {c: rng.choice(PARQUET_KINDS) for c in ("text", "id", "url", "extra")}
        cells = {c: _cells(values if c == "text" else [None if v is None else f"{c}-{i}" for i, v in enumerate(values)],
                           rng, k) for c, k in kinds.items()}
        table = pa.table({c: _column(k, cells[c]) for c, k in kinds.items()})
        path = tmp_path / f"case{case}.parquet"
        pq.write_table(table, path, row_group_size=rng.randint(1, 50))
        rows, errors = read_rows(path)
        assert not errors and len(rows) == n, (case, kinds, errors)
        rows.sort(key=lambda r: int(r["row_key"].rsplit(":", 1)[1]))
        for i, row in enumerate(rows):
            reason, text = _parquet_row(cells["text"][i], kinds["text"])
            assert row["reject_reason"] == reason, (case, kinds, i, cells["text"][i])
            if text != "skip":
                assert row["text"] == text, (case, kinds, i)
            assert row["id"]  # every row has an id (its row key where none is given)


# -- one pipeline over damaged files of every format -----------------------------------------------
def test_pipeline_over_damaged_files(engine, originals, tmp_path):
    """One run over 30 damaged files: it completes, every intact record of every file is in
    data/ or rejects/, each file's rows all arrive, and exactly the files the reader reports
    (at least those that must be) are in file_errors."""
    src = tmp_path / "in"
    src.mkdir()
    rng = random.Random(f"{SEED}:pipeline")
    cases = {}  # damaged file name -> (its path, what must survive)
    for name, path in sorted(originals.items()):
        clean, _ = read_rows(path)
        stem, _, ext = name.partition(".")
        for i in range(3):
            d = damage(path.read_bytes(), rng, FUZZ[name][1])
            target = src / f"{stem}-{i}.{ext}"
            target.write_bytes(d.data)
            cases[target.name] = (target, expect_for(path, clean, d))
    out = tmp_path / "out"
    pipe, _ = make_pipeline([str(src / "*")], out)
    report = run_pipeline(pipe, progress=False, engine=engine).report
    assert json.loads((out / "_manifest.json").read_text())["complete"]
    rows = read_manifest_files(out, "data/").to_pylist() + read_manifest_files(out, "rejects/").to_pylist()
    seen = {(r["source"], r["id"], r["text"]) for r in rows}
    reported = {Path(e["path"]).name for e in report["file_errors"]}
    assert reported
    for name, (target, expect) in cases.items():
        direct_rows, direct_errors = read_rows(target)
        lost = [r["id"] for r in expect.kept if (name, r["id"], r["text"]) not in seen]
        assert not lost, (name, lost[:3])
        assert (name in reported) == bool(direct_errors), name
        assert name in reported or not expect.reported, name
        arrived = [r for r in rows if r["source"] == name and r.get("reject_reason") not in
                   ("unreadable_file", "truncated_file")]
        assert len(arrived) == len(direct_rows), name
