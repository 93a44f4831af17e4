"""The four cleanup stages in one pipeline give the same rows, counts and report on the local
executor, on Ray and on Spark (the engines' parity for modifiers and their counters)."""
from __future__ import annotations

import json

import pytest
from decon_corpus import build, write_eval
from pipeline_helpers import output_rows, report_counts, web_docs, write_jsonl_gz

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline


def _inputs(tmp_path, shared_data) -> dict:
    rows = web_docs(shared_data)[:120]
    items, docs = build(shared_data, seed=5)
    for i, d in enumerate([d for d in docs if d["label"] == "contaminated"][:10]):
        rows[i]["text"] = d["text"]
    for i in range(10, 30):
        rows[i]["text"] += f"\nWrite to editor{i}@news.example.com or call (555) 123-{4000 + i}. Caf\u00c3\u00a9 \u2014 open.\nWe use cookies."
    for k, r in enumerate(rows):
        r["id"] = f"doc{k:03d}"
    half = len(rows) // 2
    write_jsonl_gz(tmp_path / "a.jsonl.gz", rows[:half])
    write_jsonl_gz(tmp_path / "b.jsonl.gz", rows[half:])
    pii_hosts = {r["url"].split("/")[2] for r in rows[10:30] if r.get("url") and "//" in r["url"]}
    blocked = sorted({r["url"].split("/")[2] for r in rows[40:60] if r.get("url") and "//" in r["url"]} - pii_hosts)[:5]
    (tmp_path / "block.txt").write_text("# test list\n" + "\n".join(blocked) + "\n")
    write_eval(items, tmp_path / "evals.jsonl")
    return {"rows": rows, "blocked": blocked}


def _config(tmp_path, out) -> dict:
    return {"name": "cleanup", "input": {"paths": [str(tmp_path / "a.jsonl.gz"), str(tmp_path / "b.jsonl.gz")],
                                         "files_per_chunk": 1},
            "output": {"path": str(out)},
            "stages": [{"type": "url_filter", "block_domains": [str(tmp_path / "block.txt")]},
                       {"type": "text_repair", "resources": {"batch_size": 16}},
                       {"type": "langid"},
                       {"type": "decontaminate", "eval_sets": [{"name": "books", "path": str(tmp_path / "evals.jsonl"),
                                                                "text_fields": ["passage"]}]},
                       {"type": "pii", "resources": {"batch_size": 7}},
                       {"type": "exact_dedup"}]}


def _check(report: dict, rows: tuple, inputs: dict) -> None:
    kept, rejected = rows
    reasons = {r[0]: r for r in rejected}
    assert sum(1 for r in rejected if str(r).find("url_filter:block") >= 0) >= len(inputs["blocked"])
    assert sum(1 for r in rejected if "contaminated:books" in str(r)) == 10
    counts = report["stage_counts"]
    assert counts["pii"]["counts"]["email"] >= 20 and counts["pii"]["counts"]["phone"] >= 20
    assert counts["text_repair"]["counts"]["ftfy_fixed"] >= 20 and counts["text_repair"]["counts"]["lines:policy"] >= 20
    assert {s["stage"]: s["docs_modified"] for s in report["stages"]}["pii"] >= 20
    assert report["stages"][-1]["chars_out"] == report["output"]["chars"]
    assert reasons and kept


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.slow),
                                    pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])])
def test_cleanup_stages_agree_across_engines(tmp_path, shared_data, engine, request):
    inputs = _inputs(tmp_path, shared_data)
    ref = run_pipeline(build_pipeline(_config(tmp_path, tmp_path / "local")), progress=False, engine="local", num_cpus=1)
    ref_rows = output_rows(tmp_path / "local")
    _check(ref.report, ref_rows, inputs)
    if engine == "local":
        return
    if engine == "ray":
        request.getfixturevalue("ray_local")
    other = run_pipeline(build_pipeline(_config(tmp_path, tmp_path / engine)), progress=False, engine=engine)
    assert output_rows(tmp_path / engine) == ref_rows
    assert report_counts(other.report) == report_counts(ref.report)
    assert json.dumps(other.report["stage_counts"], sort_keys=True) == json.dumps(ref.report["stage_counts"], sort_keys=True)
