"""One storage helper over fsspec: a local folder and an object-store prefix look the same.

``Storage(url)`` holds the filesystem and the root path inside it; ``url(path)`` turns a path
inside it back into what an engine or a worker is given (a URL again on object stores). Every
atomic write, folder move, listing and JSON read of tokenmill goes through here.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Optional

import fsspec


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
        return self.fs.exists(path)

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    def rm(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def touch(self, path: str) -> None:
        self.fs.touch(path)

    def size(self, path: str) -> int:
        return self.fs.size(path)

    def open(self, path: str, mode: str = "rb"):
        return self.fs.open(path, mode)

    def find(self, folder: str) -> list[str]:
        """Every file under a folder (folder markers of object stores skipped)."""
        return sorted(self.find_sizes(folder))

    def find_sizes(self, folder: str) -> dict[str, int]:
        """Every file under a folder with its size, from one listing."""
        if not self.fs.exists(folder):
            return {}
        self.fs.invalidate_cache(folder)
        return {p: info.get("size") or 0 for p, info in sorted(self.fs.find(folder, detail=True).items())
                if not p.endswith("/")}

    def mv(self, src: str, dst: str) -> None:
        self.fs.mv(src, dst)

    def move_dir(self, src: str, dst: str) -> None:
        """Move a folder. Locally one rename; an object store has neither folders nor rename (and
        fsspec's recursive ``mv`` there also copies the folder's own name as if it were a key, which
        fails), so each file is moved on its own, then what is left of ``src`` (folder markers) goes."""
        if self.local:
            self.fs.mv(src, dst, recursive=True)
            return
        files = self.find(src)
        if files:
            self.fs.mv(files, [f"{dst}/{self.rel(p, src)}" for p in files])
        self.fs.invalidate_cache(dst)
        self.rm(src)

    def move_files(self, files: list[str], dst: str, names: Optional[list[str]] = None) -> None:
        """Move files (full paths of this store) into one folder, keeping their names or taking ``names``."""
        self.makedirs(dst)
        targets = [f"{dst}/{n}" for n in (names or [p.rsplit('/', 1)[-1] for p in files])]
        if self.local:
            for src, target in zip(files, targets):
                self.fs.mv(src, target)
        elif files:  # object stores: copied concurrently, then deleted
            self.fs.mv(files, targets)

    # -- atomic writes, JSON ---------------------------------------------------------------------
    def write_text_atomic(self, path: str, text: str) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open(tmp, "w") as fh:
            fh.write(text)
        self.fs.mv(tmp, path)

    def write_json_atomic(self, path: str, obj: Any) -> None:
        self.write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))

    def read_json(self, path: str) -> Optional[Any]:
        try:
            with self.fs.open(path, "r") as fh:
                return json.load(fh)
        except (FileNotFoundError, json.JSONDecodeError, OSError):
            return None

    def list_parquet(self, folder: str) -> list[str]:
        """Relative paths of complete .parquet files under a folder (temporary and hidden names skipped)."""
        rels = []
        for full in self.find(folder):
            name = full.rsplit("/", 1)[-1]
            if name.endswith(".parquet") and not name.startswith((".", "_")) and ".tmp" not in name:
                rels.append(self.rel(full, folder))
        return sorted(rels)

