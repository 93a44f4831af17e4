"""The Parquet files of each mix source, and the checks a source must pass before any work.

A source path is a tokenmill output folder (its ``_manifest.json`` names the files, with their row
counts, and nothing is listed), a folder of Parquet files, one file, or a glob; local or on an object
store. ``folder`` picks ``data/`` (curated documents), ``synthetic/`` (rephrasings) or both; a
``languages`` filter also skips ``language=xx`` folders of other languages by name.
"""
from __future__ import annotations

import glob as _glob
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill.engine.durable.manifest import MANIFEST, manifest_files
from tokenmill.engine.io.storage import Storage

TEXT, TOKENS, ROW_KEY, ID = "text", "num_tokens", "row_key", "id"


@dataclass
class SourceFiles:
    index: int            # the source's position in the config
    urls: list[str]
    key_column: str       # row_key (tokenmill outputs) or id
    has_language: bool    # the report counts languages when the files have them


def _wanted(rel: str, folder: str, languages) -> bool:
    top = rel.split("/", 1)[0]
    if folder != "any" and top != folder:
        return False
    if top not in ("data", "synthetic") or not rel.endswith(".parquet"):
        return False
    langs = [p[len("language="):] for p in rel.split("/") if p.startswith("language=")]
    return not (languages and langs and langs[0] not in languages)


def source_urls(src) -> list[str]:
    """Every Parquet file of one source, in a stable order."""
    path = src.path
    if any(c in path for c in "*?["):
        store = Storage(path.split("*", 1)[0].rsplit("/", 1)[0] or ".")
        found = store.fs.glob(path.split("://", 1)[-1]) if "://" in path else _glob.glob(path, recursive=True)
        return sorted(store.url(p) for p in found if p.endswith(".parquet"))
    store = Storage(path)
    root = store.root.rstrip("/")
    if root.endswith(".parquet"):
        return [store.url(root)]
    manifest = store.read_json(f"{root}/{MANIFEST}")
    if isinstance(manifest, dict) and ("files" in manifest or "parts" in manifest or "part_runs" in manifest):
        rels = [f["path"] for f in manifest_files(store, manifest)]
        return sorted(store.url(f"{root}/{r}") for r in rels if _wanted(r, src.folder, src.languages))
    sub = f"{root}/{src.folder}" if src.folder != "any" and store.exists(f"{root}/{src.folder}") else root
    return sorted(store.url(f"{sub}/{p}") for p in store.list_parquet(sub)
                  if not src.languages or _wanted(f"data/{p}", "data", src.languages))


def read_schema(url: str) -> pa.Schema:
    store = Storage(url)
    with store.open(store.root, "rb") as fh:
        return pq.read_schema(fh)


def needed_columns(src) -> list[str]:
    cols = [TOKENS]
    if src.languages:
        cols.append("language")
    if src.min_quality_score is not None:
        cols.append("quality_score")
    if src.upsample is not None:
        cols.append(src.upsample.by)
    return list(dict.fromkeys(cols))


def resolve_sources(cfg) -> tuple[list[SourceFiles], list[tuple[str, str]]]:
    """Each source's files, and the config errors found (no files, a missing column) -- from
    listings or manifests and one file footer per source, never the documents."""
    out, errors = [], []
    for i, src in enumerate(cfg.sources):
        key = f"sources[{i}]"
        try:
            urls = source_urls(src)
        except Exception as e:   # an unreachable store, a bad glob
            errors.append((f"{key}.path", f"cannot be listed: {type(e).__name__}: {e}"))
            continue
        if not urls:
            errors.append((f"{key}.path", f"no Parquet files of folder {src.folder!r}"
                           f"{' in languages ' + ','.join(src.languages) if src.languages else ''} under {src.path}"))
            continue
        try:
            names = set(read_schema(urls[0]).names)
        except Exception as e:
            errors.append((f"{key}.path", f"{urls[0]}: not a readable Parquet file: {type(e).__name__}: {e}"))
            continue
        missing = [c for c in [TEXT, *needed_columns(src)] if c not in names]
        for c in missing:
            why = {TOKENS: "budgets count it (run the curation with a tokenizer)",
                   "language": "the languages filter reads it", "quality_score": "min_quality_score reads it",
                   }.get(c, "upsample.by reads it")
            at = f"{key}.upsample.by" if src.upsample is not None and c == src.upsample.by else f"{key}.path"
            errors.append((at, f"{urls[0]} has no column {c!r}: {why}"))
        key_column = ROW_KEY if ROW_KEY in names else ID if ID in names else None
        if key_column is None:
            errors.append((f"{key}.path", f"{urls[0]} has neither row_key nor id: a document needs a key"))
        if not missing and key_column:
            out.append(SourceFiles(i, urls, key_column, "language" in names))
    return out, errors
