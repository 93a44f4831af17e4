"""A fault-injecting fsspec filesystem, for testing what tokenmill does when storage misbehaves.

``faulty://<path>`` is the real filesystem underneath (local files, or S3 / any fsspec protocol
set by ``inner``) with calls failing on a seeded schedule. The schedule is a JSON file named by
``$TOKENMILL_FAULTS``, read by every process that touches the store (the driver, worker
processes of the local executor, Ray workers), so one schedule covers a whole run; counts are
kept in its ``state`` folder with file locks, so "fail the first open of each file" holds across
processes::

    {"inner": "file", "inner_options": {}, "state": "/tmp/faults-state",
     "rules": [{"op": "open", "match": "*.jsonl.gz", "kind": "transient", "times": 1,
                "per_path": true, "fraction": 0.3, "seed": 7},
               {"op": "read", "match": "*/in/*", "after_bytes": 4096, "kind": "transient"},
               {"op": "mv", "match": "*/data/*", "kind": "permanent", "skip": 2, "times": 1}]}

A rule matches calls of ``op`` (``open`` — for reading or writing, or ``open_read`` /
``open_write``; ``read``: a read that reaches ``after_bytes`` of a file; ``ls`` (also ``find``,
``info``, ``exists``); ``mv``; ``rm``; ``pipe``, ``touch``, ``makedirs``) whose path matches the
glob ``match`` (``any``: every op but ``read``); skips the first ``skip`` such calls, then fails the next ``times`` (per path with
``per_path``; of the paths a seeded hash of their file name picks with ``fraction``). ``kind``: ``transient``
raises ``transient.TransientError`` (a reset connection), ``permanent`` a ``PermissionError``,
``short`` (``read`` only) ends the file there without an error (a body cut off in transit), ``slow``
waits ``seconds`` (default 1) and then lets the call through (a slow store: time to kill a process
between two writes).
Every failure is appended to ``state/log.jsonl``; with ``"trace": true`` every call (but reads)
to ``state/trace.jsonl``, in order, so a test can fail each call of a step in turn.

It is registered with fsspec by tokenmill's ``fsspec.specs`` entry point, so any process with
tokenmill installed resolves ``faulty://`` URLs.
"""
from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import time
from typing import Any, Optional

import fsspec
from fsspec.spec import AbstractFileSystem

from tokenmill.engine.io.transient import TransientError

ENV = "TOKENMILL_FAULTS"
LISTING_OPS = {"ls", "find", "info", "exists"}


def _schedule() -> dict:
    path = os.environ.get(ENV)
    if not path:
        return {"inner": "file", "rules": []}
    with open(path) as fh:
        return json.load(fh)


class FaultSchedule:
    def __init__(self, schedule: dict):
        self.rules = schedule.get("rules", [])
        self.state = schedule.get("state")
        self.trace = bool(schedule.get("trace"))

    def check(self, op: str, path: str, position: Optional[int] = None) -> None:
        if self.trace and op != "read":
            self._log({"op": op, "path": path, "pid": os.getpid()}, "trace.jsonl")
        for i, rule in enumerate(self.rules):
            if self._applies(rule, op, path, position) and self._count(i, rule, path):
                self._fail(rule, op, path)

    @staticmethod
    def _applies(rule: dict, op: str, path: str, position: Optional[int]) -> bool:
        want = rule["op"]
        if not (want == op or (want == "any" and op != "read") or (want == "ls" and op in LISTING_OPS)
                or (want == "open" and op.startswith("open_"))):
            return False
        if not fnmatch.fnmatch(path, rule.get("match", "*")):
            return False
        if op == "read" and (position is None or position < rule.get("after_bytes", 0)):
            return False
        fraction = rule.get("fraction")
        if fraction is not None:
            name = path.rsplit("/", 1)[-1]   # the same files picked wherever the folder is
            h = int(hashlib.sha256(f"{rule.get('seed', 0)}:{name}".encode()).hexdigest()[:8], 16)
            return h / 0xFFFFFFFF < fraction
        return True

    def _count(self, i: int, rule: dict, path: str) -> bool:
        """Counts this matching call; whether it is one of those that fail."""
        key = f"rule{i}" + (f"-{hashlib.sha256(path.encode()).hexdigest()[:16]}" if rule.get("per_path") else "")
        os.makedirs(self.state, exist_ok=True)
        with open(os.path.join(self.state, key), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            n = int(fh.read() or 0)
            fh.seek(0)
            fh.truncate()
            fh.write(str(n + 1))
        skip, times = rule.get("skip", 0), rule.get("times", 1)
        return skip <= n < skip + times

    def _log(self, record: dict, name: str) -> None:
        os.makedirs(self.state, exist_ok=True)
        with open(os.path.join(self.state, name), "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _fail(self, rule: dict, op: str, path: str) -> None:
        self._log({"op": op, "path": path, "kind": rule.get("kind", "transient"), "pid": os.getpid()}, "log.jsonl")
        message = f"injected {rule.get('kind', 'transient')} fault: {op} {path}"
        if rule.get("kind") == "slow":
            time.sleep(float(rule.get("seconds", 1.0)))
            return
        if rule.get("kind") == "permanent":
            raise PermissionError(message)
        if rule.get("kind") == "short":
            raise _ShortRead(rule.get("after_bytes", 0))
        raise TransientError(message)


class _ShortRead(Exception):
    """A read that ends the file at byte ``at`` without an error (a body cut off in transit)."""

    def __init__(self, at: int):
        super().__init__(at)
        self.at = at


class _FaultyFile:
    """A file whose reads fail as the schedule says once they reach ``after_bytes``."""

    def __init__(self, fh, path: str, faults: FaultSchedule):
        self._fh, self._path, self._faults = fh, path, faults

    def read(self, size: int = -1) -> bytes:
        try:
            self._faults.check("read", self._path, self._fh.tell() + (size if size and size > 0 else 1 << 30))
        except _ShortRead as cut:
            data = self._fh.read(max(0, cut.at - self._fh.tell()))
            self._fh.seek(0, 2)   # every later read ends too
            return data
        return self._fh.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._fh.close()

    def __iter__(self):
        return iter(self._fh)


class FaultyFileSystem(AbstractFileSystem):
    protocol = "faulty"
    root_marker = ""
    cachable = False   # each instance reads the schedule in force when it is made

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        schedule = _schedule()
        self.inner_protocol = schedule.get("inner", "file")
        self.local = self.inner_protocol in ("file", "local")
        options = {"auto_mkdir": True} if self.local else {}
        self.inner = fsspec.filesystem(self.inner_protocol, **{**options, **schedule.get("inner_options", {})})
        self.faults = FaultSchedule(schedule)

    @classmethod
    def _strip_protocol(cls, path):
        path = path[len("faulty://"):] if path.startswith("faulty://") else path
        return path.rstrip("/") or "/"

    def _check(self, op: str, path: str) -> None:
        self.faults.check(op, self._strip_protocol(path))

    # -- delegated calls, each checked first ---------------------------------------------------
    def _open(self, path, mode="rb", **kwargs):
        self._check("open_read" if "r" in mode else "open_write", path)
        fh = self.inner.open(self._strip_protocol(path), mode, **kwargs)
        return _FaultyFile(fh, self._strip_protocol(path), self.faults) if "r" in mode else fh

    def ls(self, path, detail=True, **kwargs):
        self._check("ls", path)
        return self.inner.ls(self._strip_protocol(path), detail=detail, **kwargs)

    def info(self, path, **kwargs):
        self._check("info", path)
        return self.inner.info(self._strip_protocol(path), **kwargs)

    def exists(self, path, **kwargs):
        self._check("exists", path)
        return self.inner.exists(self._strip_protocol(path), **kwargs)

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        self._check("find", path)
        return self.inner.find(self._strip_protocol(path), maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)

    def mv(self, path1, path2, recursive=False, maxdepth=None, **kwargs):
        """Each pair moved on its own (a list of moves fails midway, as an object store's can)."""
        pairs = [(path1, path2)] if isinstance(path1, str) else list(zip(path1, path2))
        for src, dst in pairs:
            self._check("mv", src)
            if self.local:   # a store without folders: the local files underneath need them
                self.inner.makedirs(self._strip_protocol(dst).rsplit("/", 1)[0], exist_ok=True)
            self.inner.mv(self._strip_protocol(src), self._strip_protocol(dst), recursive=recursive,
                          maxdepth=maxdepth, **kwargs)

    def rm(self, path, recursive=False, maxdepth=None):
        for p in ([path] if isinstance(path, str) else path):
            self._check("rm", p)
        paths = self._strip_protocol(path) if isinstance(path, str) else [self._strip_protocol(p) for p in path]
        return self.inner.rm(paths, recursive=recursive, maxdepth=maxdepth)

    def rm_file(self, path):
        self._check("rm", path)
        return self.inner.rm_file(self._strip_protocol(path))

    def pipe_file(self, path, value, **kwargs):
        self._check("pipe", path)
        return self.inner.pipe_file(self._strip_protocol(path), value, **kwargs)

    def touch(self, path, truncate=True, **kwargs):
        self._check("touch", path)
        return self.inner.touch(self._strip_protocol(path), truncate=truncate, **kwargs)

    def makedirs(self, path, exist_ok=False):
        self._check("makedirs", path)
        return self.inner.makedirs(self._strip_protocol(path), exist_ok=exist_ok)

    def mkdir(self, path, create_parents=True, **kwargs):
        self._check("makedirs", path)
        return self.inner.mkdir(self._strip_protocol(path), create_parents=create_parents, **kwargs)

    def isdir(self, path):
        self._check("info", path)
        return self.inner.isdir(self._strip_protocol(path))

    def invalidate_cache(self, path=None):
        self.inner.invalidate_cache(None if path is None else self._strip_protocol(path))
