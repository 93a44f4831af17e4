"""Durable output: atomic file writes, the run manifest, and the commit of a finished phase.

Every output file is written under a temporary name and renamed; ``_manifest.json`` lists a
file only once it is complete, with its row count and SHA-256. The final commit is two-phase:
a commit plan (source -> destination with checksums) is written atomically first, then files
are moved, then the manifest is written; a killed commit is finished by the next run.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from typing import Any, Optional

import fsspec
import pyarrow.parquet as pq

MANIFEST = "_manifest.json"


def out_fs(path: str):
    """(filesystem, root path inside it) for a local path or an object-store URL. fsspec shares one
    instance per URL kind, and an object store's instance caches listings: Ray workers write here
    behind its back, so the cache is dropped and the store asked afresh."""
    fs, root = fsspec.core.url_to_fs(path)
    fs.invalidate_cache()
    return fs, root


def is_local(fs) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return proto in ("file", "local")


def move_dir(fs, src: str, dst: str) -> None:
    """Move a folder. Locally one rename; an object store has neither folders nor rename (and
    fsspec's recursive ``mv`` there also copies the folder's own name as if it were a key, which
    fails), so each file is moved on its own, then what is left of ``src`` (folder markers) goes."""
    if is_local(fs):
        fs.mv(src, dst, recursive=True)
        return
    fs.invalidate_cache(src)  # its files were written by other processes
    files = [p for p in fs.find(src) if not p.endswith("/")]  # "x/" keys are folder markers
    if files:  # lists of files: copied concurrently, then deleted
        fs.mv(files, [f"{dst}/{p[len(src):].lstrip('/')}" for p in files])
    fs.invalidate_cache(dst)
    if fs.exists(src):
        fs.rm(src, recursive=True)


def write_json_atomic(fs, path: str, obj: Any) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
    fs.mv(tmp, path)


def write_text_atomic(fs, path: str, text: str) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "w") as fh:
        fh.write(text)
    fs.mv(tmp, path)


def read_json(fs, path: str) -> Optional[dict]:
    try:
        with fs.open(path, "r") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        return None


def file_checksum(fs, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parquet_rows(fs, path: str) -> int:
    with fs.open(path, "rb") as fh:
        return pq.ParquetFile(fh).metadata.num_rows


def describe_files(fs, root: str, rel_paths: list[str]) -> list[dict]:
    out = []
    for rel in sorted(rel_paths):
        full = f"{root}/{rel}"
        out.append({"path": rel, "rows": parquet_rows(fs, full), "bytes": fs.size(full), "sha256": file_checksum(fs, full)})
    return out


def list_parquet(fs, folder: str) -> list[str]:
    """Relative paths of complete .parquet files under a folder (temporary names skipped)."""
    if not fs.exists(folder):
        return []
    rels = []
    for full in fs.find(folder):
        name = full.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and not name.startswith((".", "_")) and ".tmp" not in name:
            rels.append(os.path.relpath(full, folder) if not full.startswith("/") or folder.startswith("/") else full)
    return sorted(rels)


def commit(fs, root: str, staged: str, plan_path: str, fingerprint: str, extra: dict) -> dict:
    """Move staged files into place and write the manifest; idempotent if interrupted."""
    plan = read_json(fs, plan_path)
    if plan is None or plan.get("fingerprint") != fingerprint:
        rels = list_parquet(fs, staged)
        files = describe_files(fs, staged, rels)
        plan = {"fingerprint": fingerprint, "staged": staged, "files": files, "created": time.time()}
        write_json_atomic(fs, plan_path, plan)
    wanted = {f["path"] for f in plan["files"]}
    # outputs of an older, different run in the same folder are replaced, not mixed in
    for sub in ("data", "rejects"):
        for rel in list_parquet(fs, f"{root}/{sub}"):
            if f"{sub}/{rel}" not in wanted:
                fs.rm(f"{root}/{sub}/{rel}")
    for f in plan["files"]:
        src, dst = f"{plan['staged']}/{f['path']}", f"{root}/{f['path']}"
        if fs.exists(src):
            fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
            fs.mv(src, dst)
        elif not fs.exists(dst):
            raise RuntimeError(f"commit lost a file: {src} (neither staged nor in place)")
    manifest = {"fingerprint": fingerprint, "complete": True, "files": plan["files"], "committed": time.time(), **extra}
    write_json_atomic(fs, f"{root}/{MANIFEST}", manifest)
    return manifest
