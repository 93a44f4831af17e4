"""The ledger is read in one piece however many runs it holds: every ``SUMMARIZE_EVERY`` runs a
summary gathers the records, and a run reads it and the few records after it."""
from __future__ import annotations

import json

from tokenmill.engine.durable import ledger as ledger_module
from tokenmill.engine.durable.ledger import Ledger
from tokenmill.engine.io.listing import InputFile
from tokenmill.engine.io.storage import Storage


def _commit_runs(out, runs: int) -> None:
    for n in range(1, runs + 1):
        book = Ledger(Storage(str(out)))
        files = [InputFile(f"/in/night-{n}.jsonl", f"night-{n}.jsonl", "jsonl")]
        run = book.take(files, [[10 + n, n]])
        assert run.number == n and [f.path for f in run.files] == [files[0].path]
        book.start(run)
        book.commit(run, {"kept": [["en", n, n, n]]}, [{"path": f"data/language=en/part-r{n:06d}-00000-000.parquet"}])


def test_a_run_reads_the_summary_and_the_records_after_it(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _commit_runs(out, 40)
    summary = json.loads((out / "_ledger" / "summary.json").read_text())
    assert summary["through"] == 32 and len(summary["runs"]) == 32
    assert summary["runs"][0]["files_added"] == 1 and "added" not in summary["runs"][0]
    assert summary["runs"][4]["output_docs"] == summary["runs"][4]["input_docs"] == 5
    assert summary["totals"]["kept"] == [["en", sum(range(1, 33))] * 1 + [sum(range(1, 33))] * 2]
    assert len(list((out / "_ledger").glob("run-*.json"))) == 40   # the records stay
    opened = []
    real = Storage.read_json

    def counting(self, path):
        opened.append(path.rsplit("/", 1)[-1])
        return real(self, path)

    real_open = Storage.open

    def counting_open(self, path, mode="rb"):
        opened.append(path.rsplit("/", 1)[-1])
        return real_open(self, path, mode)

    monkeypatch.setattr(Storage, "read_json", counting)
    monkeypatch.setattr(Storage, "open", counting_open)
    book = Ledger(Storage(str(out)))
    runs = book.runs()
    assert [r["run"] for r in runs] == list(range(1, 41))
    assert [r["files"][0]["path"] for r in runs] == [f"/in/night-{n}.jsonl" for n in range(1, 41)]
    assert opened == ["summary.json"] + [f"run-{n:06d}.json" for n in range(33, 41)]   # one read each
    assert book.take([InputFile("/in/night-3.jsonl", "night-3.jsonl", "jsonl"),
                      InputFile("/in/new.jsonl", "new.jsonl", "jsonl")], [[13, 3], [1, 1]]).files == \
        [InputFile("/in/new.jsonl", "new.jsonl", "jsonl")]
    assert ledger_module.SUMMARIZE_EVERY == 16
    assert book.totals().kept == {"en": [sum(range(1, 41))] * 3}   # the summary's totals and runs 33-40
