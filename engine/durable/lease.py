"""A lease on an output location: at most one run (plain or incremental) writes to it at a time.

The lease is a folder (``OUT/_lease/``) of numbered records, ``g-<generation>.json``, each
created with an exclusive write (``O_EXCL`` locally, a conditional put ``If-None-Match: *`` on
S3 through fsspec's ``"xb"`` mode). The record with the highest number says who holds the lease
(token, host, pid, holder name, expiry) or that it was released. Every change is the creation of
the next number, so every change is a compare-and-swap: of two runs that try to take, renew or
release from generation n, exactly one creates n+1, and the other learns it lost. Older records
are removed after a change (best effort; only the highest counts).

The holder renews from a background thread every third of the time to live; a renewal that
fails transiently is tried again with backoff until the lease would expire, and only then is
the lease lost. A run that lost its lease is told at its next commit step (``check``) and stops
without committing. A lease is taken over when it expired, when its holder was a process of this
host that no longer runs, or when its holder has this run's ``holder`` name (a retried pod of the
same Kubernetes Job: its predecessor is dead).
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
from tokenmill.engine.io.transient import policy

LEASE_FOLDER = "_lease"


class LeaseHeld(RuntimeError):
    """Another run holds the lease (and did not let go within the wait)."""

    def __init__(self, path: str, holder: dict):
        self.path, self.holder = path, holder
        left = max(0, int(holder.get("expires", 0) - time.time()))
        super().__init__(f"another run holds {path}: host {holder.get('host')}, pid {holder.get('pid')}, "
                         f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('since', 0)))} "
                         f"(its lease expires in {left} s unless renewed)")


class LeaseLost(RuntimeError):
    """This run's lease expired or was taken by another run: it must not write to the output."""


class Lease:
    """``acquire(wait_s)`` (raises ``LeaseHeld``), renewed in the background, ``check()`` (raises
    ``LeaseLost``), ``release()``. ``holder``: a name shared by retries of one job (see module)."""

    def __init__(self, store: Storage, path: str, ttl_s: float = 600.0, say: Callable[[str], None] = print,
                 holder: Optional[str] = None):
        self.store, self.path, self.ttl_s, self.say = store, path.rstrip("/"), ttl_s, say
        self.holder_name = holder or os.environ.get("TOKENMILL_LEASE_HOLDER") or None
        self.token = uuid.uuid4().hex
        self.generation = 0          # the generation this run holds (0: none)
        self.since = time.time()
        self.lost: Optional[str] = None
        self._renewed_at, self._attempt = time.time(), 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    # -- records ---------------------------------------------------------------------------------
    def _record(self, **extra) -> dict:
        now = time.time()
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "since": self.since,
                "expires": now + self.ttl_s, "holder": self.holder_name, **extra}

    def _name(self, generation: int) -> str:
        return f"{self.path}/g-{generation:012d}.json"

    def latest(self) -> tuple[int, dict]:
        """The highest generation and its record ((0, {}) when there is none)."""
        gens = []
        for p in self.store.find(self.path):
            name = p.rsplit("/", 1)[-1]
            if name.startswith("g-") and name.endswith(".json") and name[2:-5].isdigit():
                gens.append((int(name[2:-5]), p))
        if not gens:
            return 0, {}
        gen, path = max(gens)
        return gen, self.store.read_json(path) or {"empty": True, "mtime": _mtime_of(self.store, path)}

    def holder(self) -> dict:
        """Who holds the lease now ({} when it is free)."""
        _, rec = self.latest()
        return {} if rec.get("released") else rec

    def _create(self, generation: int, record: dict) -> bool:
        """Creates generation ``generation``; False when another run created it first. A create
        whose answer was lost (a timeout after the store took it) finds its own token there."""
        try:
            with self.store.fs.open(self._name(generation), "xb") as fh:
                fh.write(json.dumps(record).encode())
            return True
        except FileExistsError:
            return (self.store.read_json(self._name(generation)) or {}).get("token") == self.token
        except OSError:
            # S3 answers two racing conditional puts with 409 (ConditionalRequestConflict), which
            # s3fs raises as a plain OSError; the record tells who won, or the error stands
            found = self.store.read_json(self._name(generation))
            if found is None:
                raise
            return found.get("token") == self.token

    def _prune(self, below: int) -> None:
        for gen in range(max(1, below - 8), below):
            try:
                self.store.rm(self._name(gen))
            except Exception:   # only the highest counts; a leftover is harmless
                pass

    # -- acquire -------------------------------------------------------------------------------------
    def acquire(self, wait_s: float = 0.0, poll_s: float = 2.0) -> Lease:
        deadline = time.time() + wait_s
        said = False
        self.store.makedirs(self.path)
        while True:
            gen, rec = self.latest()
            why = self._free(rec)
            if why is not None and self._try_create(gen + 1):
                if why:
                    self.say(f"lease: taking over {self.path} from {why} (host {rec.get('host')}, pid {rec.get('pid')})")
                self.generation, self._renewed_at = gen + 1, time.time()
                self._prune(self.generation)
                return self._start_renewing()
            if time.time() >= deadline and (why is None or time.time() >= deadline + self.ttl_s):
                raise LeaseHeld(self.path, rec)   # (free, but the store kept failing: for a TTL more)
            if why is None and not said:
                self.say(f"lease: another run works on this output (host {rec.get('host')}, pid "
                         f"{rec.get('pid')}); waiting up to {wait_s:.0f} s")
                said = True
            time.sleep(0.05 if why is not None else min(poll_s, max(0.05, deadline - time.time())))

    def _try_create(self, generation: int) -> bool:
        """``_create`` while acquiring: an error (after the store's retries) is a try lost, not a crash."""
        try:
            return self._create(generation, self._record())
        except OSError as e:
            self.say(f"lease: could not write {self._name(generation)} ({type(e).__name__}: {e}); trying again")
            self._attempt += 1
            time.sleep(policy().wait(min(self._attempt - 1, 5)))
            return False

    def _free(self, rec: dict) -> Optional[str]:
        """None while ``rec`` holds the lease; else why it can be taken ('' when simply free)."""
        if not rec or rec.get("released"):
            return ""
        if rec.get("empty"):   # a holder killed between creating and writing its record
            return "an empty record" if time.time() - rec.get("mtime", 0) > self.ttl_s else None
        if rec.get("expires", 0) < time.time():
            return "an expired lease"
        if rec.get("host") == socket.gethostname() and isinstance(rec.get("pid"), int) and not _alive(rec["pid"]):
            return "a run that is gone"
        if self.holder_name and rec.get("holder") == self.holder_name and rec.get("token") != self.token:
            return f"an earlier attempt of {self.holder_name}"
        return None

    # -- renew -----------------------------------------------------------------------------------------
    def _start_renewing(self) -> Lease:
        self._thread = threading.Thread(target=self._renew_loop, name="tokenmill-lease", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        wait = self.ttl_s / 3
        while not self._stop.wait(wait):
            with self._lock:
                if self._stop.is_set() or self.lost:
                    return
                wait = self._renew_once()

    def _renew_once(self) -> float:
        """One renewal; the seconds until the next (sooner after a failure, until the lease would
        expire: only then is it lost)."""
        try:
            if self._create(self.generation + 1, self._record()):
                self.generation += 1
                self._renewed_at, self._attempt = time.time(), 0
                self._prune(self.generation)
                return self.ttl_s / 3
            _, rec = self.latest()
            self._lose(f"taken by another run (host {rec.get('host')}, pid {rec.get('pid')})")
        except Exception as e:
            expires = self._renewed_at + self.ttl_s
            if time.time() >= expires:
                self._lose(f"not renewed before it expired ({type(e).__name__}: {e})")
                return self.ttl_s
            self._attempt += 1
            self.say(f"lease: could not renew {self.path} ({type(e).__name__}: {e}); trying again")
            return min(policy().wait(self._attempt - 1), max(0.05, expires - time.time()))
        return self.ttl_s

    def _lose(self, why: str) -> None:
        self.lost = why
        self.say(f"lease: {self.path} was {why}; this run stops without committing")

    # -- use ------------------------------------------------------------------------------------------
    def held(self) -> bool:
        """The highest record is this run's and not a release (a renewal in flight may already have
        created the next one: it is ours too), and the lease has not expired without a renewal."""
        if self.lost or not self.generation or time.time() > self._renewed_at + self.ttl_s:
            return False
        gen, rec = self.latest()
        return gen >= self.generation and rec.get("token") == self.token and not rec.get("released")

    def check(self) -> None:
        """Raises ``LeaseLost`` unless this run still holds the lease (before every commit step)."""
        if not self.held():
            raise LeaseLost(f"this run no longer holds {self.path}: {self.lost or 'another run took it'}; "
                            "nothing more was committed")

    def release(self) -> None:
        self._stop.set()
        with self._lock:   # a renewal in flight finishes first, and none starts after
            if not self.generation or self.lost:
                return
            try:
                if self._create(self.generation + 1, self._record(released=True)):
                    self.generation += 1
                    self._prune(self.generation)
            except Exception as e:   # the lease then simply expires
                self.say(f"lease: could not release {self.path} ({type(e).__name__}: {e}); it expires "
                         f"in {self.ttl_s:.0f} s")
            self.generation = 0


def _mtime_of(store: Storage, path: str) -> float:
    try:
        info = store.fs.info(path)
    except FileNotFoundError:
        return time.time()
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
