"""Write-time statistics: counts and sums gathered while the final partitions are written.

Each task that writes a chunk's curated data and rejects returns one ``WriteStats``; they merge by
addition, are kept with the committed output (``_manifest.json`` ``counts``), and the report is
built from them, so no pass re-reads the output to count it. Kept documents are counted per
language; rejected ones per (stage, reason, language), the reason as the stage reports it
(``Stage.report_reason``: e.g. every ``duplicate_of:<id>`` counts as ``duplicate``); files that
could not be read fully are listed with their path and error; documents with a score (the column
a stage names as its ``score_column``, e.g. ``quality_score``) add to a histogram of it per
language (kept under the JSON key ``quality_scores``). A generating stage's new rows are counted apart from the
documents read (so the funnel from input to output stays exact): kept ones per (stage, language),
rejected ones per (stage, rejecting stage, reason, language), and the generation costs the stage
names (``accounting_sums``, e.g. model input/output tokens) summed per ``accounting_by`` values;
the stages' per-row counters (``engine/counts.py``: what a modifier removed, PII kinds replaced,
eval items matched) are summed per (stage, counter) over every document read.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.counts import sums as counter_sums
from tokenmill.engine.io.readers import FILE_REASONS
from tokenmill.engine.report.measures import measure_counts, merge_counts
from tokenmill.engine.schema import REJECT_THRESHOLD, REJECT_VALUE

SCORE_BINS = 20   # score histograms: bins of 0.05 over [0, 1]
EXAMPLES = 5      # example documents kept per reject reason and per language
EXAMPLE_CHARS = 300


def _examples(table: pa.Table, keys: list[str]) -> dict[tuple, list[dict]]:
    """Up to ``EXAMPLES`` rows per distinct ``keys`` tuple: those with the smallest ids (so the
    choice does not depend on how rows were split into chunks), as small dicts."""
    if table.num_rows == 0 or "id" not in table.column_names:
        return {}
    cols = {k: pc.fill_null(table[k].cast(pa.string()), "") if k in table.column_names
            else pa.array([""] * table.num_rows, pa.string()) for k in keys}
    t = pa.table({**cols, "_id": pc.fill_null(table["id"].cast(pa.string()), ""),
                  "_i": pa.array(np.arange(table.num_rows))})
    t = t.sort_by([(k, "ascending") for k in keys] + [("_id", "ascending")])
    start = np.zeros(t.num_rows, bool)
    start[0] = True
    for k in keys:
        col = t[k].combine_chunks()
        start[1:] |= pc.not_equal(col.slice(1), col.slice(0, t.num_rows - 1)).to_numpy(zero_copy_only=False)
    pos = np.arange(t.num_rows)
    rank = pos - np.maximum.accumulate(np.where(start, pos, 0))
    picked = t.filter(pa.array(rank < EXAMPLES))
    rows = table.take(picked["_i"])
    text = pc.utf8_slice_codeunits(pc.fill_null(rows["text"].cast(pa.large_string()), ""), 0, EXAMPLE_CHARS) \
        if "text" in rows.column_names else pa.nulls(rows.num_rows, pa.string())

    def col(name: str) -> list:
        return rows[name].to_pylist() if name in rows.column_names else [None] * rows.num_rows

    out: dict[tuple, list[dict]] = {}
    for key, doc_id, url, lang, reason, value, bound, txt in zip(
            zip(*[picked[k].to_pylist() for k in keys]), col("id"), col("url"), col("language"),
            col("reject_reason"), col(REJECT_VALUE), col(REJECT_THRESHOLD), text.to_pylist()):
        ex = {"id": doc_id, "url": url, "language": lang or "und", "text": txt}
        if reason is not None:
            ex["reason"] = reason
        if value is not None:   # the measure of the failing check against its threshold
            ex["value"], ex["threshold"] = round(value, 6), bound
        out.setdefault(tuple(key), []).append(ex)
    return out


def _merge_examples(into: dict, other: dict) -> None:
    for key, rows in other.items():
        both = {str(r["id"]): r for r in into.get(key, []) + rows}
        into[key] = [both[i] for i in sorted(both)[:EXAMPLES]]


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


def _score_counts(table: pa.Table, column: Optional[str]) -> list[tuple[str, int, int]]:
    """(language, bin, documents) of the rows that carry a score in ``column``."""
    if column is None or column not in table.column_names or table.num_rows == 0:
        return []
    scored = table.filter(pc.is_valid(table[column]))
    if scored.num_rows == 0:
        return []
    bins = pc.min_element_wise(pc.floor(pc.multiply(scored[column].cast(pa.float64()), SCORE_BINS)),
                               SCORE_BINS - 1).cast(pa.int32())
    lang = pc.fill_null(scored["language"], "und") if "language" in scored.column_names else \
        pa.array(["und"] * scored.num_rows, pa.string())
    agg = pa.table({"language": lang, "bin": bins}).group_by(["language", "bin"]).aggregate([("bin", "count")])
    return list(zip(agg["language"].to_pylist(), agg["bin"].to_pylist(), agg["bin_count"].to_pylist()))


class WriteStats:
    """Counts of what one or more writer tasks wrote; ``merge`` adds another's."""

    def __init__(self, score_column: Optional[str] = None, measures: Optional[tuple[str, dict]] = None):
        self.score_column = score_column                       # the column histogrammed (not serialized)
        self.measure_spec = measures                           # (struct column, bin edges per field)
        self.measures: dict[tuple[str, str], list[int]] = {}   # (language, measure) -> counts per bin
        self.kept: dict[str, list[int]] = {}                   # language -> [docs, chars, tokens]
        self.rejected: dict[tuple[str, str, str], list[int]] = {}  # (stage, reason, language) -> [...]
        self.file_errors: list[dict] = []
        self.scores: dict[str, list[int]] = {}                 # language -> score histogram
        self.emitted: dict[tuple[str, str], list[int]] = {}    # (generating stage, language) -> [...]
        self.emitted_rejected: dict[tuple[str, str, str, str], list[int]] = {}   # (stage, by, reason, lang)
        self.accounting: dict[tuple, list[int]] = {}           # (stage, *by values) -> [rows, *sums]
        self.files: list[dict] = []                            # files written: path, rows, bytes, sha256
        self.kept_examples: dict[tuple, list[dict]] = {}        # (language,) -> up to EXAMPLES documents
        self.rejected_examples: dict[tuple, list[dict]] = {}    # (stage, reason label) -> up to EXAMPLES
        self.counts: dict[tuple[str, str], int] = {}           # (stage, counter) -> sum over rows read

    def add_counts(self, table: pa.Table) -> None:
        """Sum the stages' per-row counters (``engine/counts.py``) of every row (kept or rejected)."""
        for stage, key, n in counter_sums(table):
            self.counts[(stage, key)] = self.counts.get((stage, key), 0) + int(n or 0)

    def _add_scores(self, table: pa.Table) -> None:
        for lang, b, n in _score_counts(table, self.score_column):
            self.scores.setdefault(lang, [0] * SCORE_BINS)[max(0, b)] += n

    @staticmethod
    def _add(into: dict, key, values) -> None:
        cur = into.setdefault(key, [0] * len(values))
        for i, v in enumerate(values):
            cur[i] += int(v or 0)

    def add_measures(self, table: pa.Table) -> None:
        """Histogram the measures of every row that carries them (kept or rejected)."""
        if self.measure_spec is not None:
            merge_counts(self.measures, measure_counts(table, *self.measure_spec))

    def add_kept(self, table: pa.Table) -> None:
        self._add_scores(table)
        for lang, *vals in _group_sums(table, ["language"]):
            self._add(self.kept, lang or "und", vals)
        _merge_examples(self.kept_examples, _examples(table, ["language"]))

    def add_rejected(self, table: pa.Table, report_reason: Optional[Callable[[str, pa.Array], pa.Array]] = None) -> None:
        """Count rejects; ``report_reason(stage, reasons)`` maps a stage's reasons to report labels."""
        if table.num_rows == 0:
            return
        files = pc.is_in(table["reject_reason"], pa.array(FILE_REASONS, pa.string()))
        if pc.any(files).as_py():
            self._add_file_errors(table.filter(files))
            table = table.filter(pc.invert(files))
        self._add_scores(table)
        for stage, reason, lang, *vals in self._by_reason(table, report_reason):
            self._add(self.rejected, (stage or "unknown", reason or "unknown", lang), vals)
        if table.num_rows:
            labels = self._label_reasons(table, report_reason) if report_reason is not None else table
            labeled = table.append_column("_label", labels["reject_reason"])
            _merge_examples(self.rejected_examples, _examples(labeled, ["reject_stage", "_label"]))

    def _by_reason(self, table: pa.Table, report_reason) -> list[tuple]:
        """(stage, report label, language, docs, chars, tokens) of rejected rows."""
        if report_reason is not None and table.num_rows:
            table = self._label_reasons(table, report_reason)
        return _group_sums(table, ["reject_stage", "reject_reason", "language"])

    @staticmethod
    def _label_reasons(table: pa.Table, report_reason) -> pa.Table:
        stages = pc.fill_null(table["reject_stage"], "")
        reasons = table["reject_reason"].combine_chunks() if isinstance(table["reject_reason"], pa.ChunkedArray) \
            else table["reject_reason"]
        for stage in pc.unique(stages).to_pylist():
            mask = pc.equal(stages, stage)
            reasons = pc.if_else(mask, report_reason(stage, reasons), reasons)
        return table.set_column(table.column_names.index("reject_reason"), "reject_reason", reasons)

    def add_emitted(self, stage: str, rows: pa.Table, by: tuple[str, ...], sums: tuple[str, ...]) -> None:
        """Generation costs of a stage's new rows (kept and rejected): rows and ``sums`` per ``by``."""
        if rows.num_rows == 0:
            return
        keys = {f"k{i}": pc.fill_null(rows[c].cast(pa.string()) if c in rows.column_names else
                                      pa.nulls(rows.num_rows, pa.string()), "und" if c == "language" else "")
                for i, c in enumerate(by)}   # no language: und, as the curated partitions say
        keys["_one"] = pa.array([1] * rows.num_rows, pa.int64())
        vals = {f"s{i}": pc.fill_null(rows[c], 0).cast(pa.int64()) for i, c in enumerate(sums)}
        agg = pa.table({**keys, **vals}).group_by(list(keys)[:-1] or []).aggregate(
            [("_one", "sum")] + [(f"s{i}", "sum") for i in range(len(sums))])
        cols = [agg[f"k{i}"].to_pylist() for i in range(len(by))]
        counts = [agg["_one_sum"].to_pylist()] + [agg[f"s{i}_sum"].to_pylist() for i in range(len(sums))]
        for j in range(agg.num_rows):
            self._add(self.accounting, (stage, *[c[j] for c in cols]), [v[j] for v in counts])

    def add_emitted_kept(self, stage: str, table: pa.Table) -> None:
        for lang, *vals in _group_sums(table, ["language"]):
            self._add(self.emitted, (stage, lang or "und"), vals)

    def add_emitted_rejected(self, stage: str, table: pa.Table, report_reason=None) -> None:
        for by, reason, lang, *vals in self._by_reason(table, report_reason):
            self._add(self.emitted_rejected, (stage, by, reason, lang or "und"), vals)

    def _add_file_errors(self, rows: pa.Table) -> None:
        for reason, source, meta in zip(rows["reject_reason"].to_pylist(), rows["source"].to_pylist(),
                                        rows["meta"].to_pylist()):
            info = json.loads(meta or "{}")
            self.file_errors.append({"path": info.get("path", source), "kind": reason, "error": info.get("error")})

    def merge(self, other: WriteStats) -> WriteStats:
        for k, v in other.kept.items():
            self._add(self.kept, k, v)
        for k, v in other.rejected.items():
            self._add(self.rejected, k, v)
        self.file_errors += other.file_errors
        self.files += other.files
        for lang, counts in other.scores.items():
            mine = self.scores.setdefault(lang, [0] * SCORE_BINS)
            self.scores[lang] = [a + b for a, b in zip(mine, counts)]
        for mine, theirs in ((self.emitted, other.emitted), (self.emitted_rejected, other.emitted_rejected),
                             (self.accounting, other.accounting)):
            for k, v in theirs.items():
                self._add(mine, k, v)
        _merge_examples(self.kept_examples, other.kept_examples)
        _merge_examples(self.rejected_examples, other.rejected_examples)
        merge_counts(self.measures, other.measures)
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        return self

    # -- JSON ------------------------------------------------------------------------------------
    def to_json(self, files: bool = False) -> dict:
        """The counts (``files``: with the files written, which the manifest lists apart)."""
        return {**({"files": sorted(self.files, key=lambda f: f["path"])} if files else {}),
            "kept": [[lang, *v] for lang, v in sorted(self.kept.items())],
            "rejected": [[*k, *v] for k, v in sorted(self.rejected.items())],
            "file_errors": sorted(self.file_errors, key=lambda e: (str(e["path"]), e["kind"])),
            "quality_scores": [[lang, *v] for lang, v in sorted(self.scores.items())],
            "measures": [[*k, v] for k, v in sorted(self.measures.items())],
            "counts": [[*k, v] for k, v in sorted(self.counts.items())],
            "emitted": [[*k, *v] for k, v in sorted(self.emitted.items())],
            "emitted_rejected": [[*k, *v] for k, v in sorted(self.emitted_rejected.items())],
            "accounting": [[list(k), v] for k, v in sorted(self.accounting.items())],
            "examples": {"kept": [[*k, v] for k, v in sorted(self.kept_examples.items())],
                         "rejected": [[*k, v] for k, v in sorted(self.rejected_examples.items())]},
        }

    @classmethod
    def from_json(cls, data: dict) -> WriteStats:
        st = cls()
        for lang, *v in data.get("kept", []):
            cls._add(st.kept, lang, v)
        for stage, reason, lang, *v in data.get("rejected", []):
            cls._add(st.rejected, (stage, reason, lang), v)
        st.file_errors = list(data.get("file_errors", []))
        st.files = list(data.get("files", []))
        st.scores = {lang: list(v) for lang, *v in data.get("quality_scores", [])}
        st.measures = {(lang, name): list(v) for lang, name, v in data.get("measures", [])}
        for stage, lang, *v in data.get("emitted", []):
            cls._add(st.emitted, (stage, lang), v)
        for stage, by, reason, lang, *v in data.get("emitted_rejected", []):
            cls._add(st.emitted_rejected, (stage, by, reason, lang), v)
        for k, v in data.get("accounting", []):
            cls._add(st.accounting, tuple(k), v)
        st.counts = {(stage, key): n for stage, key, n in data.get("counts", [])}
        examples = data.get("examples") or {}
        st.kept_examples = {tuple(k): v for *k, v in examples.get("kept", [])}
        st.rejected_examples = {tuple(k): v for *k, v in examples.get("rejected", [])}
        return st
