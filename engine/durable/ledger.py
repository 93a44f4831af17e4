"""The ledger of an incremental output: which input files each run processed.

``OUT/_ledger/run-<n>.json`` is written (atomically) when run ``n`` commits: its input files with
their size and stamp, its write-time counts and the files it added. ``OUT/_ledger/pending.json``
names the run in progress and its files, written before any work: a run that was killed is
picked up by the next one with exactly those files (so its finished phases are reused), and
files that arrived since wait for the run after. Only a run holding the output's lease
(``lease.py``) writes here.

Every ``SUMMARIZE_EVERY`` runs, ``OUT/_ledger/summary.json`` gathers every record so far (each
run's input files and document counts; the list of files it added is in the manifest's parts, and
its full counts are summed into the summary's ``totals``), so a run reads the summary and the few
records after it, not one file per run ever committed; the records stay as they are.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Optional

from tokenmill.engine.io.listing import InputFile
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.report.stats import WriteStats

FOLDER = "_ledger"
PENDING = "pending.json"
SUMMARY = "summary.json"
#: runs committed after the summary before it is written again
SUMMARIZE_EVERY = 16


@dataclass
class RunFiles:
    """What one incremental run takes: its number, its files and why (new, or a killed run's)."""

    number: int
    files: list[InputFile]
    resumed: bool
    changed: list[str]   # processed files whose size or stamp changed since (not taken again)
    stamps: dict[str, list]   # path -> (size, stamp) as this run took it (a resumed run: as recorded)


class Ledger:
    def __init__(self, store: Storage):
        self.store = store
        self.folder = store.path(FOLDER)
        self._runs: Optional[list[dict]] = None
        self._summarized = 0   # the last run the summary holds
        self._totals: dict = {}   # the summed counts of the runs the summary holds

    def runs(self) -> list[dict]:
        """Committed runs, oldest first, read once per run (only the run holding the lease adds
        one). A record that cannot be read stops the run: going on without it would take its
        files again."""
        if self._runs is None:
            self._runs = self._read_runs()
        return self._runs

    def _record_names(self) -> list[str]:
        return sorted(p.rsplit("/", 1)[-1] for p in self.store.find(self.folder)
                      if p.rsplit("/", 1)[-1].startswith("run-") and p.endswith(".json"))

    def has_runs(self) -> bool:
        """Whether any run committed here (a listing; no record is read)."""
        return bool(self._record_names())

    def _read_runs(self) -> list[dict]:
        summary = self.store.read_json(f"{self.folder}/{SUMMARY}") or {"through": 0, "runs": []}
        self._summarized, self._totals = summary["through"], summary.get("totals", {})
        names = [n for n in self._record_names() if int(n[len("run-"):-len(".json")]) > summary["through"]]
        out = list(summary["runs"])
        for name in names:
            with self.store.open(f"{self.folder}/{name}", "rb") as fh:
                out.append(json.loads(fh.read()))
        return out

    def totals(self) -> WriteStats:
        """The counts of every committed run, summed."""
        runs = self.runs()   # reads the summary's totals too
        total = WriteStats.from_json(self._totals)
        for r in runs:
            if "counts" in r:   # a record the summary does not hold
                total.merge(WriteStats.from_json(r["counts"]))
        return total

    def pending(self) -> Optional[dict]:
        return self.store.read_json(f"{self.folder}/{PENDING}")

    def take(self, files: list[InputFile], stamps: list[list]) -> RunFiles:
        """The files this run processes: a killed run's, else every file no committed run took."""
        runs = self.runs()
        number = max((r["run"] for r in runs), default=0) + 1
        now = {f.path: list(st) for f, st in zip(files, stamps)}
        pending = self.pending()
        if pending and pending.get("run") == number and pending.get("files"):
            known = {f.path: f for f in files}
            rows = pending["files"]
            taken = [known.get(p["path"]) or InputFile(p["path"], p["source"], p["format"]) for p in rows]
            changed = [p["path"] for p in rows if p["path"] in now and now[p["path"]] != _stamp(p)]
            return RunFiles(number, taken, True, changed, {p["path"]: _stamp(p) for p in rows})
        done = {f["path"]: f for r in runs for f in r["files"]}
        new = [f for f in files if f.path not in done]
        changed = [f.path for f in files if f.path in done and _stamp(done[f.path]) != now[f.path]]
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
        self.store.write_json_atomic(f"{self.folder}/run-{run.number:06d}.json", record)
        self.store.rm(f"{self.folder}/{PENDING}")
        self._runs = [r for r in self.runs() if r["run"] != run.number] + [record]
        if run.number - self._summarized >= SUMMARIZE_EVERY:
            totals = self.totals().to_json()
            self.store.write_json_atomic(f"{self.folder}/{SUMMARY}", {
                "through": run.number, "runs": [_summarized(r) for r in self._runs], "totals": totals})
            self._summarized, self._totals = run.number, totals
            self._runs = [_summarized(r) for r in self._runs]
        return record


def _summarized(record: dict) -> dict:
    """A run's record as the summary keeps it: the number of files it added and of documents it
    read and kept, not their lists and full counts."""
    if "counts" not in record:
        return record
    out = {k: v for k, v in record.items() if k not in ("added", "counts")}
    out["files_added"] = len(record.get("added", []))
    out["input_docs"], out["output_docs"] = docs_of(record)
    return out


def docs_of(record: dict) -> tuple[int, int]:
    """(documents read, documents kept) of a run's record, full or as the summary keeps it."""
    if "input_docs" in record:
        return record["input_docs"], record["output_docs"]
    stats = WriteStats.from_json(record.get("counts") or {})
    kept = sum(v[0] for v in stats.kept.values())
    return kept + sum(v[0] for v in stats.rejected.values()), kept


def _file_rows(files: list[InputFile], stamps: dict[str, list]) -> list[dict]:
    return [{"path": f.path, "source": f.source, "format": f.format, "stamp": list(stamps.get(f.path) or [])}
            for f in files]


def _stamp(row: dict) -> list:
    return list(row.get("stamp") or [])


def run_prefix(number: int) -> str:
    """What every output file name of run ``number`` starts with after ``part-``, so no run
    replaces another's files."""
    return f"r{number:06d}-"
