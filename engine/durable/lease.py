"""A lease on an output location: at most one incremental run works on it at a time.

The lease is a small JSON file (``OUT/_ledger/_lease.json``: owner token, host, pid, expiry)
created with an exclusive write: ``O_EXCL`` locally, a conditional put (``If-None-Match: *``)
on S3 through fsspec's ``"xb"`` mode. The holder renews it from a background thread every third
of its time to live, and deletes it when done. A lease whose expiry has passed, whose holder is
a process of this host that no longer exists (a killed run), or that is empty and older than its
time to live, is taken over: the taker first creates ``_lease.json.takeover-<stale token>`` with
the same exclusive write, so of several runs that find one stale lease only one replaces it.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Optional

from tokenmill.engine.io.storage import Storage


class LeaseHeld(RuntimeError):
    """Another run holds the lease (and did not let go within the wait)."""

    def __init__(self, path: str, holder: dict):
        self.path, self.holder = path, holder
        left = max(0, int(holder.get("expires", 0) - time.time()))
        super().__init__(f"another run holds {path}: host {holder.get('host')}, pid {holder.get('pid')}, "
                         f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('since', 0)))} "
                         f"(its lease expires in {left} s unless renewed)")


class Lease:
    """``acquire(wait_s)`` (raises ``LeaseHeld``), renewed in the background, ``release()``."""

    def __init__(self, store: Storage, path: str, ttl_s: float = 600.0, say: Callable[[str], None] = print):
        self.store, self.path, self.ttl_s, self.say = store, path, ttl_s, say
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def _record(self) -> dict:
        now = time.time()
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "since": now,
                "expires": now + self.ttl_s}

    def holder(self) -> Optional[dict]:
        return self.store.read_json(self.path)

    def acquire(self, wait_s: float = 0.0, poll_s: float = 2.0) -> Lease:
        deadline = time.time() + wait_s
        said = False
        while True:
            if self._try_create():
                return self._start_renewing()
            holder = self.holder() or {}
            if self._stale(holder) and self._take_over(holder):
                return self._start_renewing()
            if time.time() >= deadline:
                raise LeaseHeld(self.path, holder)
            if not said:
                self.say(f"lease: another run works on this output (host {holder.get('host')}, pid "
                         f"{holder.get('pid')}); waiting up to {wait_s:.0f} s")
                said = True
            time.sleep(min(poll_s, max(0.05, deadline - time.time())))

    def _exclusive_write(self, path: str, record: dict) -> bool:
        try:
            with self.store.fs.open(path, "xb") as fh:
                fh.write(json.dumps(record).encode())
            return True
        except FileExistsError:
            return False

    def _try_create(self) -> bool:
        self.store.makedirs(self.path.rsplit("/", 1)[0])
        return self._exclusive_write(self.path, self._record())

    def _stale(self, holder: dict) -> bool:
        if holder:
            return _gone(holder)
        try:   # empty or unreadable: a holder killed between creating and writing it
            return time.time() - _mtime(self.store.fs.info(self.path)) > self.ttl_s
        except FileNotFoundError:
            return False

    def _take_over(self, holder: dict) -> bool:
        """Replaces a stale lease if this run is the one that claims it first."""
        try:
            stale = holder.get("token") or f"empty-{int(_mtime(self.store.fs.info(self.path)))}"
        except FileNotFoundError:   # released meanwhile: the next try creates it
            return False
        claim = f"{self.path}.takeover-{stale}"
        if not self._exclusive_write(claim, self._record()):
            return False
        self.say(f"lease: taking over {self.path} from a run that is gone "
                 f"(host {holder.get('host')}, pid {holder.get('pid')})")
        self.store.write_json_atomic(self.path, self._record())
        return True

    def _start_renewing(self) -> Lease:
        self._thread = threading.Thread(target=self._renew_loop, name="tokenmill-lease", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    current = self.holder() or {}
                    if current.get("token") != self.token:
                        self.say(f"lease: {self.path} was taken by another run (host {current.get('host')}); "
                                 "this run will not commit")
                        return
                    self.store.write_json_atomic(self.path, {**self._record(), "since": current.get("since")})
                except Exception as e:   # a store hiccup: try again next time (the lease outlives two misses)
                    self.say(f"lease: could not renew {self.path}: {type(e).__name__}: {e}")

    def held(self) -> bool:
        return (self.holder() or {}).get("token") == self.token

    def release(self) -> None:
        self._stop.set()
        with self._lock:   # a renewal in flight finishes first, and none starts after
            if self.held():
                self.store.rm(self.path)


def _gone(holder: dict) -> bool:
    """Expired, or held by a process of this host that no longer runs."""
    if holder.get("expires", 0) < time.time():
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return not _alive(holder["pid"])
    return False


def _mtime(info: dict) -> float:
    value = next((info[k] for k in ("mtime", "LastModified", "updated", "created") if info.get(k)), 0)
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
