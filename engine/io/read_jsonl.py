"""JSONL reader (plain, .gz, .zst, .bz2, .xz): one document per line.

Every non-blank line becomes one row, so no record can vanish: a line that is not a JSON object
is rejected as ``invalid_json`` (``invalid_utf8`` when its bytes are not UTF-8), a field of any
JSON type is accepted (a text that is not a string is ``missing_text``), a byte-order mark at
the start of a line is skipped, and lone surrogates are repaired when the batch is built
(``RowBatch``). A damaged compressed file keeps every complete line before the damage and adds a
``truncated_file`` row; an unreadable one is one ``unreadable_file`` row.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Optional

import pyarrow as pa

from tokenmill.engine.io.decode import iter_blocks, iter_lines
from tokenmill.engine.io.read_rows import RowBatch, check_text, id_text, read_guarded

BOM = "\ufeff"


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


class LineParser:
    """Turns one line of a file into one row of a ``RowBatch``."""

    def __init__(self, b: RowBatch, source: str, opts):
        self.b, self.source, self.opts = b, source, opts
        self.known = {opts.text_field, opts.id_field, opts.url_field}

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

    def _fields(self, obj: dict, rid: str, bad_utf8: bool) -> Optional[tuple]:
        """(id, text, source, url, meta, reason) of a parsed record; None if a value cannot be
        rendered (nested too deeply for ``json.dumps``)."""
        opts = self.opts
        text, given, url = obj.get(opts.text_field), obj.get(opts.id_field), obj.get(opts.url_field)
        try:
            doc_id = given if isinstance(given, str) else rid if given is None else id_text(given)
            extra = {k: v for k, v in obj.items() if k not in self.known}
            meta = json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None
            reason = "invalid_utf8" if bad_utf8 else check_text(text, opts.max_doc_bytes)
            if reason == "missing_text" or (bad_utf8 and not isinstance(text, str)):
                text = None if text is None else json.dumps(text, ensure_ascii=False)
        except (ValueError, RecursionError):
            return None
        return doc_id, text, self.source, url if isinstance(url, str) else None, meta, reason


def read_jsonl(f, opts) -> Iterator[pa.Table]:
    b = RowBatch(opts.batch_rows)
    return read_guarded(b, f.path, f.source, _lines(b, LineParser(b, f.source, opts), f.path))


def _lines(b: RowBatch, parser: LineParser, path: str) -> Iterator[pa.Table]:
    """Every non-blank line of the file into ``b``, a table each time it is full."""
    for lineno, raw in enumerate(iter_lines(iter_blocks(path))):
        if raw.isspace():
            continue
        parser.add(raw, lineno)
        if b.full():
            yield b.emit()
