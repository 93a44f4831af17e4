"""Incremental runs (``output.incremental: true``): a cron run takes only new input files.

Around the usual run, an incremental one (under the output's lease, ``lease.py``, as every run):
takes the files no committed run took
(``ledger.py``; a killed run's files first); gives each stage that keeps state for later runs
its folder under ``OUT/_index/<stage>/`` (``Stage.incremental``: dedup stages write the keys
they kept there and check new documents against earlier runs'); names its output files with
the run's number, so the commit adds them beside earlier runs' files and never touches those, and
writes them to its own part of the sharded manifest (``manifest.py``);
and adds to the report the run's number, its files and running totals over every run.
"""
from __future__ import annotations

from typing import Optional

from tokenmill.engine.config import Pipeline, ResolvedStage
from tokenmill.engine.durable.lease import Lease
from tokenmill.engine.durable.ledger import Ledger, RunFiles, run_prefix
from tokenmill.engine.durable.manifest import (
    MANIFEST,
    file_counts,
    is_sharded,
    named_by,
    part_name,
    part_runs,
    with_run,
)
from tokenmill.engine.io.listing import InputFile
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.report.stats import WriteStats

INDEX_FOLDER = "_index"


class IncrementalRun:
    """An incremental run's ledger work, under the output's ``lease`` (held by the caller, which
    has already refused an output that is not incremental: ``ownership.check_output``)."""

    def __init__(self, store: Storage, lease: Lease, say):
        self.store, self.say, self.lease = store, say, lease
        self.ledger = Ledger(store)
        self.run: Optional[RunFiles] = None

    def take(self, files: list[InputFile], stamps: list[list]) -> RunFiles:
        """This run's files (recorded as pending before any work)."""
        run = self.ledger.take(files, stamps)
        self.run = run
        for path in run.changed:
            what = "after the killed run took it (its recorded state is used)" if run.resumed else \
                "since a run took it; not taken again"
            self.say(f"incremental: {path} changed {what}")
        what = f"the files of run {run.number}, which did not finish" if run.resumed else "new input files"
        self.say(f"incremental: run {run.number}: {len(run.files)} {what} ({run.number - 1} earlier run(s))")
        self.ledger.start(run)
        return run

    def stamps_of(self, files: list[InputFile]) -> list[list]:
        return [self.run.stamps.get(f.path) or [] for f in files]

    @property
    def run_id(self) -> str:
        """What this run leaves for later runs (dedup indexes) is named by its number, so a killed
        run's leftovers are its own on the next try, whatever its fingerprint."""
        return f"r{self.run.number:06d}"

    @property
    def name_prefix(self) -> str:
        """What every output file of this run starts with (``part-r000003-...``)."""
        return run_prefix(self.run.number)

    def pipeline(self, pipeline: Pipeline) -> Pipeline:
        """The pipeline with each stage's incremental parameters (its index under OUT/_index/)."""
        url = self.store.url(self.store.path(INDEX_FOLDER))
        stages = [ResolvedStage(rs.cls, rs.name, rs.cls.incremental(rs.params, f"{url}/{rs.name}"),
                                rs.resources, rs.type_name) for rs in pipeline.stages]
        return Pipeline(pipeline.config, stages, pipeline.languages, pipeline.source)

    @property
    def part(self) -> int:
        """This run's part of the sharded manifest (``manifest.part_name``): its number."""
        return self.run.number

    def earlier(self) -> dict:
        """What the manifest's index keeps of earlier runs: their parts and file counts. An output
        whose manifest lists every file (before manifests were sharded) gets a part per run from
        the ledger's record of the files each run added (nothing is read from the output)."""
        manifest = self.store.read_json(self.store.path(MANIFEST)) or {}
        if is_sharded(manifest):
            return {"part_runs": part_runs(manifest), "file_counts": manifest.get("file_counts", {})}
        runs, files = [], []
        for r in self.ledger.records():
            name = part_name(r["run"])
            part = self.store.read_json(self.store.path(name))
            if part is None:
                if "added" not in r:
                    raise RuntimeError(f"{self.store.url(self.store.path(name))}: run {r['run']}'s part of the "
                                       "manifest is missing and the ledger's record does not list its files")
                self.lease.check()
                part = {"files": r["added"]}
                self.store.write_json_atomic(self.store.path(name), part)
            runs = with_run(runs, r["run"])
            files += part["files"]
        return {"part_runs": runs, "file_counts": file_counts(files)}

    def commit(self, stats: WriteStats, manifest: dict) -> None:
        """The ledger record: from now on this run's files are never taken again."""
        self.lease.check()
        added = [f for f in manifest["files"] if named_by(f["path"], self.name_prefix)]
        self.ledger.commit(self.run, stats.to_json(), added)

    def report_section(self, pipeline, manifest: dict, build_report) -> dict:
        """The run's number and files, the last ``ledger.RECENT`` runs' counts, and totals over
        every committed run (every run's record stays in the ledger)."""
        history = self.ledger.history()
        whole = build_report(pipeline, manifest, self.ledger.totals(), [], {}, wall_seconds=0.0, phase_seconds={})
        return {"run": self.run.number, "resumed": self.run.resumed, "input_files": len(self.run.files),
                "changed_files": self.run.changed, "run_count": history.count, "runs": history.recent,
                "totals": {k: whole[k] for k in ("input", "output", "languages", "reject_reasons")}}
