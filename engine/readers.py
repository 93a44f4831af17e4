"""Readers: input files (JSONL plain/.gz/.zst, Parquet, WARC) -> document batches.

Bad input is data: a malformed line, invalid UTF-8, NUL bytes, empty or over-large text
becomes a row with ``reject_stage='read'`` and a reason; a file that cannot be read (or is
cut short) becomes one ``unreadable_file`` row carrying its path and the error in ``meta``,
so the report lists it and the run goes on. Paths may be local or any fsspec/pyarrow URL.
"""
from __future__ import annotations

import glob as _glob
import json
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .schema import DOCUMENT_SCHEMA
from .storage import Storage

READ_STAGE = "read"
FILE_ERROR = "unreadable_file"
TRUNCATED = "truncated_file"
#: reasons of rows that stand for a whole file (the report lists them under file_errors)
FILE_REASONS = (FILE_ERROR, TRUNCATED)
MAX_BATCH_BYTES = 64 << 20


@dataclass(frozen=True)
class InputFile:
    path: str     # full path or URL
    source: str   # stable name: path relative to the pattern's base folder
    format: str   # jsonl | parquet | warc


def detect_format(path: str) -> Optional[str]:
    name = path.lower()
    for ext in (".gz", ".zst", ".zstd", ".bz2", ".xz"):
        if name.endswith(ext) and not name.endswith(".warc.gz"):
            name = name[: -len(ext)]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".warc", ".warc.gz", ".arc.gz")):
        return "warc"
    return None


def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return "/".join(parts[:i])
    return os.path.dirname(pattern)


def list_input_files(patterns: list[str], fmt: str = "auto") -> tuple[list[InputFile], list[tuple[str, str]]]:
    """Expand files/folders/globs in order; returns (files, [(pattern, problem)])."""
    files: list[InputFile] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    sources: set[str] = set()
    for pattern in patterns:
        if "://" in pattern:
            st = Storage(pattern)  # asks the store afresh: a cached listing would miss new input
            expanded = []
            for m in sorted(st.fs.glob(st.root)):
                expanded += [st.url(p) for p in st.find(m)] if st.fs.isdir(m) else [st.url(m)]
        else:
            matches = sorted(_glob.glob(pattern, recursive=True)) if any(c in pattern for c in "*?[") else [pattern]
            expanded = []
            for m in matches:
                if os.path.isdir(m):
                    expanded += sorted(os.path.join(r, f) for r, _, fs_ in os.walk(m) for f in fs_)
                else:
                    expanded.append(m)
        if not expanded:
            problems.append((pattern, "matches no file"))
        base = _glob_base(pattern) if any(c in pattern for c in "*?[") else (pattern if os.path.isdir(pattern) else os.path.dirname(pattern))
        for path in expanded:
            if path in seen or os.path.basename(path.rstrip("/")).startswith((".", "_")):
                continue  # hidden files and markers (_SUCCESS, .crc) are never input
            f = fmt if fmt != "auto" else detect_format(path)
            if f is None:
                problems.append((path, "unknown file format (expected .jsonl[.gz|.zst], .parquet, .warc[.gz])"))
                continue
            seen.add(path)
            rel = os.path.relpath(path, base) if base and "://" not in path else os.path.basename(path)
            if rel in sources:  # two patterns give the same relative name: the full path keeps row_key unique
                rel = path.split("://", 1)[-1].lstrip("/")
            sources.add(rel)
            files.append(InputFile(path=path, source=rel, format=f))
    return files, problems


class _Batcher:
    """Accumulates rows column-wise and emits DOCUMENT_SCHEMA tables."""

    def __init__(self, batch_rows: int):
        self.batch_rows = batch_rows
        self._reset()

    def _reset(self):
        self.cols = {k: [] for k in ("id", "row_key", "text", "source", "url", "meta", "reject_stage", "reject_reason")}
        self.nbytes = 0

    def add(self, id, text, source, url=None, meta=None, reason=None, row_key=None):
        c = self.cols
        c["id"].append(id); c["row_key"].append(row_key or id); c["text"].append(text); c["source"].append(source)
        c["url"].append(url); c["meta"].append(meta)
        c["reject_stage"].append(READ_STAGE if reason else None); c["reject_reason"].append(reason)
        self.nbytes += len(text) if text else 0

    def full(self) -> bool:
        return len(self.cols["id"]) >= self.batch_rows or self.nbytes >= MAX_BATCH_BYTES

    def emit(self) -> Optional[pa.Table]:
        if not self.cols["id"]:
            return None
        n = len(self.cols["id"])
        texts = self.cols["text"]
        arrays = {
            "id": pa.array(self.cols["id"], pa.string()),
            "text": pa.array(texts, pa.large_string()),
            "source": pa.array(self.cols["source"], pa.string()),
            "row_key": pa.array(self.cols["row_key"], pa.string()),
            "url": pa.array(self.cols["url"], pa.string()),
            "meta": pa.array(self.cols["meta"], pa.string()),
            "num_chars": pa.array([len(t) if t else 0 for t in texts], pa.int64()),
            "num_tokens": pa.nulls(n, pa.int64()),
            "reject_stage": pa.array(self.cols["reject_stage"], pa.string()),
            "reject_reason": pa.array(self.cols["reject_reason"], pa.string()),
        }
        self._reset()
        return pa.Table.from_pydict(arrays, schema=DOCUMENT_SCHEMA)


def check_text(text, max_bytes: int) -> Optional[str]:
    """Reason to reject a document's text at read time, or None."""
    if not isinstance(text, str):
        return "missing_text"
    if not text.strip():
        return "empty_text"
    if "\x00" in text:
        return "contains_nul"
    if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes):
        return "too_large"
    return None


def _file_error(b: _Batcher, f: InputFile, exc: BaseException, kind: str = FILE_ERROR):
    meta = json.dumps({"path": f.path, "error": f"{type(exc).__name__}: {exc}"[:2000]})
    b.add(f"{f.source}:{kind}", "", f.source, None, meta, kind)


def open_decompressed(path: str):
    """Binary stream of a file's content, decompressing .gz/.zst (others via fsspec's codecs)."""
    import contextlib
    import gzip
    import io

    name = path.lower()
    if name.endswith((".zst", ".zstd")):
        import zstandard

        raw = fsspec.open(path, "rb").open()
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return contextlib.closing(io.BufferedReader(reader, buffer_size=1 << 20))
    if name.endswith(".gz"):
        raw = fsspec.open(path, "rb").open()
        return contextlib.closing(gzip.GzipFile(fileobj=raw))  # small reads: a truncated file keeps its head
    return fsspec.open(path, "rb", compression="infer")


def read_jsonl(f: InputFile, opts) -> Iterator[pa.Table]:
    b = _Batcher(opts.batch_rows)
    known = {opts.text_field, opts.id_field, opts.url_field}

    def record(raw: bytes, lineno: int) -> None:
        rid = f"{f.source}:{lineno}"
        if not raw.strip():
            return
        bad_utf8 = False
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line, bad_utf8 = raw.decode("utf-8", "replace"), True
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except ValueError:
            b.add(rid, line.rstrip("\n"), f.source, None, None, "invalid_utf8" if bad_utf8 else "invalid_json", rid)
            return
        text = obj.get(opts.text_field)
        given = obj.get(opts.id_field)
        doc_id = str(given) if given is not None else rid
        url = obj.get(opts.url_field)
        extra = {k: v for k, v in obj.items() if k not in known}
        meta = json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None
        reason = "invalid_utf8" if bad_utf8 else check_text(text, opts.max_doc_bytes)
        if reason == "missing_text" or (bad_utf8 and not isinstance(text, str)):
            text = None if text is None else json.dumps(text, ensure_ascii=False)
        b.add(doc_id, text, f.source, url if isinstance(url, str) else None, meta, reason, rid)

    lineno, tail = -1, None
    try:
        with open_decompressed(f.path) as fh:
            for lineno, raw in enumerate(fh):
                if not raw.endswith(b"\n"):
                    tail = (raw, lineno)  # only the last line may lack a newline: decide at clean EOF
                    continue
                record(raw, lineno)
                if b.full():
                    yield b.emit()
        if tail is not None:
            record(*tail)
    except Exception as exc:  # truncated .gz/.zst, unreadable path, I/O error: keep what was read
        if tail is not None:
            exc = type(exc)(f"{exc} (a partial last line of {len(tail[0])} bytes was dropped)")
        _file_error(b, f, exc, FILE_ERROR if lineno < 0 else TRUNCATED)
    out = b.emit()
    if out is not None:
        yield out


def read_parquet(f: InputFile, opts) -> Iterator[pa.Table]:
    b = _Batcher(opts.batch_rows)
    try:
        with fsspec.open(f.path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            if opts.text_field not in names:
                raise KeyError(f"no column {opts.text_field!r} (columns: {', '.join(names)})")
            row = 0
            for rb in pf.iter_batches(batch_size=opts.batch_rows):
                d = rb.to_pydict()
                texts = d.pop(opts.text_field)
                ids = d.pop(opts.id_field, None)
                urls = d.pop(opts.url_field, None)
                for i, text in enumerate(texts):
                    key = f"{f.source}:{row + i}"
                    rid = str(ids[i]) if ids is not None and ids[i] is not None else key
                    extra = {k: v[i] for k, v in d.items() if v[i] is not None}
                    meta = json.dumps(extra, ensure_ascii=False, sort_keys=True, default=str) if extra else None
                    reason = check_text(text, opts.max_doc_bytes)
                    url = urls[i] if urls is not None and isinstance(urls[i], str) else None
                    b.add(rid, text if isinstance(text, str) else None, f.source, url, meta, reason, key)
                    if b.full():
                        yield b.emit()
                row += rb.num_rows
    except Exception as exc:
        _file_error(b, f, exc)
    out = b.emit()
    if out is not None:
        yield out


def html_to_text(body: bytes) -> str:
    """Main-content text of an HTML page with Resiliparse (fast, robust to broken markup)."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    html = bytes_to_str(body, detect_encoding(body))
    return extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False, links=False,
                              form_fields=False, noscript=False)


def read_warc(f: InputFile, opts) -> Iterator[pa.Table]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    b = _Batcher(opts.batch_rows)
    count = 0
    try:
        with fsspec.open(f.path, "rb") as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                count += 1
                key = f"{f.source}:{count}"
                rid = rec.record_id or key
                url = rec.headers.get("WARC-Target-URI")
                ctype = (rec.http_headers.get("Content-Type", "") if rec.http_headers else "").lower()
                meta = json.dumps({"warc_date": rec.headers.get("WARC-Date"), "content_type": ctype}, sort_keys=True)
                body = rec.reader.read()
                if "html" not in ctype and "text/plain" not in ctype:
                    b.add(rid, None, f.source, url, meta, "not_text", key)
                    continue
                try:
                    text = html_to_text(body) if "html" in ctype else body.decode("utf-8", "replace")
                except Exception as exc:  # one broken page is one reject
                    b.add(rid, None, f.source, url, json.dumps({"error": str(exc)[:500]}), "html_extraction_failed", key)
                    continue
                b.add(rid, text, f.source, url, meta, check_text(text, opts.max_doc_bytes), key)
                if b.full():
                    yield b.emit()
    except Exception as exc:
        _file_error(b, f, exc, FILE_ERROR if count == 0 else TRUNCATED)
    out = b.emit()
    if out is not None:
        yield out


READERS = {"jsonl": read_jsonl, "parquet": read_parquet, "warc": read_warc}


def read_file(f: InputFile, opts) -> Iterator[pa.Table]:
    yield from READERS[f.format](f, opts)
