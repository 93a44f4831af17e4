"""Examples in report.json (engine/report/stats.py) and ``tokenmill inspect`` (engine/report/inspect.py):
the quickstart config on the local executor, with the examples recounted from the output files."""
from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import pytest
from conftest import REPO
from pipeline_helpers import read_manifest_files

from tokenmill.engine.config import build_pipeline, load_config
from tokenmill.engine.report.inspect import examples
from tokenmill.engine.run import run_pipeline


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples") / "out"
    pipeline = load_config(REPO / "configs" / "quickstart.yaml")
    result = run_pipeline(pipeline, output=str(out), progress=False, engine="local")
    return out, result.report


def _label(stage: str, reason: str) -> str:
    return "duplicate" if stage == "exact_dedup" and reason.startswith("duplicate_of:") else reason


def test_examples_equal_a_recount_from_the_output_files(run):
    out, report = run
    rej = read_manifest_files(out, "rejects/").to_pylist()
    data = read_manifest_files(out, "data/").to_pylist()
    by_reason, by_lang, text, measure = defaultdict(list), defaultdict(list), {}, {}
    for r in rej:
        measure[r["id"]] = (r.get("reject_value"), r.get("reject_threshold"))
        if r["reject_stage"] == "read" and r["reject_reason"].startswith("file_"):
            continue
        by_reason[(r["reject_stage"], _label(r["reject_stage"], r["reject_reason"]))].append(r["id"])
        text[r["id"]] = r["text"] or ""
    for r in data:
        by_lang[r["language"]].append(r["id"])
        text[r["id"]] = r["text"] or ""
    got = {(e["stage"], e["reason"]): e["examples"] for e in report["examples"]["rejected"]}
    assert set(got) == set(by_reason) and len(got) >= 5
    for key, ids in by_reason.items():
        assert [x["id"] for x in got[key]] == sorted(ids)[:5], key
        for x in got[key]:
            assert text[x["id"]].startswith(x["text"]) and len(x["text"]) == min(300, len(text[x["id"]]))
            assert x["reason"].startswith(key[1]) or key[1] == "duplicate"
            value, bound = measure[x["id"]]   # the measure against the threshold, as in rejects/
            assert (x.get("value"), x.get("threshold")) == ((round(value, 6), bound) if value is not None else (None, None))
    # every heuristics reject with a threshold carries the measure that crossed it
    heur = [r for r in rej if r["reject_stage"] == "heuristics"]
    assert heur and all(r["reject_value"] is not None for r in heur if not r["reject_reason"].endswith(
        ("lorem_ipsum", "curly_bracket", "empty")))
    for r in heur:
        v, t = r["reject_value"], r["reject_threshold"]
        if v is not None and t is not None:
            assert (v < t) if r["reject_reason"].split(":")[-1].startswith(("min_", "too_few", "line_punct",
                                                                               "max_non_alpha")) else (v > t), r
    assert not {"reject_value", "reject_threshold"} & set(read_manifest_files(out, "data/").column_names)
    kept = {e["language"]: e["examples"] for e in report["examples"]["kept"]}
    assert set(kept) == set(by_lang)
    for lang, ids in by_lang.items():
        assert [x["id"] for x in kept[lang]] == sorted(ids)[:5] and all(x["language"] == lang for x in kept[lang])


def test_inspect_prints_examples_of_a_reason(run):
    out, report = run
    top = max(report["reject_reasons"], key=lambda r: r["docs"])
    rows = examples(str(out), reason=f"{top['stage']}:{top['reason']}", n=3, chars=50)
    assert len(rows) == 3 and all(r["reject_stage"] == top["stage"] for r in rows)
    assert all(len(r["text"]) <= 50 for r in rows)
    de = examples(str(out), kept=True, language="de", n=2)
    assert len(de) == 2 and {r["language"] for r in de} == {"de"}
    cli = [sys.executable, "-c", "import sys; from tokenmill.engine.cli import main; sys.exit(main())"]
    proc = subprocess.run(cli + ["inspect", str(out), "--reason", top["reason"], "-n", "2"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n--- ") + proc.stdout.startswith("--- ") == 2 and top["reason"] in proc.stdout
    if rows[0].get("reject_value") is not None:
        assert f"({rows[0]['reject_value']:.4g} vs" in proc.stdout or f"({rows[0]['reject_value']:.4g})" in proc.stdout
    listing = subprocess.run(cli + ["inspect", str(out)], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and f"{top['stage']}:{top['reason']}" in listing.stdout
    short = examples(str(out), reason=top["reason"].split(":")[-1], n=1)     # the last part of a reason
    assert len(short) == 1 and short[0]["reject_reason"].endswith(top["reason"].split(":")[-1])
    none = subprocess.run(cli + ["inspect", str(out), "--reason", "no_such_reason"], capture_output=True, text=True)
    assert none.returncode == 1 and "no document matches" in none.stderr
    missing = subprocess.run(cli + ["inspect", str(out / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and "_manifest.json" in missing.stderr


def _bin(edges: list[float], v: float) -> int:
    i = 0
    while i + 1 < len(edges) - 1 and v >= edges[i + 1]:
        i += 1
    return i


def test_measure_histograms_equal_a_recount_from_the_output_files(run):
    """Rejects carry the measures the rules took (heuristic_measures); kept documents passed every
    rule, so measuring their text again gives theirs. Together: the report's histograms."""
    from tokenmill.stages.heuristics.measures import BINS
    from tokenmill.stages.heuristics.stage import ALL_FAMILIES, check_document

    out, report = run
    section = report["measures"]
    assert section["stage"] == "heuristics" and section["bins"] == BINS
    table = load_config(REPO / "configs" / "quickstart.yaml").languages
    recount: dict = defaultdict(lambda: defaultdict(lambda: None))

    def add(lang, name, v):
        counts = recount[lang][name] or [0] * (len(BINS[name]) - 1)
        counts[_bin(BINS[name], v)] += 1
        recount[lang][name] = counts

    for r in read_manifest_files(out, "rejects/").to_pylist():
        for name, v in (r.get("heuristic_measures") or {}).items():
            if v is not None:
                add(r["language"] or "und", name, v)
    data = read_manifest_files(out, "data/")
    assert "heuristic_measures" not in data.column_names
    for text, lang in zip(data["text"].to_pylist(), data["language"].to_pylist()):
        p = table.get(lang)
        m: dict = {}
        assert check_document(text, p, ALL_FAMILIES, frozenset(w.lower() for w in p.stopwords), m) is None
        for name, v in m.items():
            add(lang, name, v)
    got = {lang: e["measures"] for lang, e in section["languages"].items()}
    assert got == {lang: dict(ms) for lang, ms in recount.items()}
    en = section["languages"]["en"]
    assert en["thresholds"]["words"] == [50.0, 100000.0] and en["thresholds"]["alpha_words_ratio"] == [0.8]
    assert sum(en["measures"]["words"]) >= 100
    # thresholds cut the distributions: English documents on both sides of several of them
    cut = [name for name, counts in en["measures"].items() for t in en["thresholds"].get(name, [])[:1]
           if sum(counts[:_bin(BINS[name], t)]) > 0 and sum(counts[_bin(BINS[name], t) + 1:]) > 0]
    assert len(cut) >= 3, cut
    html_report = (out / "report.html").read_text()
    assert "Heuristic measures per language" in html_report and html_report.count("<svg") > 20


def test_family_stages_in_a_row_keep_each_others_measures(tmp_path):
    """gopher_quality then fineweb_quality as two stages: a kept document's measures hold both
    families' fields; rejects by the second stage carry the first one's measures too."""
    src = REPO / "configs" / "sample" / "web.jsonl.gz"
    pipeline = build_pipeline({"name": "fam", "input": {"paths": [str(src)]}, "output": {"path": str(tmp_path / "o")},
                               "stages": [{"type": "langid"}, {"type": "gopher_quality"}, {"type": "fineweb_quality"}]})
    report = run_pipeline(pipeline, output=str(tmp_path / "o"), progress=False, engine="local").report
    en = report["measures"]["languages"]["en"]["measures"]
    assert "words" in en and "short_line_ratio" in en and "sentences" not in en
    rej = [r for r in read_manifest_files(tmp_path / "o", "rejects/").to_pylist() if r["reject_stage"] == "fineweb_quality"]
    assert rej and all(r["heuristic_measures"]["words"] is not None for r in rej)
