"""WARC and WET reader (.warc, .warc.gz, .warc.wet.gz): one document per HTTP response record, its
HTML reduced to the main text (``extract.py``: Resiliparse, or trafilatura with a per-page timeout:
``html_extraction_timeout``), and one per conversion record (Common Crawl's WET
files: text/plain already extracted), its text as stored, ``WARC-Refers-To`` (the response it was
made from) in ``meta``. A file may hold both kinds; each is taken by its record type.

The compressed stream is decoded here (``decode.BlockStream``), not by fastwarc, whose gzip reader
ends quietly on a cut file: a .warc.gz cut short or with a corrupt member keeps the records
before the damage and adds a ``truncated_file`` row. The WARC layer is checked too: a response
whose payload is shorter than its headers say, or content that ends inside a record (every
record ends with a blank line), is a cut file; fastwarc's own errors on a corrupt header end the
file the same way. A response that is not text is ``not_text``; one whose HTML cannot be
extracted is ``html_extraction_failed``; one whose HTTP status is not 200 (a redirect, an error page) is
``http_status:<code>`` (``http_status:none`` without HTTP headers), so the report counts them by status.

HTTP bodies are decoded before extraction, here rather than by fastwarc (its ``auto_decode``
ends the whole file quietly at a corrupt body): ``Transfer-Encoding: chunked`` (a body stored
already de-chunked, as some crawlers do, is taken as it is), then ``Content-Encoding`` gzip,
deflate (zlib or raw) and br (the ``brotli`` module, which fastwarc itself requires; it must be
1.2 or later to bound its output). A body that cannot be decoded (corrupt, cut short, a coding
not supported such as zstd, or br without a usable ``brotli``) is rejected as
``undecodable_encoding:<coding>``, the error in ``meta``.

A payload over ``max_record_bytes`` is rejected as ``too_large`` before extraction and is never
held whole: the stored payload is read in pieces, and past the cap (or at once, when the record's
Content-Length is already over it) the rest is streamed past and only counted; the decoders never
give more than the cap either (a gzip bomb inside a record). The reject row keeps at most
``reject_text_bytes`` of the payload as text (nothing when it is compressed) and its size in ``meta``.
"""
from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Optional

import pyarrow as pa

from tokenmill.engine.io.decode import BlockStream, damage_repeats, iter_blocks
from tokenmill.engine.io.extract import ExtractionTimeout, html_text
from tokenmill.engine.io.read_rows import RowBatch, check_text, read_guarded

PIECE = 1 << 20   # payload bytes read at a time
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,15}")
_CODING_NAME = re.compile(r"[a-z0-9][a-z0-9._+-]{0,31}")


class CutRecord(Exception):
    """The WARC content ends inside a record (``at``: the decoded byte where it ended, when known)."""

    def __init__(self, message: str, at: Optional[int] = None):
        super().__init__(message)
        self.at = at


class Undecodable(Exception):
    """A body its coding cannot decode; ``coding`` names the coding."""

    def __init__(self, coding: str, message: str):
        super().__init__(message)
        self.coding = coding


class TooLarge(Exception):
    """A decoded body over the cap; ``head`` is its beginning (at most ``PIECE`` bytes of the
    decoded ``pieces``, which are not joined)."""

    def __init__(self, pieces: list[bytes]):
        super().__init__("the decoded body is over the cap")
        head, size = [], 0
        for piece in pieces:
            if size >= PIECE:
                break
            head.append(piece[:PIECE - size])
            size += len(head[-1])
        self.head = b"".join(head)


# -- reading the stored payload --------------------------------------------------------------------


def read_payload(reader, declared: int, cap: int) -> tuple[bytes, bool, int]:
    """``(payload, whole, size)``: the stored payload read in pieces when at most ``cap`` bytes
    (``whole``); else only its first piece, the rest streamed past and counted, never held. A
    Content-Length over the cap skips at once; a smaller one is not trusted to bound the reading."""
    if declared > cap:
        head = reader.read(min(PIECE, cap))
        return head, False, len(head) + reader.consume()
    pieces, size = [], 0
    while size <= cap:
        piece = reader.read(min(PIECE, cap + 1 - size))
        if not piece:
            return b"".join(pieces), True, size
        pieces.append(piece)
        size += len(piece)
    head = pieces[0]
    del pieces
    return head, False, size + reader.consume()


def check_whole(size: int, rec, count: int, rid: str) -> None:
    """Raises ``CutRecord`` when the payload is shorter than its Content-Length says."""
    if size < rec.content_length:
        raise CutRecord(f"response {count} ({rid}) is cut short: {size} of {rec.content_length} payload bytes")


# -- decoding the HTTP body ------------------------------------------------------------------------


def body_codings(http_headers) -> list[str]:
    """The codings to undo, in the order to undo them: Transfer-Encoding's, then
    Content-Encoding's, each list read backwards (the last one applied comes off first)."""
    out: list[str] = []
    for header in ("Transfer-Encoding", "Content-Encoding"):
        names = [c.strip().lower() for v in http_headers.get_multiple(header) for c in v.split(",")]
        out += [c for c in reversed(names) if c not in ("", "identity", "none")]
    return out


def dechunk(body: bytes, cap: int) -> bytes:
    """A ``Transfer-Encoding: chunked`` body joined (never longer than ``body``: ``cap`` holds). A
    body whose first chunk does not parse was stored de-chunked, as some crawlers do, and is taken
    as it is; after the first chunk, damage is ``Undecodable``. The zero-size chunk must end it."""
    out, pos = [], 0
    while True:
        try:
            size, start = _chunk_line(body, pos)
            end = start + size
            if end > len(body):
                raise Undecodable("chunked", f"the chunk at byte {pos} is cut short ({len(body) - start} of {size} bytes)")
            if size == 0:
                return b"".join(out)   # trailers, if any, are not body
            pos = end + (2 if body.startswith(b"\r\n", end) else 1 if body.startswith(b"\n", end) else 0)
            if pos == end:
                raise Undecodable("chunked", f"no line end after the chunk that ends at byte {end}")
        except Undecodable:
            if not out:
                return body
            raise
        out.append(body[start:end])


def _chunk_line(body: bytes, pos: int) -> tuple[int, int]:
    """(size, where its data starts) of the chunk-size line at ``pos`` (extensions ignored)."""
    eol = body.find(b"\n", pos, pos + 1024)
    size_text = body[pos:eol].split(b";", 1)[0].strip() if eol >= 0 else b""
    if not _CHUNK_SIZE.fullmatch(size_text):
        raise Undecodable("chunked", f"no chunk size at byte {pos} (cut short or corrupt)")
    return int(size_text, 16), eol + 1


def _inflate(body: bytes, cap: int, coding: str, wbits: int) -> bytes:
    """A zlib-family stream (gzip members one after another for gzip), at most ``cap`` bytes."""
    out, size, data = [], 0, body
    while True:
        d = zlib.decompressobj(wbits)
        try:
            piece = d.decompress(data, cap + 1 - size)
        except zlib.error as exc:
            raise Undecodable(coding, f"corrupt {coding} data: {exc}") from None
        out.append(piece)
        size += len(piece)
        if size > cap:
            raise TooLarge(out)
        if not d.eof:
            raise Undecodable(coding, f"{coding} data cut short after {size} decoded bytes")
        data = d.unused_data
        if coding != "gzip" or not data.startswith(b"\x1f\x8b"):
            return b"".join(out)   # bytes after the stream are ignored, as browsers do


def gunzip(body: bytes, cap: int) -> bytes:
    return _inflate(body, cap, "gzip", 16 + zlib.MAX_WBITS)


def inflate(body: bytes, cap: int) -> bytes:
    """``deflate``: a zlib stream as the standard says, or raw deflate as many servers send."""
    zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
    return _inflate(body, cap, "deflate", zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)


def unbrotli(body: bytes, cap: int) -> bytes:
    """``br``, through the ``brotli`` module, its output bounded by ``output_buffer_limit`` (1.2+)."""
    try:
        import brotli
    except ImportError:
        raise Undecodable("br", "the brotli module is not installed") from None
    d = brotli.Decompressor()
    try:
        out = [d.process(body, output_buffer_limit=cap + 1)]
        size = len(out[0])
        while size <= cap and not d.is_finished() and not d.can_accept_more_data():
            out.append(d.process(b"", output_buffer_limit=cap + 1 - size))
            size += len(out[-1])
    except TypeError:
        raise Undecodable("br", "brotli 1.2 or later is needed (a bounded output)") from None
    except brotli.error as exc:
        raise Undecodable("br", f"corrupt br data: {exc}") from None
    if size > cap:
        raise TooLarge(out)
    if not d.is_finished():
        raise Undecodable("br", f"br data cut short after {size} decoded bytes")
    return b"".join(out)


#: coding -> decoder(body, cap); each raises Undecodable or TooLarge
DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "chunked": dechunk, "gzip": gunzip, "x-gzip": gunzip, "deflate": inflate, "br": unbrotli,
}


def decode_body(body: bytes, codings: list[str], cap: int) -> bytes:
    """The body with every coding undone, never over ``cap`` bytes."""
    for coding in codings:
        decoder = DECODERS.get(coding)
        if decoder is None:
            name = coding if _CODING_NAME.fullmatch(coding) else "unknown"
            raise Undecodable(name, f"the coding {coding[:100]!r} is not supported")
        body = decoder(body, cap)
    return body


# -- one record, one row ---------------------------------------------------------------------------


def prefix_text(data: bytes, limit: int) -> str:
    """At most ``limit`` bytes of ``data`` as text, for a reject row (U+FFFD for bad UTF-8)."""
    return data[:limit].decode("utf-8", "replace")


def add_response(b: RowBatch, rec, source: str, count: int, opts) -> None:
    """One response record as one row; raises ``CutRecord`` if its payload is cut short."""
    key = f"{source}:{count}"
    rid = rec.record_id or key
    url = rec.headers.get("WARC-Target-URI")
    http = rec.http_headers
    ctype = (http.get("Content-Type", "") if http else "").lower()
    info = {"warc_date": rec.headers.get("WARC-Date"), "content_type": ctype}
    status = http.status_code if http else None
    if status != 200:   # a redirect, an error page, a response without HTTP headers: counted by status
        check_whole(rec.reader.consume(), rec, count, rid)
        info["http_status"] = status
        b.add(rid, None, source, url, json.dumps(info, sort_keys=True), f"http_status:{status or 'none'}", key)
        return
    if "html" not in ctype and "text/plain" not in ctype:
        check_whole(rec.reader.consume(), rec, count, rid)
        b.add(rid, None, source, url, json.dumps(info, sort_keys=True), "not_text", key)
        return
    cap = opts.max_record_bytes
    body, whole, size = read_payload(rec.reader, rec.content_length, cap)
    check_whole(size, rec, count, rid)
    codings = body_codings(http) if http else []
    if not whole:
        plain = all(c == "chunked" for c in codings)
        info.update(payload_bytes=size, max_record_bytes=cap)
        b.add(rid, prefix_text(body, opts.reject_text_bytes) if plain else None, source, url,
              json.dumps(info, sort_keys=True), "too_large", key)
        return
    text, reason = _decoded_text(body, codings, ctype, info, opts)
    b.add(rid, text, source, url, json.dumps(info, sort_keys=True), reason, key)


def _decoded_text(body: bytes, codings: list[str], ctype: str, info: dict, opts) -> tuple[Optional[str], Optional[str]]:
    """(text, reject reason) of a whole payload: decoded, then extracted; ``info`` (the row's
    meta) gets what a reject needs."""
    try:
        body = decode_body(body, codings, opts.max_record_bytes)
    except Undecodable as exc:
        info.update(content_codings=codings[:8], error=str(exc)[:500])
        return None, f"undecodable_encoding:{exc.coding}"
    except TooLarge as exc:
        info.update(payload_bytes=len(body), max_record_bytes=opts.max_record_bytes, decoded_over_max=True)
        return prefix_text(exc.head, opts.reject_text_bytes), "too_large"
    try:
        text = html_text(body, opts.extractor, opts.extraction_timeout) if "html" in ctype else \
            body.decode("utf-8", "replace")
    except ExtractionTimeout as exc:
        info.clear()
        info.update(error=str(exc), extractor=opts.extractor)
        return None, "html_extraction_timeout"
    except Exception as exc:  # one broken page is one reject
        info.clear()
        info["error"] = str(exc)[:500]
        return None, "html_extraction_failed"
    return text, check_text(text, opts.max_doc_bytes)


def add_conversion(b: RowBatch, rec, source: str, count: int, opts) -> None:
    """One conversion record (WET) as one row; raises ``CutRecord`` if its payload is cut short."""
    key = f"{source}:{count}"
    rid = rec.record_id or key
    info = {"warc_date": rec.headers.get("WARC-Date"), "content_type": (rec.headers.get("Content-Type") or "").lower(),
            "refers_to": rec.headers.get("WARC-Refers-To")}
    body, whole, size = read_payload(rec.reader, rec.content_length, opts.max_record_bytes)
    check_whole(size, rec, count, rid)
    url = rec.headers.get("WARC-Target-URI")
    if not whole:
        info.update(payload_bytes=size, max_record_bytes=opts.max_record_bytes)
        b.add(rid, prefix_text(body, opts.reject_text_bytes), source, url, json.dumps(info, sort_keys=True),
              "too_large", key)
        return
    text = body.decode("utf-8", "replace")
    b.add(rid, text, source, url, json.dumps(info, sort_keys=True), check_text(text, opts.max_doc_bytes), key)


def check_end(stream: BlockStream, count: int) -> None:
    """Content must end with the blank line that closes every record; anything else is a
    record cut off (fastwarc drops a partial header without a word)."""
    if stream.pos and not stream.tail.endswith((b"\n\n", b"\n\r\n")):
        raise CutRecord(f"the content ends inside a record at byte {stream.pos} (after response {count})",
                        at=stream.pos)


def read_warc(f, opts) -> Iterator[pa.Table]:
    b = RowBatch(opts.batch_rows, opts)
    return read_guarded(b, f.path, f.source, _responses(b, f, opts), partial(damage_repeats, f.path))


def _responses(b: RowBatch, f, opts) -> Iterator[pa.Table]:
    """Every response and conversion record of the file into ``b``, a table each time it is full;
    then the check that the content did not end inside a record."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    count = 0
    stream = BlockStream(iter_blocks(f.path))
    kinds = WarcRecordType.response | WarcRecordType.conversion
    for rec in ArchiveIterator(stream, record_types=kinds, parse_http=True):
        count += 1
        if rec.record_type == WarcRecordType.conversion:
            add_conversion(b, rec, f.source, count, opts)
        else:
            add_response(b, rec, f.source, count, opts)
        if b.full():
            yield b.emit()
    check_end(stream, count)
