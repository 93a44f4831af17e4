"""The ledger of an incremental output: which input files each run processed.

``OUT/_ledger/run-<n>.json`` is written (atomically) when run ``n`` commits: its input files with
their size and stamp, its write-time counts and the files it added. ``OUT/_ledger/pending.json``
names the run in progress and its files, written before any work: a run that was killed is
picked up by the next one with exactly those files (so its finished phases are reused), and
files that arrived since wait for the run after. Only a run holding the output's lease
(``lease.py``) writes here.

A run does not read one record per run ever committed. Every ``SUMMARIZE_EVERY`` runs the ledger
writes ``seen-<n>.parquet`` (every input file a run took: path, stamp, run; a few bytes a file,
compressed) and then ``summary.json``, which names it and holds what does not grow with history:
the number of runs, every run's counts summed (``totals``) and the last ``RECENT`` runs' document
counts (for the report). A run reads the summary, its seen-file table and the few records after
it (``History``); the records stay as they are (``records()`` reads them all, for an audit).
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill.engine.io.listing import InputFile
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.report.stats import WriteStats

FOLDER = "_ledger"
PENDING = "pending.json"
SUMMARY = "summary.json"
#: runs committed after the summary before it is written again
SUMMARIZE_EVERY = 16
#: runs whose document counts the summary (and so the report) keeps one by one
RECENT = 32
SEEN_SCHEMA = pa.schema([("path", pa.string()), ("stamp", pa.string()), ("run", pa.int64())])


@dataclass
class RunFiles:
    """What one incremental run takes: its number, its files and why (new, or a killed run's)."""

    number: int
    files: list[InputFile]
    resumed: bool
    changed: list[str]   # processed files whose size or stamp changed since (not taken again)
    stamps: dict[str, list]   # path -> (size, stamp) as this run took it (a resumed run: as recorded)


@dataclass
class History:
    """What a run needs of every committed run, read once: none of it is a list of runs."""

    last: int = 0                                  # the last committed run's number
    count: int = 0                                 # committed runs
    seen: dict[str, tuple] = field(default_factory=dict)   # path -> (stamp, run) of every file taken
    recent: list[dict] = field(default_factory=list)   # the last RECENT runs (``brief``), oldest first
    totals: dict = field(default_factory=dict)     # every committed run's counts, summed (WriteStats JSON)
    through: int = 0                               # the last run the summary holds

    def add(self, record: dict) -> None:
        """A committed run's full record, after those already here."""
        self.last, self.count = max(self.last, record["run"]), self.count + 1
        for f in record["files"]:
            self.seen[f["path"]] = (_stamp(f), record["run"])
        self.recent = [*self.recent, brief(record)][-RECENT:]
        total = WriteStats.from_json(self.totals)
        total.merge(WriteStats.from_json(record.get("counts") or {}))
        self.totals = total.to_json()


class Ledger:
    def __init__(self, store: Storage):
        self.store = store
        self.folder = store.path(FOLDER)
        self._history: Optional[History] = None

    def _record_names(self) -> list[str]:
        return [n for n in self._names() if n.startswith("run-") and n.endswith(".json")]

    def _names(self) -> list[str]:
        return self.store.names(self.folder)

    def has_runs(self) -> bool:
        """Whether any run committed here (a listing; no record is read)."""
        return bool(self._record_names())

    def history(self) -> History:
        """Every committed run as a run needs it, read once per run (only the run holding the lease
        adds one): the summary, its seen-file table and the records after it. A record that cannot
        be read stops the run: going on without it would take its files again."""
        if self._history is None:
            self._history = self._read_history()
        return self._history

    def _read_history(self) -> History:
        summary = self.store.read_json(f"{self.folder}/{SUMMARY}") or {}
        history = _from_summary(summary, self._read_seen(summary.get("seen")))
        for name in self._record_names():
            if _number(name) > history.through:
                history.add(self._read_record(name))
        return history

    def _read_seen(self, name: Optional[str]) -> dict[str, tuple]:
        if not name:
            return {}
        with self.store.open(f"{self.folder}/{name}", "rb") as fh:
            table = pq.read_table(io.BytesIO(fh.read()))
        return {p: (json.loads(st), r) for p, st, r in zip(*(table[c].to_pylist() for c in ("path", "stamp", "run")))}

    def _read_record(self, name: str) -> dict:
        with self.store.open(f"{self.folder}/{name}", "rb") as fh:
            return json.loads(fh.read())

    def records(self) -> list[dict]:
        """Every committed run's full record, oldest first: one read per run ever committed (for an
        audit, or to rebuild what the summary does not keep; a run itself reads ``history()``)."""
        return [self._read_record(n) for n in self._record_names()]

    def totals(self) -> WriteStats:
        """The counts of every committed run, summed."""
        return WriteStats.from_json(self.history().totals)

    def pending(self) -> Optional[dict]:
        return self.store.read_json(f"{self.folder}/{PENDING}")

    def take(self, files: list[InputFile], stamps: list[list]) -> RunFiles:
        """The files this run processes: a killed run's, else every file no committed run took."""
        history = self.history()
        number = history.last + 1
        now = {f.path: list(st) for f, st in zip(files, stamps)}
        pending = self.pending()
        if pending and pending.get("run") == number and pending.get("files"):
            known = {f.path: f for f in files}
            rows = pending["files"]
            taken = [known.get(p["path"]) or InputFile(p["path"], p["source"], p["format"]) for p in rows]
            changed = [p["path"] for p in rows if p["path"] in now and now[p["path"]] != _stamp(p)]
            return RunFiles(number, taken, True, changed, {p["path"]: _stamp(p) for p in rows})
        done = history.seen
        new = [f for f in files if f.path not in done]
        changed = [f.path for f in files if f.path in done and done[f.path][0] != now[f.path]]
        return RunFiles(number, new, False, changed, {f.path: now[f.path] for f in new})

    def start(self, run: RunFiles) -> None:
        """Records the run's files before any work (nothing when it has none)."""
        if not run.resumed and run.files:
            self.store.write_json_atomic(f"{self.folder}/{PENDING}", {
                "run": run.number, "started": time.time(), "files": _file_rows(run.files, run.stamps)})

    def commit(self, run: RunFiles, counts: dict, added: list[dict]) -> dict:
        """The run's record (``added``: the manifest entries of the files it wrote)."""
        record = {"run": run.number, "committed": time.time(), "files": _file_rows(run.files, run.stamps),
                  "counts": counts, "added": added}
        history = self.history()
        self.store.write_json_atomic(f"{self.folder}/run-{run.number:06d}.json", record)
        self.store.rm(f"{self.folder}/{PENDING}")
        history.add(record)
        if run.number - history.through >= SUMMARIZE_EVERY:
            self._summarize(history)
        return record

    def _summarize(self, history: History) -> None:
        """The seen-file table, then the summary naming it (the atomic step), then older tables."""
        name = f"seen-{history.last:06d}.parquet"
        rows = sorted(history.seen.items())
        table = pa.table({"path": [p for p, _ in rows], "stamp": [json.dumps(st) for _, (st, _) in rows],
                          "run": [r for _, (_, r) in rows]}, schema=SEEN_SCHEMA)
        self.store.write_parquet_atomic(f"{self.folder}/{name}", table)
        self.store.write_json_atomic(f"{self.folder}/{SUMMARY}", {
            "version": 2, "through": history.last, "count": history.count, "seen": name,
            "recent": history.recent, "totals": history.totals})
        history.through = history.last
        for old in self._names():
            if old.startswith("seen-") and old != name:
                self.store.rm(f"{self.folder}/{old}")


def _number(name: str) -> int:
    return int(name[len("run-"):-len(".json")])


def _from_summary(summary: dict, seen: dict[str, tuple]) -> History:
    """The history a summary holds; a summary of the first kind (every run's record, files and
    all) is read as it is."""
    if "runs" not in summary:
        return History(summary.get("through", 0), summary.get("count", 0), seen, summary.get("recent", []),
                       summary.get("totals", {}), summary.get("through", 0))
    history = History(through=summary.get("through", 0))
    for r in summary["runs"]:
        history.add(r)
    if "totals" in summary:   # slim records: their counts are summed there
        history.totals = summary["totals"]
    return history


def brief(record: dict) -> dict:
    """What the summary and the report keep of a run: its number, when it committed, and how many
    input files, documents read and kept, and files added it had."""
    if "input_docs" not in record:
        stats = WriteStats.from_json(record["counts"] or {})
        kept = sum(v[0] for v in stats.kept.values())
        docs = (kept + sum(v[0] for v in stats.rejected.values()), kept)
        added = len(record.get("added", []))
    else:   # a record as the first kind of summary kept it
        docs, added = (record["input_docs"], record["output_docs"]), record.get("files_added", 0)
    return {"run": record["run"], "committed": record["committed"], "input_files": len(record.get("files", [])),
            "input_docs": docs[0], "output_docs": docs[1], "files_added": added}


def _file_rows(files: list[InputFile], stamps: dict[str, list]) -> list[dict]:
    return [{"path": f.path, "source": f.source, "format": f.format, "stamp": list(stamps.get(f.path) or [])}
            for f in files]


def _stamp(row: dict) -> list:
    return list(row.get("stamp") or [])


def run_prefix(number: int) -> str:
    """What every output file name of run ``number`` starts with after ``part-``, so no run
    replaces another's files."""
    return f"r{number:06d}-"
