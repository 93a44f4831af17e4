"""JSONL reader (plain, .gz, .zst, .bz2, .xz): one document per line.

Every non-blank line becomes one row, so no record can vanish: a line that is not a JSON object
is rejected as ``invalid_json`` (``invalid_utf8`` when its bytes are not UTF-8), a field of any
JSON type is accepted (a text that is not a string is ``missing_text``), a byte-order mark at
the start of a line is skipped, and lone surrogates are repaired when the batch is built
(``RowBatch``). A damaged compressed file keeps every complete line before the damage and adds a
``truncated_file`` row; an unreadable one is one ``unreadable_file`` row.

A line longer than ``max_doc_bytes`` is never held whole: it is streamed past (``iter_lines``) and
rejected as ``too_large`` without being parsed; its row keeps the first ``reject_text_bytes`` of
its text (of the line, when the text field does not begin in the bytes kept), the line's length
and SHA-256 in ``meta`` (``_cut.line``), and the id, url and other fields that were complete
before the text began (they usually come first).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import partial
from typing import Optional

import pyarrow as pa

from tokenmill.engine.io.decode import Oversized, damage_repeats, iter_blocks, iter_lines
from tokenmill.engine.io.read_rows import CUT, RowBatch, check_text, read_guarded, utf8_head
from tokenmill.engine.io.read_rows import doc_id as id_of

BOM = "\ufeff"
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
_PARTIAL_ESCAPE = re.compile(r"(\\+)(u[0-9a-fA-F]{0,3})?$")


def parse_object(line: str) -> Optional[dict]:
    """The JSON object on a line, or None (not JSON, not an object, nested too deeply)."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        if not line.startswith(BOM):
            return None
        try:
            obj = json.loads(line.lstrip(BOM))
        except (ValueError, RecursionError):
            return None
    return obj if isinstance(obj, dict) else None


def leading_fields(head: str) -> tuple[dict, Optional[str], Optional[str]]:
    """What the start of a JSON object cut short tells: the top-level fields complete before the
    cut (each followed by ``,`` or ``}``), the key of the value that was cut, and that value's
    start when it is a string (None otherwise)."""
    fields: dict = {}
    at = _SPACE.match(head, len(head) - len(head.lstrip(BOM))).end()
    if not head.startswith("{", at):
        return fields, None, None
    cut = None   # (key, where its value starts) while a value is being read
    try:
        while head[at] in "{,":
            key, at = _DECODER.raw_decode(head, _SPACE.match(head, at + 1).end())
            at = _SPACE.match(head, at).end()
            if not isinstance(key, str) or head[at] != ":":
                break
            cut = (key, _SPACE.match(head, at + 1).end())
            value, at = _DECODER.raw_decode(head, cut[1])
            at = _SPACE.match(head, at).end()
            if head[at] in ",}":
                fields[key], cut = value, None
    except (ValueError, IndexError, RecursionError):
        pass
    if cut is None:
        return fields, None, None
    return fields, cut[0], _string_start(head, cut[1]) if head.startswith('"', cut[1]) else None


def _string_start(head: str, quote: int) -> Optional[str]:
    """The decoded start of a JSON string that runs past the end of ``head``."""
    body = head[quote + 1:]
    escape = _PARTIAL_ESCAPE.search(body)
    if escape and len(escape.group(1)) % 2:   # an escape cut in two: drop its start
        body = body[:escape.start() + len(escape.group(1)) - 1]
    try:
        return json.loads(f'"{body}"', strict=False)
    except ValueError:
        return None


class LineParser:
    """Turns one line of a file into one row of a ``RowBatch``."""

    def __init__(self, b: RowBatch, source: str, opts):
        self.b, self.source, self.opts = b, source, opts
        self.known = {opts.text_field, opts.id_field, opts.url_field}
        #: bytes kept of a line streamed past: its text's, and enough to find the fields before the text
        self.keep = max(opts.reject_text_bytes, 4 * opts.max_field_bytes)

    def add(self, raw: bytes, lineno: int) -> None:
        rid = f"{self.source}:{lineno}"
        bad_utf8 = False
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line, bad_utf8 = raw.decode("utf-8", "replace"), True
        obj = parse_object(line)
        fields = self._fields(obj, rid, bad_utf8) if obj is not None else None
        if fields is None:
            reason = "invalid_utf8" if bad_utf8 else "invalid_json"
            self.b.add(rid, line.rstrip("\r\n"), self.source, None, None, reason, rid)
        else:
            self.b.add(*fields, row_key=rid)

    def too_large(self, line: Oversized, lineno: int) -> None:
        """A line streamed past: the start of its text (of the line, when the text field does not
        begin in the bytes kept) as text, the line's length and hash in ``meta``."""
        rid = f"{self.source}:{lineno}"
        head = utf8_head(line.head, len(line.head))
        fields, cut_key, start = leading_fields(head)
        opts, given, url = self.opts, fields.get(self.opts.id_field), fields.get(self.opts.url_field)
        doc_id = id_of(given, rid)
        extra = {k: v for k, v in fields.items() if k not in self.known}
        extra[CUT] = {"line": {"bytes": line.nbytes, "sha256": line.sha256}}
        meta = json.dumps(extra, ensure_ascii=False, sort_keys=True, default=str)
        text = start if cut_key == opts.text_field and start is not None else head
        text = utf8_head(text.encode("utf-8", "surrogatepass"), opts.reject_text_bytes)
        self.b.add(doc_id, text, self.source, url if isinstance(url, str) else None, meta, "too_large", rid)

    def _fields(self, obj: dict, rid: str, bad_utf8: bool) -> Optional[tuple]:
        """(id, text, source, url, meta, reason) of a parsed record; None if a value cannot be
        rendered (nested too deeply for ``json.dumps``)."""
        opts = self.opts
        text, given, url = obj.get(opts.text_field), obj.get(opts.id_field), obj.get(opts.url_field)
        try:
            doc_id = id_of(given, rid)
            extra = {k: v for k, v in obj.items() if k not in self.known}
            meta = json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None
            reason = "invalid_utf8" if bad_utf8 else check_text(text, opts.max_doc_bytes)
            if reason == "missing_text" or (bad_utf8 and not isinstance(text, str)):
                text = None if text is None else json.dumps(text, ensure_ascii=False)
        except (ValueError, RecursionError):
            return None
        return doc_id, text, self.source, url if isinstance(url, str) else None, meta, reason


def read_jsonl(f, opts) -> Iterator[pa.Table]:
    b = RowBatch(opts.batch_rows, opts)
    return read_guarded(b, f.path, f.source, _lines(b, LineParser(b, f.source, opts), f.path),
                        partial(damage_repeats, f.path))


def _lines(b: RowBatch, parser: LineParser, path: str) -> Iterator[pa.Table]:
    """Every non-blank line of the file into ``b``, a table each time it is full."""
    lines = iter_lines(iter_blocks(path), parser.opts.max_doc_bytes, parser.keep)
    for lineno, raw in enumerate(lines):
        if type(raw) is Oversized:
            parser.too_large(raw, lineno)
        elif raw.isspace():
            continue
        else:
            parser.add(raw, lineno)
        if b.full():
            yield b.emit()
