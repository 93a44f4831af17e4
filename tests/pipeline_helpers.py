"""Helpers for the integration tests: build configs in tmp folders, read a run's output back."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill.engine.config import build_pipeline


def make_pipeline(inputs: list[str], out: Path, batch_size: int = 1000, files_per_chunk: int = 64, **extra):
    data = {
        "name": "test",
        "input": {"paths": [str(p) for p in inputs], "files_per_chunk": files_per_chunk},
        "output": {"path": str(out)},
        "stages": [
            {"type": "langid", "resources": {"batch_size": batch_size}},
            {"type": "heuristics", "resources": {"batch_size": batch_size}},
            {"type": "exact_dedup", "resources": {"batch_size": batch_size}},
        ],
    }
    data.update(extra)
    return build_pipeline(data), data


def write_jsonl_gz(path: Path, rows: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def web_docs(shared_data: Path, copies: int = 1) -> list[dict]:
    """Real web documents; each extra copy is a distinct document (a line appended), not a duplicate."""
    base = [json.loads(l) for l in open(shared_data / "web_dev.jsonl", encoding="utf-8")]
    rows = []
    for c in range(copies):
        for r in base:
            text = r["text"] if c == 0 else r["text"] + f"\nRevision {c} of this page was archived separately."
            rows.append({"id": f"{r['id']}-c{c}", "text": text, "url": r.get("url")})
    return rows


def read_manifest_files(out: Path, prefix: str) -> pa.Table:
    manifest = json.loads((out / "_manifest.json").read_text())
    tables = [pq.read_table(out / f["path"], partitioning=None) for f in manifest["files"] if f["path"].startswith(prefix)]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def output_rows(out: Path) -> tuple[list, list]:
    """(sorted kept rows, sorted reject rows) as comparable tuples."""
    data = read_manifest_files(out, "data/")
    rej = read_manifest_files(out, "rejects/")
    kept = sorted(zip(data["id"].to_pylist(), data["language"].to_pylist(), data["text"].to_pylist(),
                      data["num_tokens"].to_pylist()))
    rejected = sorted(zip(rej["id"].to_pylist(), rej["reject_stage"].to_pylist(), rej["reject_reason"].to_pylist()))
    return kept, rejected
