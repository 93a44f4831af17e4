"""A lease on an output location: at most one incremental run works on it at a time.

The lease is a small JSON file (``OUT/_ledger/_lease.json``: owner token, host, pid, expiry)
created with an exclusive write: ``O_EXCL`` locally, a conditional put (``If-None-Match: *``)
on S3 through fsspec's ``"xb"`` mode. The holder renews it from a background thread every third
of its time to live, and deletes it when done. A lease whose expiry has passed, or whose holder
is a process of this host that no longer exists (a killed run), is taken over. After taking a
lease the holder reads it back, so a taker that lost a race to another taker notices.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional

from .storage import Storage


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
        self._thread: Optional[threading.Thread] = None

    def _record(self) -> dict:
        now = time.time()
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "since": now,
                "expires": now + self.ttl_s}

    def holder(self) -> Optional[dict]:
        return self.store.read_json(self.path)

    def acquire(self, wait_s: float = 0.0, poll_s: float = 2.0) -> "Lease":
        deadline = time.time() + wait_s
        said = False
        while True:
            if self._try_create():
                self._start_renewing()
                return self
            holder = self.holder() or {}
            if holder and _stale(holder):
                self.say(f"lease: taking over {self.path} from a run that is gone "
                         f"(host {holder.get('host')}, pid {holder.get('pid')})")
                self.store.rm(self.path)
                continue
            if time.time() >= deadline:
                raise LeaseHeld(self.path, holder)
            if not said:
                self.say(f"lease: another run works on this output (host {holder.get('host')}, pid "
                         f"{holder.get('pid')}); waiting up to {wait_s:.0f} s")
                said = True
            time.sleep(min(poll_s, max(0.05, deadline - time.time())))

    def _try_create(self) -> bool:
        self.store.makedirs(self.path.rsplit("/", 1)[0])
        try:
            with self.store.fs.open(self.path, "xb") as fh:
                fh.write(json.dumps(self._record()).encode())
        except FileExistsError:
            return False
        time.sleep(0.05)   # a taker that raced us may have replaced the file: read it back
        return (self.holder() or {}).get("token") == self.token

    def _start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="tokenmill-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            current = self.holder() or {}
            if current.get("token") != self.token:
                self.say(f"lease: {self.path} was taken by another run (host {current.get('host')}); "
                         "this run's commit will be refused")
                return
            self.store.write_json_atomic(self.path, {**self._record(), "since": current.get("since")})

    def held(self) -> bool:
        return (self.holder() or {}).get("token") == self.token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held():
            self.store.rm(self.path)


def _stale(holder: dict) -> bool:
    """Expired, or held by a process of this host that no longer runs."""
    if holder.get("expires", 0) < time.time():
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return not _alive(holder["pid"])
    return False


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
