"""Attempts at reading an input file: a file that keeps killing its task is quarantined.

A worker marks an input file before reading it (``OUT/_work/_attempts/<key>/<uuid>``) and removes
the mark when it is done with it, whatever happened — unless the process itself was killed (out
of memory, SIGKILL), which leaves the mark. A file found with ``io.quarantine_after`` marks is not
read again: it becomes one ``quarantined`` file error with the reason, and the run goes on
(engines retry a killed task without end, and a killed incremental run resumes the same files, so
one poison file would otherwise wedge a pipeline for good).
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Optional

from tokenmill.engine.io.storage import Storage


class Quarantined(RuntimeError):
    """What a quarantined file's error row says."""


class Attempts:
    def __init__(self, url: str, limit: int):
        self.store, self.limit = Storage(url), limit

    def _folder(self, path: str) -> str:
        return self.store.path(hashlib.sha256(path.encode()).hexdigest()[:24])

    def begin(self, path: str) -> tuple[Optional[str], Optional[Quarantined]]:
        """(the mark of this attempt, None), or (None, why) when the file is quarantined."""
        folder = self._folder(path)
        killed = len(self.store.find(folder))
        if killed >= self.limit:
            return None, Quarantined(f"{killed} tasks reading this file were killed before they finished "
                                     f"(out of memory?); io.quarantine_after is {self.limit}, so it is skipped")
        mark = f"{folder}/{uuid.uuid4().hex}"
        self.store.makedirs(folder)
        self.store.touch(mark)
        return mark, None

    def end(self, path: str, mark: Optional[str], finished: bool) -> None:
        """This attempt is over: its mark goes; a file read to its end clears every mark of it
        (a process killed for another file's sake took this one's mark down with it)."""
        if finished:
            self.store.rm(self._folder(path))
        elif mark is not None:
            self.store.rm(mark)
