"""Progress of a mix phase for a person watching: the tasks' markers, counted by listing their folder.

Every tokenize task and every shard task leaves a marker when it is done (``run.py``), on any
engine; a thread lists that folder every ``interval`` seconds and says how many are done, the
elapsed time and an estimate of what is left. One listing per interval, nothing read.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tokenmill.engine.io.storage import Storage
from tokenmill.engine.report.console import _clock

INTERVAL = 15.0


class MarkerProgress:
    """``with MarkerProgress(store, folder, total, label, say):`` around a phase whose tasks write
    ``*.json`` markers into ``folder``; ``before`` markers were there already."""

    def __init__(self, store: Storage, folder: str, total: int, label: str, say: Callable[[str], None],
                 before: int = 0, interval: float = INTERVAL):
        self.store, self.folder, self.total, self.label, self.say = store, folder, total, label, say
        self.before, self.interval = before, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tokenmill-mix-progress", daemon=True)

    def __enter__(self) -> MarkerProgress:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def count(self) -> int:
        try:
            names = self.store.names(self.folder)
        except Exception:   # progress must never end a mix
            return self.before
        return sum(1 for n in names if n.endswith(".json") and ".tmp-" not in n)

    def line(self, done: int, now: float) -> str:
        new, left = max(0, done - self.before), max(0, self.total - done)
        elapsed = now - self.started
        eta = f", ETA {_clock(elapsed / new * left)}" if new and left else ""
        return f"{self.label}: {done}/{self.total} tasks ({100 * done // max(1, self.total)}%), {_clock(elapsed)}{eta}"

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.say(self.line(self.count(), time.monotonic()))
