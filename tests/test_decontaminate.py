"""``decontaminate``: eval passages hidden in real web pages under case, punctuation and spacing
edits are found; other text from the same books and near misses are not; reject and annotate
runs report per eval set."""
from __future__ import annotations

import gzip
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from decon_corpus import build, write_eval
from pipeline_helpers import read_manifest_files, write_jsonl_gz

from tokenmill.engine.config import ConfigError, build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.cleanup.decontaminate import Decontaminate, DecontParams


def _stage(tmp_path, eval_sets: list[dict], **params) -> Decontaminate:
    p = Decontaminate.prepare(DecontParams(eval_sets=eval_sets, **params), str(tmp_path / "index"))
    st = Decontaminate(p)
    st.setup()
    return st


def _reasons(stage: Decontaminate, texts: list) -> list:
    return stage(pa.table({"text": pa.array(texts, pa.large_string())}))["reject_reason"].to_pylist()


@pytest.mark.parametrize("seed", [0, 1])
def test_recall_and_false_positives_on_pages_with_book_passages(tmp_path, shared_data, seed):
    items, docs = build(shared_data, seed=seed, per_book=2)
    stage = _stage(tmp_path, [{"name": "books", "path": str(write_eval(items, tmp_path / "books.jsonl")),
                               "text_fields": ["passage"]}])
    found = _reasons(stage, [d["text"] for d in docs])
    by = Counter((d["label"], r is not None) for d, r in zip(docs, found))
    pos = by[("contaminated", True)] + by[("contaminated", False)]
    other = by[("other_passage", True)] + by[("other_passage", False)]
    assert pos > 150 and other > 150
    assert by[("contaminated", True)] / pos >= 0.98
    assert by[("other_passage", True)] / other <= 0.01
    assert by[("near_miss", True)] == 0 and by[("page", True)] == 0
    assert {r for r in found if r} == {"contaminated:books"}


def test_positions_line_breaks_short_items_and_min_matches(tmp_path):
    passage = ("It is a truth universally acknowledged that a single man in possession of a good fortune "
               "must be in want of a wife however little known the feelings")
    short = "Who painted the ceiling of the Sistine Chapel"          # 8 words < 13: the whole string
    tiny = "Paris France"                                               # under min_item_words: never indexed
    path = tmp_path / "ev.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in [("p", passage), ("s", short), ("t", tiny)]))
    stage = _stage(tmp_path, [{"name": "ev", "path": str(path)}])
    broken = passage.replace(" single ", "\nsingle\n").replace(" fortune ", "  FORTUNE,\t")
    texts = [passage.upper() + " and then the page goes on", "A page that ends with: " + broken,
             "quiz " + short.lower() + "? michelangelo", "I love Paris, France in spring",
             "Who painted the ceiling of the chapel", None, ""]
    assert _reasons(stage, texts) == ["contaminated:ev", "contaminated:ev", "contaminated:ev", None, None, None, None]
    strict = _stage(tmp_path / "strict", [{"name": "ev", "path": str(path)}], min_matches=5)
    thirteen = " ".join(passage.split()[:13])        # one shared 13-gram, fewer than 5
    assert _reasons(strict, [thirteen, " ".join(passage.split()[:17]), short]) == [None, "contaminated:ev", "contaminated:ev"]


def test_eval_files_parquet_gzip_lists_and_ids(tmp_path):
    q = "Which planet of the solar system has the largest number of known moons in its orbit"
    pq.write_table(pa.table({"question": [q], "choices": [["Saturn", "Jupiter", "Mars", "Venus"]]}), tmp_path / "mc.parquet")
    with gzip.open(tmp_path / "qa.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"qid": "x7", "q": "name the longest river flowing through the continent of africa today"}) + "\n")
        fh.write("\n")
    stage = _stage(tmp_path, [{"name": "mc", "path": str(tmp_path / "mc.parquet"), "text_fields": ["question", "choices"]},
                              {"name": "qa", "path": str(tmp_path / "qa.jsonl.gz"), "text_fields": ["q"], "id_field": "qid"}])
    out = stage(pa.table({"text": pa.array([q + " Saturn Jupiter", "Name the longest river flowing through the continent of Africa today!"],
                                           pa.large_string())}))
    assert out["reject_reason"].to_pylist() == ["contaminated:mc", "contaminated:qa"]
    assert [c["items"] for c in out["contamination"].to_pylist()] == [["mc/0"], ["qa/x7"]]


@pytest.mark.parametrize("sets, expected", [
    ([{"name": "a", "path": "missing.jsonl"}, {"name": "a", "path": "ev.jsonl"}],
     {("stages[0].eval_sets[0].path", "file not found"), ("stages[0].eval_sets[1].name", "duplicate eval set name 'a'")}),
    ([{"name": "b", "path": "ev.jsonl", "tf": 1}], {("stages[0].eval_sets[0].tf", "unknown key")}),
    ([{"name": "c", "path": "ev.txt"}], {("stages[0].eval_sets[0].path", "expected a .jsonl")}),
])
def test_config_errors_name_the_key(tmp_path, sets, expected):
    (tmp_path / "ev.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "ev.txt").write_text("x\n")
    sets = [{**s, "path": str(tmp_path / s["path"])} for s in sets]
    with pytest.raises(ConfigError) as e:
        build_pipeline({"name": "d", "input": {"paths": [str(tmp_path / "ev.jsonl")]}, "output": {"path": str(tmp_path / "o")},
                        "stages": [{"type": "decontaminate", "eval_sets": sets}]})
    errors = e.value.errors
    assert len(errors) == len(expected)
    assert all(any(k == key and m.startswith(start) for k, m in errors) for key, start in expected)


def test_a_broken_eval_file_names_its_line(tmp_path):
    (tmp_path / "ev.jsonl").write_text('{"text": "fine words here and more of them"}\n{broken\n')
    with pytest.raises(ValueError, match=r"ev.jsonl: line 2"):
        _stage(tmp_path, [{"name": "ev", "path": str(tmp_path / "ev.jsonl")}])


@pytest.mark.parametrize("mode", ["reject", "annotate"])
def test_decontaminate_in_a_run_reports_per_eval_set(tmp_path, shared_data, engine, mode):
    items, docs = build(shared_data, seed=3)
    docs = [d for d in docs if d["label"] in ("contaminated", "other_passage")][:80]
    write_jsonl_gz(tmp_path / "in.jsonl.gz", [{"id": d["id"], "text": d["text"]} for d in docs])
    (tmp_path / "evals").mkdir()
    write_eval(items, tmp_path / "evals" / "books.jsonl")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps({"name": "decon", "input": {"paths": [str(tmp_path / "in.jsonl.gz")]}, "output": {"path": "out"},
                               "stages": [{"type": "decontaminate", "mode": mode, "eval_sets": [
                                   {"name": "books", "path": "evals/books.jsonl", "text_fields": ["passage"]}]}]}))
    from tokenmill.engine.config import load_config

    report = run_pipeline(load_config(cfg), progress=False, engine=engine, num_cpus=1).report
    positives = {d["id"] for d in docs if d["label"] == "contaminated"}
    view = report["stage_counts"]["decontaminate"]["eval_sets"]["books"]
    assert view["contaminated_docs"] == len(positives) == view["items_leaked"]
    assert len(view["top_items"]) == 10 and all(t["docs"] == 1 for t in view["top_items"])
    data = read_manifest_files(tmp_path / "out", "data/")
    if mode == "reject":
        rejects = read_manifest_files(tmp_path / "out", "rejects/")
        assert set(rejects["id"].to_pylist()) == positives
        assert set(rejects["reject_reason"].to_pylist()) == {"contaminated:books"}
        assert "contamination" in rejects.column_names
    else:
        marked = {i for i, c in zip(data["id"].to_pylist(), data["contamination"].to_pylist()) if c}
        assert marked == positives and data.num_rows == len(docs)


def test_eval_set_on_a_flaky_store_and_a_changed_eval_set_redoes_the_run(tmp_path, shared_data, monkeypatch):
    from tokenmill.engine.io.faults import ENV

    items, docs = build(shared_data, seed=4)
    docs = [d for d in docs if d["label"] == "contaminated"][:20]
    write_jsonl_gz(tmp_path / "in.jsonl.gz", [{"id": d["id"], "text": d["text"]} for d in docs])
    write_eval([i for i in items if i["id"] not in {d["item"] for d in docs[:5]}], tmp_path / "ev.jsonl")   # 5 not yet in the set
    state = tmp_path / "faults"
    schedule = tmp_path / "faults.json"
    schedule.write_text(json.dumps({"inner": "file", "state": str(state), "rules": [
        {"op": "open", "match": "*ev.jsonl", "kind": "transient", "times": 2}]}))
    monkeypatch.setenv(ENV, str(schedule))

    def run():
        pipe = build_pipeline({"name": "d", "input": {"paths": [str(tmp_path / "in.jsonl.gz")]}, "output": {"path": str(tmp_path / "out")},
                               "stages": [{"type": "decontaminate", "eval_sets": [
                                   {"name": "books", "path": f"faulty://{tmp_path / 'ev.jsonl'}", "text_fields": ["passage"]}]}]})
        return run_pipeline(pipe, progress=False, engine="local", num_cpus=1)

    first = run()
    assert len((state / "log.jsonl").read_text().splitlines()) == 2      # both failures were retried
    assert first.report["stage_counts"]["decontaminate"]["eval_sets"]["books"]["contaminated_docs"] == 15
    assert run().skipped                                                   # nothing changed: nothing redone
    write_eval(items, tmp_path / "ev.jsonl")
    again = run()
    assert not again.skipped
    assert again.report["stage_counts"]["decontaminate"]["eval_sets"]["books"]["contaminated_docs"] == 20


def test_an_index_cut_short_by_a_killed_driver_is_built_again(tmp_path):
    """``prepare`` commits the index with a marker: a folder a killed run left without it (one file
    written, the other not) is rebuilt, a committed one is reused as it is."""
    path = tmp_path / "ev.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "one two three four five six seven eight nine ten eleven twelve thirteen"}) + "\n")
    folder = tmp_path / "index"
    folder.mkdir()
    (folder / "hashes.parquet").write_bytes(b"PAR1 cut short")
    stage = _stage(tmp_path, [{"name": "ev", "path": str(path)}])
    assert _reasons(stage, ["One, two, three four five six seven eight nine ten eleven twelve thirteen!"]) == ["contaminated:ev"]
    marker = folder / "_SUCCESS"
    assert marker.exists()
    stamp = (folder / "hashes.parquet").stat().st_mtime_ns
    _stage(tmp_path, [{"name": "ev", "path": str(path)}])
    assert (folder / "hashes.parquet").stat().st_mtime_ns == stamp


def test_text_without_spaces_is_matched_by_characters(tmp_path, shared_data):
    """Chinese, Japanese and Thai have no words to count: their items are cut into character
    n-grams (letters, marks, digits), so a copy with other punctuation and spacing is found and
    other sentences of the same languages are not."""
    rows = [json.loads(line) for line in open(shared_data / "langid_dev.jsonl", encoding="utf-8")]
    by = {lang: [r["text"] for r in rows if r["lang"] == lang] for lang in ("zh", "ja", "th")}
    items = [{"id": f"{lang}{i}", "text": texts[i]} for lang, texts in by.items() for i in range(30)]
    path = tmp_path / "ev.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in items))
    stage = _stage(tmp_path, [{"name": "ev", "path": str(path)}])

    def edited(t: str) -> str:
        return t.replace("，", ", ").replace("。", ". ").replace("、", " ").replace(" ", "  ")

    pos = [by[lang][40] + "\n" + edited(by[lang][i]) + " " + by[lang][41] for lang in by for i in range(30)]
    neg = [by[lang][j] + by[lang][j + 1] for lang in by for j in range(50, 110, 2)]
    found = _reasons(stage, pos + neg)
    assert found[:len(pos)] == ["contaminated:ev"] * len(pos)
    assert sum(r is not None for r in found[len(pos):]) <= len(neg) // 100   # at most 1%
