"""Incremental runs (``output.incremental: true``): a cron run takes only new input files.

Around the usual run, an incremental one: holds the output's lease (``lease.py``) from before it
lists anything until its ledger record is written; takes the files no committed run took
(``ledger.py``; a killed run's files first); gives each stage that keeps state for later runs
its folder under ``OUT/_index/<stage>/`` (``Stage.incremental``: dedup stages write the keys
they kept there and check new documents against earlier runs'); names its output files with
the run's number, so the commit adds them beside earlier runs' files and never touches those;
and adds to the report the run's number, its files and running totals over every run.
"""
from __future__ import annotations

from typing import Optional

from .config import Pipeline, ResolvedStage
from .lease import Lease
from .ledger import Ledger, RunFiles, run_prefix
from .manifest import MANIFEST
from .readers import InputFile
from .stats import WriteStats
from .storage import Storage

INDEX_FOLDER = "_index"


class IncrementalRun:
    def __init__(self, store: Storage, output, say, lock_wait_s: Optional[float] = None):
        self.store, self.say = store, say
        self.ledger = Ledger(store)
        wait = output.lock_wait_seconds if lock_wait_s is None else lock_wait_s
        self.lease = Lease(store, self.ledger.lease_path, output.lease_seconds, say).acquire(wait)
        self.run: Optional[RunFiles] = None
        self.stamps: dict[str, list] = {}

    def take(self, files: list[InputFile], stamps: list[list]) -> RunFiles:
        """This run's files (recorded as pending before any work) and their stamps."""
        run = self.ledger.take(files, stamps)
        self.stamps = {f.path: list(st) for f, st in zip(files, stamps)}
        for path in run.changed:
            self.say(f"incremental: {path} changed since a run took it; not taken again")
        what = "the files of run {n}, which did not finish".format(n=run.number) if run.resumed else "new input files"
        self.say(f"incremental: run {run.number}: {len(run.files)} {what} "
                 f"({len(self.ledger.runs())} earlier run(s))")
        self.ledger.start(run, self.stamps)
        self.run = run
        return run

    def stamps_of(self, files: list[InputFile]) -> list[list]:
        return [self.stamps.get(f.path) or [] for f in files]

    @property
    def name_prefix(self) -> str:
        return run_prefix(self.run.number)

    def pipeline(self, pipeline: Pipeline) -> Pipeline:
        """The pipeline with each stage's incremental parameters (its index under OUT/_index/)."""
        url = self.store.url(self.store.path(INDEX_FOLDER))
        stages = [ResolvedStage(rs.cls, rs.name, rs.cls.incremental(rs.params, f"{url}/{rs.name}"),
                                rs.resources, rs.type_name) for rs in pipeline.stages]
        return Pipeline(pipeline.config, stages, pipeline.languages, pipeline.source)

    def earlier_files(self) -> list[dict]:
        """The files earlier runs committed (kept by this run's commit)."""
        manifest = self.store.read_json(self.store.path(MANIFEST)) or {}
        mine = self.name_prefix
        return [f for f in manifest.get("files", []) if not f["path"].rsplit("/", 1)[-1].startswith(f"part-{mine}")]

    def commit(self, stats: WriteStats, manifest: dict) -> None:
        """The ledger record: from now on this run's files are never taken again."""
        if not self.lease.held():
            raise RuntimeError("incremental: this run lost the output's lease to another run; its files stay "
                               "pending and the next run takes them")
        added = [f["path"] for f in manifest["files"] if f"part-{self.name_prefix}" in f["path"]]
        self.ledger.commit(self.run, self.stamps, stats.to_json(), added)

    def report_section(self, pipeline, manifest: dict, build_report) -> dict:
        """The run's number and files, and every committed run's counts with their totals."""
        runs = self.ledger.runs()
        total = WriteStats()
        for r in runs:
            total.merge(WriteStats.from_json(r.get("counts") or {}))
        whole = build_report(pipeline, manifest, total, [], {}, wall_seconds=0.0, phase_seconds={})
        return {"run": self.run.number, "resumed": self.run.resumed, "input_files": len(self.run.files),
                "changed_files": self.run.changed,
                "runs": [{"run": r["run"], "input_files": len(r["files"]), "committed": r["committed"],
                          "input_docs": _docs(r, "input"), "output_docs": _docs(r, "output"),
                          "files_added": len(r.get("added", []))} for r in runs],
                "totals": {k: whole[k] for k in ("input", "output", "languages", "reject_reasons")}}

    def release(self) -> None:
        self.lease.release()


def _docs(record: dict, which: str) -> int:
    stats = WriteStats.from_json(record.get("counts") or {})
    kept = sum(v[0] for v in stats.kept.values())
    return kept if which == "output" else kept + sum(v[0] for v in stats.rejected.values())
