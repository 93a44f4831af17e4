"""Write-time statistics: counts and sums gathered while the final partitions are written.

Each task that writes a chunk's curated data and rejects returns one ``WriteStats``; they merge by
addition, are kept with the committed output (``_manifest.json`` ``counts``), and the report is
built from them, so no pass re-reads the output to count it. Kept documents are counted per
language; rejected ones per (stage, reason, language), the reason as the stage reports it
(``Stage.report_reason``: e.g. every ``duplicate_of:<id>`` counts as ``duplicate``); files that
could not be read fully are listed with their path and error.
"""
from __future__ import annotations

import json
from typing import Callable, Optional

import pyarrow as pa
import pyarrow.compute as pc

from .readers import FILE_REASONS

UNITS = ("docs", "chars", "tokens")


def _group_sums(table: pa.Table, keys: list[str]) -> list[tuple]:
    """(key values..., docs, chars, tokens) per distinct key tuple of ``table``."""
    if table.num_rows == 0:
        return []
    cols = {k: pc.fill_null(table[k].cast(pa.string()), "") if k in table.column_names
            else pa.array([""] * table.num_rows, pa.string()) for k in keys}
    cols["num_chars"] = pc.fill_null(table["num_chars"], 0)
    cols["num_tokens"] = pc.fill_null(table["num_tokens"], 0)
    agg = pa.table(cols).group_by(keys).aggregate([("num_chars", "count"), ("num_chars", "sum"), ("num_tokens", "sum")])
    rows = zip(*[agg[k].to_pylist() for k in keys], agg["num_chars_count"].to_pylist(),
               agg["num_chars_sum"].to_pylist(), agg["num_tokens_sum"].to_pylist())
    return [tuple(r) for r in rows]


class WriteStats:
    """Counts of what one or more writer tasks wrote; ``merge`` adds another's."""

    def __init__(self):
        self.kept: dict[str, list[int]] = {}                   # language -> [docs, chars, tokens]
        self.rejected: dict[tuple[str, str, str], list[int]] = {}  # (stage, reason, language) -> [...]
        self.file_errors: list[dict] = []

    @staticmethod
    def _add(into: dict, key, values) -> None:
        cur = into.setdefault(key, [0, 0, 0])
        for i, v in enumerate(values):
            cur[i] += int(v or 0)

    def add_kept(self, table: pa.Table) -> None:
        for lang, *vals in _group_sums(table, ["language"]):
            self._add(self.kept, lang or "und", vals)

    def add_rejected(self, table: pa.Table, report_reason: Optional[Callable[[str, pa.Array], pa.Array]] = None) -> None:
        """Count rejects; ``report_reason(stage, reasons)`` maps a stage's reasons to report labels."""
        if table.num_rows == 0:
            return
        files = pc.is_in(table["reject_reason"], pa.array(FILE_REASONS, pa.string()))
        if pc.any(files).as_py():
            self._add_file_errors(table.filter(files))
            table = table.filter(pc.invert(files))
        if report_reason is not None and table.num_rows:
            table = self._label_reasons(table, report_reason)
        for stage, reason, lang, *vals in _group_sums(table, ["reject_stage", "reject_reason", "language"]):
            self._add(self.rejected, (stage or "unknown", reason or "unknown", lang), vals)

    @staticmethod
    def _label_reasons(table: pa.Table, report_reason) -> pa.Table:
        stages = pc.fill_null(table["reject_stage"], "")
        reasons = table["reject_reason"].combine_chunks() if isinstance(table["reject_reason"], pa.ChunkedArray) \
            else table["reject_reason"]
        for stage in pc.unique(stages).to_pylist():
            mask = pc.equal(stages, stage)
            reasons = pc.if_else(mask, report_reason(stage, reasons), reasons)
        return table.set_column(table.column_names.index("reject_reason"), "reject_reason", reasons)

    def _add_file_errors(self, rows: pa.Table) -> None:
        for reason, source, meta in zip(rows["reject_reason"].to_pylist(), rows["source"].to_pylist(),
                                        rows["meta"].to_pylist()):
            info = json.loads(meta or "{}")
            self.file_errors.append({"path": info.get("path", source), "kind": reason, "error": info.get("error")})

    def merge(self, other: "WriteStats") -> "WriteStats":
        for k, v in other.kept.items():
            self._add(self.kept, k, v)
        for k, v in other.rejected.items():
            self._add(self.rejected, k, v)
        self.file_errors += other.file_errors
        return self

    # -- JSON ------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "kept": [[lang, *v] for lang, v in sorted(self.kept.items())],
            "rejected": [[*k, *v] for k, v in sorted(self.rejected.items())],
            "file_errors": sorted(self.file_errors, key=lambda e: (str(e["path"]), e["kind"])),
        }

    @classmethod
    def from_json(cls, data: dict) -> "WriteStats":
        st = cls()
        for lang, *v in data.get("kept", []):
            cls._add(st.kept, lang, v)
        for stage, reason, lang, *v in data.get("rejected", []):
            cls._add(st.rejected, (stage, reason, lang), v)
        st.file_errors = list(data.get("file_errors", []))
        return st
