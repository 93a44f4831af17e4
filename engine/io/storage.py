"""One storage helper over fsspec: a local folder and an object-store prefix look the same.

``Storage(url)`` holds the filesystem and the root path inside it; ``url(path)`` turns a path
inside it back into what an engine or a worker is given (a URL again on object stores). Every
atomic write, folder move, listing and JSON read of tokenmill goes through here, and each is
retried on a transient error (``transient.retry``: timeouts, resets, throttling) with backoff;
a move that succeeded before its answer was lost is not done twice.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Optional

import fsspec

from tokenmill.engine.io.transient import retry


class Storage:
    def __init__(self, url: str):
        self.fs, self.root = fsspec.core.url_to_fs(url)
        # fsspec shares one instance per URL kind and an object store's instance caches listings;
        # workers write behind its back, so the store is always asked afresh
        self.fs.invalidate_cache()
        proto = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.protocol = proto
        self.local = proto in ("file", "local")

    # -- paths -----------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """A path inside the store: the root joined with relative parts."""
        return "/".join([self.root.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def url(self, path: str) -> str:
        """What an engine or a worker gets for a path of this store (a URL on object stores)."""
        return path if self.local else f"{self.protocol}://{path}"

    def rel(self, path: str, folder: str) -> str:
        return path[len(folder.rstrip("/")) + 1:] if path.startswith(folder.rstrip("/") + "/") else path

    # -- plain operations --------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return retry(self.fs.exists, path)

    def makedirs(self, path: str) -> None:
        retry(self.fs.makedirs, path, exist_ok=True)

    def rm(self, path: str) -> None:
        retry(self._rm_once, path)

    def _rm_once(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def touch(self, path: str) -> None:
        retry(self.fs.touch, path)

    def size(self, path: str) -> int:
        return retry(self.fs.size, path)

    def open(self, path: str, mode: str = "rb"):
        return self.fs.open(path, mode)

    def find(self, folder: str) -> list[str]:
        """Every file under a folder (folder markers of object stores skipped)."""
        return sorted(self.find_sizes(folder))

    def names(self, folder: str) -> list[str]:
        """The names in one folder (not below it), without their details: one cheap listing."""
        return retry(self._names_once, folder)

    def _names_once(self, folder: str) -> list[str]:
        self.fs.invalidate_cache(folder)
        if not self.fs.exists(folder):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))

    def find_sizes(self, folder: str) -> dict[str, int]:
        """Every file under a folder with its size, from one listing."""
        return {p: info.get("size") or 0 for p, info in self.find_info(folder).items()}

    def find_info(self, folder: str) -> dict[str, dict]:
        """Every file under a folder with what the listing says of it (size, ETag or time)."""
        return retry(self._find_info_once, folder)

    def _find_info_once(self, folder: str) -> dict[str, dict]:
        self.fs.invalidate_cache(folder)
        if not self.fs.exists(folder):
            return {}
        return {p: info for p, info in sorted(self.fs.find(folder, detail=True).items()) if not p.endswith("/")}

    def mv(self, src: str, dst: str) -> None:
        retry(self._mv_once, src, dst)

    def _mv_once(self, src: str, dst: str) -> None:
        """One move; a retry of a move that was done (its answer lost) finds it done."""
        try:
            self.fs.mv(src, dst)
        except FileNotFoundError:
            if not self.fs.exists(dst):
                raise

    def move_dir(self, src: str, dst: str) -> None:
        """Move a folder. Locally one rename; an object store has neither folders nor rename (and
        fsspec's recursive ``mv`` there also copies the folder's own name as if it were a key, which
        fails), so each file is moved on its own, then what is left of ``src`` (folder markers) goes."""
        if self.local:
            retry(self._mv_dir_once, src, dst)
            return
        files = self.find(src)
        if files:
            retry(self._mv_many_once, files, [f"{dst}/{self.rel(p, src)}" for p in files])
        self.fs.invalidate_cache(dst)
        self.rm(src)

    def _mv_dir_once(self, src: str, dst: str) -> None:
        if self.fs.exists(src) or not self.fs.exists(dst):
            self.fs.mv(src, dst, recursive=True)

    def move_files(self, files: list[str], dst: str, names: Optional[list[str]] = None) -> None:
        """Move files (full paths of this store) into one folder, keeping their names or taking ``names``."""
        self.makedirs(dst)
        targets = [f"{dst}/{n}" for n in (names or [p.rsplit('/', 1)[-1] for p in files])]
        if self.local:
            for src, target in zip(files, targets):
                self.mv(src, target)
        elif files:  # object stores: copied concurrently, then deleted; a retry moves what is left
            retry(self._mv_many_once, files, targets)

    def _mv_many_once(self, files: list[str], targets: list[str]) -> None:
        left = [(f, t) for f, t in zip(files, targets) if self.fs.exists(f) or not self.fs.exists(t)]
        if left:
            self.fs.mv([f for f, _ in left], [t for _, t in left])

    # -- atomic writes, JSON ---------------------------------------------------------------------
    def write_text_atomic(self, path: str, text: str) -> None:
        self.write_bytes_atomic(path, text.encode("utf-8"))

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        """Write to a temporary name beside ``path``, then move it there: a reader finds the old
        file or the whole new one."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        retry(self._write_once, tmp, data)
        self.mv(tmp, path)

    def _write_once(self, path: str, data: bytes) -> None:
        if self.local:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "wb") as fh:
            fh.write(data)

    def write_parquet_atomic(self, path: str, table) -> None:
        """A ``pyarrow.Table`` as one zstd Parquet file, written atomically."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self.write_bytes_atomic(path, sink.getvalue().to_pybytes())

    def write_json_atomic(self, path: str, obj: Any) -> None:
        self.write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))

    def read_json(self, path: str) -> Optional[Any]:
        """The JSON document at ``path``; None when there is none (or it is not JSON: an empty
        file of a writer killed before it wrote). Any other error is raised after the retries:
        "could not read" must never be taken for "not there"."""
        try:
            return retry(self._read_json_once, path)
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def _read_json_once(self, path: str) -> Any:
        with self.fs.open(path, "r") as fh:
            return json.load(fh)

    def list_parquet(self, folder: str) -> list[str]:
        """Relative paths of complete .parquet files under a folder (temporary and hidden names skipped)."""
        return sorted(self.rel(full, folder) for full in self.find(folder) if complete_parquet(full))


def in_store(path: str) -> bool:
    """Whether ``path`` names an object store (a URL other than ``file://``), not the local disk."""
    return "://" in path and not path.startswith("file://")


def complete_parquet(path: str) -> bool:
    """Whether a listed path is a complete Parquet file (not a temporary, hidden or marker file)."""
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".parquet") and not name.startswith((".", "_")) and ".tmp" not in name
