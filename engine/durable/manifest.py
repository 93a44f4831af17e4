"""The run manifest and the final commit of a staged output.

``_manifest.json`` lists a file only once it is complete, with its row count, size and SHA-256
(counted by the task that wrote it, while writing: the driver never reads output data), and
carries the run's write-time counts (the report is built from them). The commit is two-phase: a
commit plan (source -> destination with checksums, and the earlier files that go) is written
atomically first, then files are moved (by a bounded pool of threads; on an object store they
were written in place and nothing moves), then the manifest is written, then the files it
supersedes are removed; a killed commit is finished by the next run.

An incremental output's manifest is sharded, so a run writes only what it added: each run's files
go to ``_manifest/run-<n>.json`` (a part), and ``_manifest.json`` is an index of a size that does
not grow with the runs: the runs that have a part (``part_runs``, ranges of run numbers: ``[[1,
1000]]``), this run's files and the number of files per folder over all runs. ``part_names``
names the parts (also of an index that listed them one by one, ``parts``); ``manifest_files``
reads every file of either kind of manifest.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import pyarrow.parquet as pq

from tokenmill.engine.io.storage import Storage

MANIFEST = "_manifest.json"
PARTS = "_manifest"
OUTPUT_FOLDERS = ("data", "rejects")
#: moves (copies on object stores) in flight at once during a commit
MOVERS = 16


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
           owned: Optional[set[str]] = None, check: Optional[Callable[[], None]] = None,
           written: Optional[list[dict]] = None, part: Optional[int] = None, earlier: Optional[dict] = None,
           in_place: bool = False) -> dict:
    """Move staged files into place and write the manifest; idempotent if interrupted, and safe
    when any single storage call fails (a failed read raises, it is never taken for "not there").
    ``folders``: the output folders (``data``, ``rejects``, ``synthetic``...); ``keep``: manifest
    entries of earlier runs' files that stay (an incremental run's); ``owned``: the files now in the
    output folders that the commit may remove (``ownership.Owned.replaceable``: earlier runs' of
    this pipeline, or every one with ``--force``); ``check``: called before each step that changes
    the output (the lease's ``check``); ``written``: the staged files as their writers described
    them (path under ``staged``, rows, bytes, sha256); without it they are read back (old work).
    ``part`` (an incremental run's number): this run's files go to its part (``part_name``) and the
    manifest is the index of ``earlier["part_runs"]`` and this one (``earlier["file_counts"]``: theirs).
    ``in_place``: the files were written under their final names (``staged`` is the output root:
    an object store, where the manifest is the atomic step); nothing is moved or listed.

    Order: the plan (what moves where, and which earlier files go) is written first; files are
    moved; the manifest is written, naming the files that go as ``superseded``; only then are they
    removed. A reader of ``_manifest.json`` never finds a listed file missing."""
    check = check or (lambda: None)
    root = store.root
    plan = store.read_json(plan_path)
    if plan is None or plan.get("fingerprint") != fingerprint:
        check()
        plan = _new_plan(store, staged, fingerprint, folders, keep, owned, written, in_place)
        store.write_json_atomic(plan_path, plan)
    if not plan.get("in_place"):
        _move_all(store, plan, check)
    check()
    manifest = {"fingerprint": fingerprint, "complete": True, "files": [*keep, *plan["files"]],
                "superseded": plan.get("remove", []), "committed": time.time(), **extra}
    if part is not None:
        name = part_name(part)
        earlier = earlier or {}
        runs, counts = earlier.get("part_runs", []), earlier.get("file_counts", {})
        if any(a <= part <= b for a, b in runs):   # a killed attempt of this run got as far as its index
            before = store.read_json(store.path(name)) or {}
            counts = _add_counts(counts, file_counts(before.get("files", [])), sign=-1)
        store.write_json_atomic(store.path(name), {"fingerprint": fingerprint, "files": plan["files"]})
        manifest["part_runs"] = with_run(runs, part)
        manifest["file_counts"] = _add_counts(counts, file_counts(plan["files"]))
    store.write_json_atomic(f"{root}/{MANIFEST}", manifest)
    remove_superseded(store, manifest)
    return manifest


def _move_all(store: Storage, plan: dict, check: Callable[[], None]) -> None:
    """Every planned file from the staged folder into place, ``MOVERS`` at a time; a file already
    moved (a commit cut short) is found in place."""
    staged = set(store.find(plan["staged"])) if store.exists(plan["staged"]) else set()

    def move(f: dict) -> None:
        src, dst = f"{plan['staged']}/{f['path']}", f"{store.root}/{f['path']}"
        if src in staged:
            check()
            store.makedirs(dst.rsplit("/", 1)[0])
            store.mv(src, dst)
        elif not store.exists(dst):
            raise RuntimeError(f"commit lost a file: {src} (neither staged nor in place)")

    with ThreadPoolExecutor(MOVERS) as pool:
        list(pool.map(move, plan["files"]))


def _new_plan(store: Storage, staged: str, fingerprint: str, folders: tuple[str, ...],
              keep: tuple[dict, ...], owned: Optional[set[str]], written: Optional[list[dict]],
              in_place: bool = False) -> dict:
    if written is None and not in_place:   # old work: described from the staged files
        rels = [r for r in store.list_parquet(staged) if r.split("/", 1)[0] in folders]
        files = describe_files(store, staged, rels)
    else:   # as their writers described them (in place: the output folders are not listed)
        files = sorted((f for f in written or [] if f["path"].split("/", 1)[0] in folders), key=lambda f: f["path"])
        if not in_place:
            files = _as_on_disk(store, staged, files)
    wanted = {f["path"] for f in files} | {f["path"] for f in keep}
    remove = [{"path": rel} for rel in sorted(set(owned or ()) - wanted)]
    return {"fingerprint": fingerprint, "staged": staged, "files": files, "remove": remove, "created": time.time(),
            "in_place": in_place}


def file_counts(files: list[dict]) -> dict[str, int]:
    """Files per output folder (``data``, ``rejects``, ...)."""
    out: dict[str, int] = {}
    for f in files:
        folder = f["path"].split("/", 1)[0]
        out[folder] = out.get(folder, 0) + 1
    return out


def _add_counts(a: dict[str, int], b: dict[str, int], sign: int = 1) -> dict[str, int]:
    return {k: a.get(k, 0) + sign * b.get(k, 0) for k in sorted(set(a) | set(b))}


def part_name(run: int) -> str:
    """Run ``run``'s part of a sharded manifest."""
    return f"{PARTS}/run-{run:06d}.json"


def is_sharded(manifest: dict) -> bool:
    """Whether a manifest is the index of a sharded (incremental) one."""
    return "part_runs" in manifest or "parts" in manifest


def part_runs(manifest: dict) -> list[list[int]]:
    """The runs that have a part, as ranges ``[first, last]`` (also of an index naming every part)."""
    if "part_runs" in manifest:
        return [list(r) for r in manifest["part_runs"]]
    runs: list[list[int]] = []
    for name in manifest.get("parts", []):
        runs = with_run(runs, int(name.rsplit("-", 1)[-1][:-len(".json")]))
    return runs


def with_run(runs: list[list[int]], run: int) -> list[list[int]]:
    """Ranges of run numbers with ``run`` in them (runs are added in order; a gap starts a range)."""
    if any(a <= run <= b for a, b in runs):
        return [list(r) for r in runs]
    if runs and runs[-1][1] == run - 1:
        return [*[list(r) for r in runs[:-1]], [runs[-1][0], run]]
    return sorted([*[list(r) for r in runs], [run, run]])


def part_names(manifest: dict) -> list[str]:
    """Every part of a sharded manifest, in run order."""
    return [part_name(n) for a, b in part_runs(manifest) for n in range(a, b + 1)]


def manifest_files(store: Storage, manifest: dict) -> list[dict]:
    """Every file a manifest lists: its own, or, for a sharded one, every part's (one read each)."""
    if not is_sharded(manifest):
        return list(manifest.get("files", []))
    out = []
    for name in part_names(manifest):
        part = store.read_json(store.path(name))
        if part is None:
            raise RuntimeError(f"{store.url(store.path(name))}: a manifest part the manifest names is missing")
        out += part["files"]
    return out


def _as_on_disk(store: Storage, staged: str, files: list[dict]) -> list[dict]:
    """The writers' descriptions, checked against one listing of the staged folder: a file whose
    size differs (two attempts of a task wrote it at once) is described again from its bytes."""
    sizes = store.find_sizes(staged)
    out = []
    for f in files:
        size = sizes.get(f"{staged}/{f['path']}")
        if size is None:
            raise RuntimeError(f"commit: {staged}/{f['path']} was written but is not in the staged folder")
        out.append(f if size == f["bytes"] else describe_files(store, staged, [f["path"]])[0])
    return out


def remove_superseded(store: Storage, manifest: dict) -> None:
    """Remove the files a committed manifest names as superseded (again after a killed commit)."""
    listed = {f["path"] for f in manifest.get("files", [])}
    for f in manifest.get("superseded", []):
        if f["path"] not in listed:
            store.rm(store.path(f["path"]))
