"""The run manifest and the final commit of a staged output.

``_manifest.json`` lists a file only once it is complete, with its row count and SHA-256, and
carries the run's write-time counts (the report is built from them). The commit is two-phase: a
commit plan (source -> destination with checksums) is written atomically first, then files are
moved, then the manifest is written; a killed commit is finished by the next run.
"""
from __future__ import annotations

import hashlib
import time
from typing import Optional

import pyarrow.parquet as pq

from tokenmill.engine.io.storage import Storage

MANIFEST = "_manifest.json"
OUTPUT_FOLDERS = ("data", "rejects")


def named_by(rel: str, prefix: str) -> bool:
    """Whether an output file's name starts with a writer's ``prefix`` (``part-<prefix>...``)."""
    return rel.rsplit("/", 1)[-1].startswith(f"part-{prefix}")


def file_checksum(store: Storage, path: str) -> str:
    h = hashlib.sha256()
    with store.open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parquet_rows(store: Storage, path: str) -> int:
    with store.open(path, "rb") as fh:
        return pq.ParquetFile(fh).metadata.num_rows


def describe_files(store: Storage, folder: str, rel_paths: list[str]) -> list[dict]:
    out = []
    for rel in sorted(rel_paths):
        full = f"{folder}/{rel}"
        out.append({"path": rel, "rows": parquet_rows(store, full), "bytes": store.size(full),
                    "sha256": file_checksum(store, full)})
    return out


def commit(store: Storage, staged: str, plan_path: str, fingerprint: str, extra: dict,
           folders: tuple[str, ...] = OUTPUT_FOLDERS, keep: tuple[dict, ...] = (),
           only_prefix: Optional[str] = None) -> dict:
    """Move staged files into place and write the manifest; idempotent if interrupted. ``folders``:
    the output folders (``data``, ``rejects`` and those of generating stages, e.g. ``synthetic``);
    ``keep``: manifest entries of earlier runs' files that stay (an incremental run's);
    ``only_prefix``: remove stray files only when their names start with ``part-<prefix>`` (an
    incremental run never deletes another run's files)."""
    root = store.root
    plan = store.read_json(plan_path)
    if plan is None or plan.get("fingerprint") != fingerprint:
        rels = [r for r in store.list_parquet(staged) if r.split("/", 1)[0] in folders]
        plan = {"fingerprint": fingerprint, "staged": staged, "files": describe_files(store, staged, rels),
                "created": time.time()}
        store.write_json_atomic(plan_path, plan)
    wanted = {f["path"] for f in plan["files"]} | {f["path"] for f in keep}
    earlier = store.read_json(f"{root}/{MANIFEST}") or {}
    folders = tuple(dict.fromkeys([*folders, *(f["path"].split("/", 1)[0] for f in earlier.get("files", [])
                                               if "/" in f["path"])]))   # e.g. synthetic/ of a run that had rephrase
    # outputs of an older, different run in the same folder are replaced, not mixed in
    for sub in folders:
        for rel in store.list_parquet(f"{root}/{sub}"):
            if only_prefix is not None and not named_by(rel, only_prefix):
                continue
            if f"{sub}/{rel}" not in wanted:
                store.rm(f"{root}/{sub}/{rel}")
    for f in plan["files"]:
        src, dst = f"{plan['staged']}/{f['path']}", f"{root}/{f['path']}"
        if store.exists(src):
            store.makedirs(dst.rsplit("/", 1)[0])
            store.mv(src, dst)
        elif not store.exists(dst):
            raise RuntimeError(f"commit lost a file: {src} (neither staged nor in place)")
    manifest = {"fingerprint": fingerprint, "complete": True, "files": [*keep, *plan["files"]], "committed": time.time(), **extra}
    store.write_json_atomic(f"{root}/{MANIFEST}", manifest)
    return manifest
