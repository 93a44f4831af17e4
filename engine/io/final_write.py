"""The final partitions of one chunk, as the task that finalizes it writes them: kept documents to
``data/language=xx/``, each generating stage's kept new rows to its own folder (``synthetic/``),
rejects to ``rejects/``, each counted into the task's ``WriteStats`` as it is written, with every
file's rows, bytes and checksum (the manifest's entries)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.batches import kept_rows, rejected_rows
from tokenmill.engine.io.writers import PartitionedWriter
from tokenmill.engine.jobs import FinalJob
from tokenmill.engine.report.stats import WriteStats
from tokenmill.engine.schema import EMITTED


class FinalWriters:
    """The final partitions of one chunk: curated data, each generating stage's folder, rejects."""

    def __init__(self, job: FinalJob, prefix: str):
        out = job.output
        self.job, self.prefix = job, prefix
        self.labels = {rs.name: rs.cls.report_reason for rs in job.stages}
        self.score_column = next((rs.cls.score_column for rs in job.stages if rs.cls.score_column), None)
        self.measures = next(((rs.cls.measures_column, rs.cls.measure_bins) for rs in job.stages
                              if rs.cls.measures_column), None)
        self.folders = {rs.name: rs.cls.emits_to for rs in job.stages if rs.generates}
        self.accounting = {rs.name: (rs.cls.accounting_by, rs.cls.accounting_sums) for rs in job.stages if rs.generates}
        self.writers: dict[str, PartitionedWriter] = {}
        self.rejects = PartitionedWriter(f"{job.out_url}/rejects", prefix, None, out.compression,
                                         out.max_rows_per_file) if out.write_rejects else None

    def _writer(self, folder: str) -> PartitionedWriter:
        if folder not in self.writers:
            out = self.job.output
            self.writers[folder] = PartitionedWriter(f"{self.job.out_url}/{folder}", self.prefix, "language",
                                                     out.compression, out.max_rows_per_file)
        return self.writers[folder]

    def _label(self, stage: str, reasons: pa.Array) -> pa.Array:
        return self.labels[stage](reasons) if stage in self.labels else reasons

    def write_read(self, table: pa.Table, stats: WriteStats) -> None:
        stats.add_measures(table)   # before the measures column is dropped from the kept rows
        stats.add_counts(table)     # and the stages' counters, kept and rejected rows alike
        kept, rej = kept_rows(table, self.job.drop), rejected_rows(table)
        stats.add_kept(kept)
        stats.add_rejected(rej, self._label)
        self._writer("data").write(kept)
        if self.rejects is not None:
            self.rejects.write(rej)

    def write_emitted(self, table: pa.Table, stats: WriteStats) -> None:
        """New rows, per generating stage: kept ones to its folder, rejected ones to rejects."""
        for stage in pc.unique(table[EMITTED]).to_pylist():
            rows = table.filter(pc.equal(table[EMITTED], stage))
            by, sums = self.accounting.get(stage, ((), ()))
            stats.add_emitted(stage, rows, by, sums)
            kept, rej = kept_rows(rows, self.job.drop), rejected_rows(rows)
            stats.add_emitted_kept(stage, kept)
            stats.add_emitted_rejected(stage, rej, self._label)
            self._writer(self.folders.get(stage) or "synthetic").write(kept)
            if self.rejects is not None:
                self.rejects.write(rej)

    def close(self, stats: WriteStats) -> None:
        """Finish every file; ``stats.files`` gets their manifest entries (paths under the output)."""
        named = [(folder, w) for folder, w in self.writers.items()] + \
            ([("rejects", self.rejects)] if self.rejects is not None else [])
        for folder, w in named:
            w.close()
            stats.files += [{**f, "path": f"{folder}/{f['path']}"} for f in w.described]
