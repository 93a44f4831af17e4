"""The modifier contract (``engine.stage.Modifier``) and per-row counters (``engine/counts.py``):
a stage that rewrites text keeps ``num_chars``/``num_tokens`` true, the funnel from input to
output stays exact, and what it changed is counted once, however the rows were split."""
from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pipeline_helpers import read_manifest_files, web_docs, write_jsonl_gz
from pydantic import BaseModel

from tokenmill.engine import counts
from tokenmill.engine.config import build_pipeline
from tokenmill.engine.io.tokens import count_tokens
from tokenmill.engine.run import run_pipeline
from tokenmill.engine.stage import Modifier

DIGITS = re.compile(r"\d")


class NoParams(BaseModel):
    pass


class StripDigits(Modifier):
    """A test modifier: deletes digits, counts them, and rejects documents left without any text."""

    name = "strip_digits"
    Params = NoParams

    def __call__(self, batch: pa.Table) -> pa.Table:
        text = pc.replace_substring_regex(batch["text"], r"\d", "")
        found = pc.count_substring_regex(batch["text"], r"\d")
        batch = batch.set_column(batch.column_names.index("text"), "text", text)
        return batch.append_column(counts.STAGE_COUNTS, counts.counts_column({"digits": found}, batch.num_rows))


def tokens_of(texts: list[str]) -> list[int]:
    table = pa.table({"text": pa.array(texts, pa.large_string()), "reject_stage": pa.nulls(len(texts), pa.string())})
    return count_tokens(table)["num_tokens"].to_pylist()


def test_counts_column_keeps_only_nonzero_entries():
    col = counts.counts_column({"a": [0, 2, 0], "b": [1, 3, 0]}, 3)
    assert col.to_pylist() == [[{"key": "b", "n": 1}], [{"key": "a", "n": 2}, {"key": "b", "n": 3}], []]
    stamped = counts.append(None, counts.stamp("s1", col))
    both = counts.append(stamped, counts.stamp("s2", counts.counts_column({"c": [5, 0, 7]}, 3)))
    assert [[(e["stage"], e["key"], e["n"]) for e in row] for row in both.to_pylist()] == [
        [("s1", "b", 1), ("s2", "c", 5)], [("s1", "a", 2), ("s1", "b", 3)], [("s2", "c", 7)]]
    assert sorted(counts.sums(pa.table({counts.COUNTS: both}))) == [("s1", "a", 2), ("s1", "b", 4), ("s2", "c", 12)]


@pytest.mark.parametrize("batch_size", [7, 1000])
def test_a_modifier_in_a_run_keeps_counts_true_and_the_funnel_exact(tmp_path, shared_data, batch_size):
    """On the local executor (this module's stage is not importable on Ray's workers; the real
    modifiers' parity on Ray and Spark: tests/test_cleanup_engines.py)."""
    rows = web_docs(shared_data)[:60]
    write_jsonl_gz(tmp_path / "in.jsonl.gz", rows)
    pipe = build_pipeline({"name": "mod", "input": {"paths": [str(tmp_path / "in.jsonl.gz")]},
                           "output": {"path": str(tmp_path / "out")},
                           "stages": [{"type": "length_filter", "min_chars": 300},
                                      {"type": "test_modifiers:StripDigits", "name": "strip_digits", "resources": {"batch_size": batch_size}},
                                      {"type": "length_filter", "name": "not_empty", "min_chars": 1}]})
    report = run_pipeline(pipe, progress=False, engine="local", num_cpus=1).report
    data = read_manifest_files(tmp_path / "out", "data/")
    rejects = read_manifest_files(tmp_path / "out", "rejects/")
    given = {r["id"]: r["text"] for r in rows}
    for table in (data, rejects):   # every written row's counts are those of the text it holds
        assert table["num_chars"].to_pylist() == [len(t) for t in table["text"].to_pylist()]
        assert table["num_tokens"].to_pylist() == tokens_of(table["text"].to_pylist())
    for doc_id, text in zip(data["id"].to_pylist(), data["text"].to_pylist()):
        assert text == DIGITS.sub("", given[doc_id])    # documents without digits come back byte-identical
    stage = {s["stage"]: s for s in report["stages"]}["strip_digits"]
    passed = [t for t in given.values() if len(t) >= 300]
    changed = [t for t in passed if DIGITS.search(t)]
    assert stage["docs_modified"] == len(changed) > 0 and stage["docs_rejected"] == 0
    assert stage["chars_removed"] == sum(len(DIGITS.findall(t)) for t in passed)
    assert report["stage_counts"]["strip_digits"]["counts"]["digits"] == stage["chars_removed"]
    assert report["input"]["chars"] == sum(len(t) for t in given.values())   # the funnel adds back what was removed
    assert stage["chars_out"] == stage["chars_in"] - stage["chars_removed"]
    last = report["stages"][-1]
    assert last["chars_out"] == report["output"]["chars"] == sum(data["num_chars"].to_pylist())
    assert last["tokens_out"] == report["output"]["tokens"] == sum(data["num_tokens"].to_pylist())
    assert report["input"]["tokens"] == sum(tokens_of(list(given.values())))
    assert "_counts" not in data.column_names
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["stage_counts"] == report["stage_counts"]


def test_report_html_shows_what_a_modifier_changed(tmp_path, shared_data):
    rows = web_docs(shared_data)[:20]
    write_jsonl_gz(tmp_path / "in.jsonl.gz", rows)
    pipe = build_pipeline({"name": "mod", "input": {"paths": [str(tmp_path / "in.jsonl.gz")]},
                           "output": {"path": str(tmp_path / "out")},
                           "stages": [{"type": "test_modifiers:StripDigits", "name": "strip_digits"}]})
    report = run_pipeline(pipe, progress=False, engine="local", num_cpus=1).report
    html = (tmp_path / "out" / "report.html").read_text()
    stage = report["stages"][-1]
    assert f"<td>strip_digits</td><td>{stage['docs_in']:,}</td><td>{stage['docs_out']:,}</td><td>0</td>" \
           f"<td>{stage['docs_modified']:,}</td>" in html
    assert "What stages changed and counted" in html and f"digits: {report['stage_counts']['strip_digits']['counts']['digits']:,}" in html
