"""WARC reader (.warc, .warc.gz): one document per HTTP response record, its HTML reduced to
the main text with Resiliparse.

The compressed stream is decoded here (``decode.BlockStream``), not by fastwarc, whose gzip reader
ends quietly on a cut file: a .warc.gz cut short or with a corrupt member keeps the records
before the damage and adds a ``truncated_file`` row. The WARC layer is checked too: a response
whose payload is shorter than its headers say, or content that ends inside a record (every
record ends with a blank line), is a cut file; fastwarc's own errors on a corrupt header end the
file the same way. A response that is not text is ``not_text``; one whose HTML cannot be
extracted is ``html_extraction_failed``.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa

from tokenmill.engine.io.decode import BlockStream, iter_blocks
from tokenmill.engine.io.read_rows import RowBatch, check_text, read_guarded


class CutRecord(Exception):
    """The WARC content ends inside a record."""


def html_to_text(body: bytes) -> str:
    """Main-content text of an HTML page with Resiliparse (fast, robust to broken markup)."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    html = bytes_to_str(body, detect_encoding(body))
    return extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False, links=False,
                              form_fields=False, noscript=False)


def add_response(b: RowBatch, rec, source: str, count: int, opts) -> None:
    """One response record as one row; raises ``CutRecord`` if its payload is cut short."""
    key = f"{source}:{count}"
    rid = rec.record_id or key
    body = rec.reader.read()
    if len(body) < rec.content_length:
        raise CutRecord(f"response {count} ({rid}) is cut short: {len(body)} of {rec.content_length} payload bytes")
    url = rec.headers.get("WARC-Target-URI")
    ctype = (rec.http_headers.get("Content-Type", "") if rec.http_headers else "").lower()
    meta = json.dumps({"warc_date": rec.headers.get("WARC-Date"), "content_type": ctype}, sort_keys=True)
    if "html" not in ctype and "text/plain" not in ctype:
        b.add(rid, None, source, url, meta, "not_text", key)
        return
    try:
        text = html_to_text(body) if "html" in ctype else body.decode("utf-8", "replace")
    except Exception as exc:  # one broken page is one reject
        b.add(rid, None, source, url, json.dumps({"error": str(exc)[:500]}), "html_extraction_failed", key)
        return
    b.add(rid, text, source, url, meta, check_text(text, opts.max_doc_bytes), key)


def check_end(stream: BlockStream, count: int) -> None:
    """Content must end with the blank line that closes every record; anything else is a
    record cut off (fastwarc drops a partial header without a word)."""
    if stream.pos and not stream.tail.endswith((b"\n\n", b"\n\r\n")):
        raise CutRecord(f"the content ends inside a record at byte {stream.pos} (after response {count})")


def read_warc(f, opts) -> Iterator[pa.Table]:
    b = RowBatch(opts.batch_rows)
    return read_guarded(b, f.path, f.source, _responses(b, f, opts))


def _responses(b: RowBatch, f, opts) -> Iterator[pa.Table]:
    """Every response record of the file into ``b``, a table each time it is full; then the
    check that the content did not end inside a record."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    count = 0
    stream = BlockStream(iter_blocks(f.path))
    for rec in ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=True):
        count += 1
        add_response(b, rec, f.source, count, opts)
        if b.full():
            yield b.emit()
    check_end(stream, count)
