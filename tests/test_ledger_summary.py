"""The ledger is read in a few pieces however many runs it holds: every ``SUMMARIZE_EVERY`` runs a
seen-file table and a summary (of a size that does not grow with the runs) gather the records,
and a run reads them and the few records after them."""
from __future__ import annotations

import json

from tokenmill.engine.durable import ledger as ledger_module
from tokenmill.engine.durable.ledger import RECENT, Ledger
from tokenmill.engine.io.listing import InputFile
from tokenmill.engine.io.storage import Storage


def _commit_runs(out, runs: int, first: int = 1) -> None:
    for n in range(first, runs + 1):
        book = Ledger(Storage(str(out)))
        files = [InputFile(f"/in/night-{n}.jsonl", f"night-{n}.jsonl", "jsonl")]
        run = book.take(files, [[10 + n, n]])
        assert run.number == n and [f.path for f in run.files] == [files[0].path]
        book.start(run)
        book.commit(run, {"kept": [["en", n, n, n]]}, [{"path": f"data/language=en/part-r{n:06d}-00000-000.parquet"}])


def _counting_reads(monkeypatch) -> list[str]:
    opened = []
    real_json, real_open = Storage.read_json, Storage.open

    def counting(self, path):
        opened.append(path.rsplit("/", 1)[-1])
        return real_json(self, path)

    def counting_open(self, path, mode="rb"):
        opened.append(path.rsplit("/", 1)[-1])
        return real_open(self, path, mode)

    monkeypatch.setattr(Storage, "read_json", counting)
    monkeypatch.setattr(Storage, "open", counting_open)
    return opened


def test_a_run_reads_the_summary_its_table_and_the_records_after_it(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _commit_runs(out, 40)
    summary = json.loads((out / "_ledger" / "summary.json").read_text())
    assert summary["through"] == 32 and summary["count"] == 32 and summary["seen"] == "seen-000032.parquet"
    assert [r["run"] for r in summary["recent"]] == list(range(1, 33))
    assert summary["recent"][4] == {**summary["recent"][4], "output_docs": 5, "input_docs": 5, "files_added": 1,
                                    "input_files": 1}
    assert summary["totals"]["kept"] == [["en", sum(range(1, 33))] * 1 + [sum(range(1, 33))] * 2]
    assert sorted(p.name for p in (out / "_ledger").glob("seen-*")) == ["seen-000032.parquet"]   # the older one went
    assert len(list((out / "_ledger").glob("run-*.json"))) == 40   # the records stay
    opened = _counting_reads(monkeypatch)
    book = Ledger(Storage(str(out)))
    history = book.history()
    assert opened == ["summary.json", "seen-000032.parquet"] + [f"run-{n:06d}.json" for n in range(33, 41)]
    assert (history.last, history.count, history.through) == (40, 40, 32)
    assert sorted(history.seen) == sorted(f"/in/night-{n}.jsonl" for n in range(1, 41))
    assert history.seen["/in/night-3.jsonl"] == ([13, 3], 3)
    assert book.take([InputFile("/in/night-3.jsonl", "night-3.jsonl", "jsonl"),
                      InputFile("/in/new.jsonl", "new.jsonl", "jsonl")], [[13, 3], [1, 1]]).files == \
        [InputFile("/in/new.jsonl", "new.jsonl", "jsonl")]
    changed = book.take([InputFile("/in/night-35.jsonl", "night-35.jsonl", "jsonl")], [[99, 1]])
    assert changed.files == [] and changed.changed == ["/in/night-35.jsonl"]
    assert ledger_module.SUMMARIZE_EVERY == 16
    assert book.totals().kept == {"en": [sum(range(1, 41))] * 3}   # the summary's totals and runs 33-40
    assert [r["run"] for r in history.recent] == list(range(40 - RECENT + 1, 41))
    assert opened[-1] == "pending.json" and len(opened) == 2 + 8 + 2   # nothing read again


def test_the_summary_does_not_grow_with_the_runs(tmp_path):
    out = tmp_path / "out"
    _commit_runs(out, 48)
    at_48 = (out / "_ledger" / "summary.json").stat().st_size
    _commit_runs(out, 160, first=49)
    summary = json.loads((out / "_ledger" / "summary.json").read_text())
    assert summary["through"] == 160 and summary["count"] == 160 and len(summary["recent"]) == RECENT
    assert (out / "_ledger" / "summary.json").stat().st_size <= at_48 * 1.1
    seen = (out / "_ledger" / "seen-000160.parquet").stat().st_size
    assert seen < 160 * 40   # a few bytes a file (the paths share most of their characters)
    assert len(Ledger(Storage(str(out))).history().seen) == 160


def test_a_summary_of_the_first_kind_is_read(tmp_path):
    """A ledger summarized before the seen-file table (every run's record in the summary)."""
    out = tmp_path / "out"
    _commit_runs(out, 3)
    folder = out / "_ledger"
    records = [json.loads((folder / f"run-{n:06d}.json").read_text()) for n in (1, 2)]
    slim = [{**{k: v for k, v in r.items() if k not in ("added", "counts")}, "files_added": 1, "input_docs": r["run"],
             "output_docs": r["run"]} for r in records]
    (folder / "summary.json").write_text(json.dumps({"through": 2, "runs": slim, "totals": {"kept": [["en", 3, 3, 3]]}}))
    history = Ledger(Storage(str(out))).history()
    assert (history.last, history.count) == (3, 3)
    assert sorted(history.seen) == [f"/in/night-{n}.jsonl" for n in (1, 2, 3)]
    assert Ledger(Storage(str(out))).totals().kept == {"en": [6, 6, 6]}
    assert [r["output_docs"] for r in history.recent] == [1, 2, 3]
    _commit_runs(out, 20, first=4)   # the next summary is of the new kind
    summary = json.loads((folder / "summary.json").read_text())
    assert "runs" not in summary and summary["count"] == 18 and summary["totals"]["kept"] == [["en"] + [171] * 3]


def test_a_run_killed_between_the_table_and_the_summary(tmp_path, monkeypatch):
    """The new table is written, the summary is not: the old summary and its table still hold."""
    out = tmp_path / "out"
    _commit_runs(out, 16)
    real = Storage.write_json_atomic

    def killed(self, path, obj):
        if path.endswith("summary.json"):
            raise KeyboardInterrupt("killed")
        return real(self, path, obj)

    monkeypatch.setattr(Storage, "write_json_atomic", killed)
    try:
        _commit_runs(out, 32, first=17)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(Storage, "write_json_atomic", real)
    assert sorted(p.name for p in (out / "_ledger").glob("seen-*")) == ["seen-000016.parquet", "seen-000032.parquet"]
    history = Ledger(Storage(str(out))).history()
    assert (history.last, history.through, len(history.seen)) == (32, 16, 32)
    _commit_runs(out, 48, first=33)
    assert sorted(p.name for p in (out / "_ledger").glob("seen-*")) == ["seen-000033.parquet"]   # the next run summarizes
