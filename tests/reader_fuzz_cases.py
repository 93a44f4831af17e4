"""Damaged copies of real input files and what each must give when read: the helpers of the
reader fuzz tests (``test_reader_fuzz.py``).

A case is a real file (``../shared/data``, ``configs/sample``) with one seeded damage: cut at an
offset, a byte flipped, or bytes inserted. What must survive is worked out from the undamaged
file and the damage's offset alone, never from the reader's output: the records that lie wholly
before the damage (for compressed files: the complete lines that the undamaged prefix decodes
to), the others that must come out unless the file is reported, and whether the file can be read
without noticing anything (a reference decode). ``Expect`` holds that; ``check`` compares a
read with it.
"""
from __future__ import annotations

import io
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pyarrow.parquet as pq
import zstandard

from tokenmill.engine.config import InputConfig
from tokenmill.engine.io.decode import FEED
from tokenmill.engine.io.readers import FILE_REASONS, InputFile, detect_format, read_file
from tokenmill.engine.schema import DOCUMENT_SCHEMA

#: small batches, so that damage also meets batch boundaries
OPTS = InputConfig(paths=["unused"], batch_rows=64)
KINDS = ("cut", "flip", "insert")


@dataclass(frozen=True)
class Damage:
    kind: str   # cut | flip | insert
    pos: int    # first damaged byte of the original file
    data: bytes

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.pos}"


def damage(data: bytes, rng: random.Random, kinds=KINDS) -> Damage:
    """One random damage of ``data``: cut before ``pos``, flip the byte at ``pos``, or insert
    1-16 random bytes before it."""
    kind = rng.choice(kinds)
    pos = rng.randrange(len(data))
    if kind == "cut":
        return Damage(kind, pos, data[:pos])
    if kind == "flip":
        return Damage(kind, pos, data[:pos] + bytes([data[pos] ^ rng.randrange(1, 256)]) + data[pos + 1:])
    return Damage(kind, pos, data[:pos] + rng.randbytes(rng.randint(1, 16)) + data[pos:])


def read_rows(path: Path) -> tuple[list[dict], list[dict]]:
    """(record rows, file-error rows) of one file read by the reader; every table it yields
    has the document schema."""
    tables = list(read_file(InputFile(str(path), path.name, detect_format(str(path))), OPTS))
    assert all(t.schema == DOCUMENT_SCHEMA for t in tables)
    rows = [r for t in tables for r in t.to_pylist()]
    return ([r for r in rows if r["reject_reason"] not in FILE_REASONS],
            [r for r in rows if r["reject_reason"] in FILE_REASONS])


def row_tuple(row: dict) -> tuple:
    return row["id"], row["text"], row["reject_reason"], row["url"]


@dataclass
class Expect:
    """What a damaged file must give. ``kept``: rows (as from the undamaged file) that must come
    out unchanged; ``rest``: rows that must come out (the same ``ident``) unless the file has a
    file-error row; ``reported``: True if the file must have one, False if it must not, None if
    either is right; ``count``: the number of record rows when there is no file error."""
    kept: list[dict] = field(default_factory=list)
    rest: list[dict] = field(default_factory=list)
    reported: Optional[bool] = None
    count: Optional[int] = None
    ident: Callable[[dict], object] = lambda r: r["id"]


def check(name: str, rows: list[dict], errors: list[dict], expect: Expect) -> None:
    """Assert a read of a damaged file against what must survive; ``name`` says which case."""
    assert len(errors) <= 1, (name, errors)
    assert len({r["row_key"] for r in rows}) == len(rows), name
    if errors:
        assert errors[0]["reject_reason"] == ("truncated_file" if rows else "unreadable_file"), (name, errors)
    if expect.reported is not None:
        assert bool(errors) == expect.reported, (name, errors)
    have = {row_tuple(r) for r in rows}
    lost = [r["id"] for r in expect.kept if row_tuple(r) not in have]
    assert not lost, (name, f"{len(lost)} intact records lost", lost[:3], errors)
    if not errors:
        idents = {expect.ident(r) for r in rows}
        missing = [expect.ident(r) for r in expect.rest if expect.ident(r) not in idents]
        assert not missing, (name, "records lost without a file error", missing[:3])
        if expect.count is not None:
            assert len(rows) == expect.count, (name, len(rows), expect.count)


# -- JSONL ---------------------------------------------------------------------------------------
def line_spans(content: bytes) -> list[tuple[int, int]]:
    """(start, end) of each line, its newline included."""
    spans, start = [], 0
    while start < len(content):
        end = content.find(b"\n", start)
        end = len(content) if end < 0 else end + 1
        spans.append((start, end))
        start = end
    return spans


def nonblank_lines(content: bytes) -> int:
    return sum(1 for line in content.split(b"\n") if line and not line.isspace())


def lineno(row: dict) -> int:
    return int(row["row_key"].rsplit(":", 1)[1])


def plain_jsonl_expect(content: bytes, clean: list[dict], d: Damage) -> Expect:
    """A plain JSONL file: every line is a row, so nothing can vanish; lines the damage did
    not touch (nor their neighbours' newlines) come out as before."""
    spans = line_spans(content)
    kept = []
    for row in clean:
        start, end = spans[lineno(row)]
        touched = {"cut": end > d.pos, "flip": start - 1 <= d.pos < end, "insert": start <= d.pos < end}[d.kind]
        if not touched:
            kept.append(row)
    lines = nonblank_lines(d.data)
    return Expect(kept=kept, reported=lines == 0, count=lines)


def decode_prefix(data: bytes, codec: str) -> tuple[bytes, bool]:
    """(what decodes from ``data``, whether all of it decodes and every gzip member / zstd
    frame ends); zero bytes between gzip members are padding."""
    new = (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)) if codec == "gzip" else \
        (lambda: zstandard.ZstdDecompressor().decompressobj())
    out, rest = [], data
    while rest:
        rest = rest.lstrip(b"\0") if codec == "gzip" else rest
        if not rest:
            break
        d = new()
        try:
            out.append(d.decompress(rest))
        except (zlib.error, zstandard.ZstdError):
            return b"".join(out), False
        if not d.eof:
            return b"".join(out), False
        rest = d.unused_data
    return b"".join(out), True


def compressed_jsonl_expect(data: bytes, codec: str, clean: list[dict], d: Damage) -> Expect:
    """A compressed JSONL file: the complete lines that the undamaged bytes before ``pos``
    decode to must come out (for corrupt zstd, whose decoder loses what one call had decoded
    when it fails, those one feed earlier); a file that does not decode cleanly must be
    reported; one that does gives a row per non-blank line."""
    safe = d.pos if codec == "gzip" or d.kind == "cut" else max(0, d.pos - FEED)
    complete = decode_prefix(data[:safe], codec)[0].count(b"\n")
    kept = [r for r in clean if lineno(r) < complete]
    content, clean_decode = decode_prefix(d.data, codec)
    if clean_decode:
        lines = nonblank_lines(content)
        return Expect(kept=kept, reported=lines == 0, count=lines)
    return Expect(kept=kept, rest=[r for r in clean if lineno(r) >= complete], reported=True)


# -- Parquet -------------------------------------------------------------------------------------
def _row_group_end(rg) -> int:
    """The byte where a row group's last column chunk ends."""
    ends = []
    for i in range(rg.num_columns):
        c = rg.column(i)
        start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
        ends.append(start + c.total_compressed_size)
    return max(ends)


def parquet_expect(path: Path, clean: list[dict], d: Damage) -> Expect:
    """Rows of the row groups that end before the damage come out unchanged when the footer is
    untouched (a cut always takes the footer: the file must be reported); every row comes out
    (by row key: an undetected flip may change values) unless the file is reported."""
    meta = pq.ParquetFile(path).metadata
    footer_start = path.stat().st_size - 8 - meta.serialized_size
    kept, first = [], 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        if d.kind != "cut" and d.pos < footer_start and _row_group_end(rg) <= d.pos:
            kept += clean[first:first + rg.num_rows]
        first += rg.num_rows
    return Expect(kept=kept, rest=clean, reported=True if d.kind == "cut" else None, ident=lambda r: r["row_key"])


# -- WARC ----------------------------------------------------------------------------------------
def warc_spans(data: bytes) -> list[tuple[str, int, int]]:
    """(record id, start, end) of every record in a .warc or .warc.gz (offsets in the file)."""
    from fastwarc.warc import ArchiveIterator

    starts = [(r.record_id, r.stream_pos) for r in ArchiveIterator(io.BytesIO(data), parse_http=False)]
    ends = [s for _, s in starts[1:]] + [len(data)]
    return [(rid, s, e) for (rid, s), e in zip(starts, ends)]


def warc_expect(data: bytes, clean: list[dict], d: Damage) -> Expect:
    """Responses whose record lies wholly before the damage come out unchanged; unless the file
    is reported, every response comes out unchanged (a .warc.gz checks every byte with its CRC;
    a plain .warc is only cut, never flipped, as nothing could tell a flipped header). A cut
    exactly between two records leaves a valid, shorter WARC: only the records before it count."""
    spans = warc_spans(data)
    end = {rid: e for rid, _, e in spans}
    kept = [r for r in clean if end[r["id"]] <= d.pos]
    between = d.kind == "cut" and d.pos in {s for _, s, _ in spans}
    return Expect(kept=kept, rest=kept if between else clean, ident=row_tuple)
