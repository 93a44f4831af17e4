"""The rephrase stage's openai backend through a whole run under real Ray, against a real local
HTTP server that serves the OpenAI chat-completions API backed by the tiny test LM: a 500 and a
timeout are retried, a request that keeps failing is rejected with its error while the run goes
on, prompts are in the document's language; and a pipeline that judges its own output (rephrase
-> quality_fasttext -> minhash_dedup) drops the synthetic document that copies its source."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pytest
from aiohttp import web
from pipeline_helpers import read_manifest_files
from test_rephrase_openai import _last_user, start_chat_server

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.rephrase.backend import Sampling
from tokenmill.stages.rephrase.transformers_backend import TransformersBackend

MARKERS = ("ALWAYS500", "FAIL500ONCE", "SLOWONCE", "BAD400")


def _document(body: dict) -> str:
    """The document of a rephrase prompt (every shipped style ends with ``TEXT:`` and it)."""
    return _last_user(body).rsplit("TEXT:\n", 1)[-1].strip()


def near_copy(text: str) -> str:
    """The document with every 100th word changed: a near duplicate, not an exact copy."""
    words = text.split(" ")
    return " ".join("changed" if i % 100 == 99 else w for i, w in enumerate(words))


@pytest.fixture(scope="module")
def served(tiny_model):
    """The fake server, generating with the tiny LM (markers and COPYME documents aside)."""
    model = TransformersBackend(str(tiny_model), Sampling(), batch_size=1)
    model.setup()

    async def behave(server, body, nth):
        text = _last_user(body)
        if any(m in text for m in MARKERS) and not ("FAIL500ONCE" in text or "SLOWONCE" in text) or nth == 0 \
                and ("FAIL500ONCE" in text or "SLOWONCE" in text):
            return None   # the default handler's failures
        if "COPYME" in text:
            out, n_out, finish = near_copy(_document(body)), 100, "stop"
        else:
            g = model.generate([body["messages"]], [body["seed"]], body["max_tokens"])[0]
            out, n_out, finish = g.text, g.output_tokens, g.finish_reason
        return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": out},
                                               "finish_reason": finish}],
                                  "usage": {"prompt_tokens": 1, "completion_tokens": n_out}})

    server = start_chat_server(behave, slow_s=3.0)
    yield server
    server.close()


def _rows(shared_data: Path) -> list[dict]:
    rows, per = [], {"de": 0, "fr": 0}
    for line in open(shared_data / "langid_dev.jsonl", encoding="utf-8"):
        r = json.loads(line)
        if per.get(r["lang"], 10) < 10:
            per[r["lang"]] += 1
            rows.append({"id": r["id"], "text": r["text"]})
    base = rows[0]["text"]
    rows += [{"id": f"marker-{m}", "text": f"{base} {m}"} for m in ("ALWAYS500", "FAIL500ONCE", "SLOWONCE")]
    return rows


def _config(inputs: list[str], out: Path, served, stages: list[dict] | None = None, **stage) -> dict:
    rephrase = {"type": "rephrase", "backend": "openai", "model": "tiny",
                "openai": {"base_url": served.base_url, "api_key_env": None, "timeout_s": 1.5, "max_retries": 2,
                           "concurrency": 4},
                "max_output_tokens": 16, "min_chars": 0, "reject_truncated": False, "select": {"min_tokens": 0},
                "styles": {"wikipedia": 1.0}, **stage}
    return {"name": "served", "input": {"paths": inputs}, "output": {"path": str(out)},
            "stages": [{"type": "langid"}, rephrase, *(stages or [])]}


def test_openai_backend_retries_and_rejects_what_keeps_failing(tmp_path, shared_data, served, engine):
    served.requests.clear()   # the server outlives a test: each engine's run starts from nothing
    served.seen.clear()
    rows = _rows(shared_data)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    report = run_pipeline(build_pipeline(_config([str(tmp_path / "in.jsonl")], tmp_path / "out", served)),
                          progress=False, engine=engine).report
    syn = read_manifest_files(tmp_path / "out", "synthetic/")
    rej = read_manifest_files(tmp_path / "out", "rejects/")
    assert set(syn["source_id"].to_pylist()) == {r["id"] for r in rows} - {"marker-ALWAYS500"}
    failed = rej.filter(pc.equal(rej["reject_stage"], "rephrase")).to_pylist()
    assert [r["source_id"] for r in failed] == ["marker-ALWAYS500"]
    assert failed[0]["reject_reason"].startswith("generation_failed: HTTP 500 after 3 attempts")
    assert served.count("ALWAYS500") == 3 and served.count("FAIL500ONCE") == 2 and served.count("SLOWONCE") == 2
    reasons = {(r["stage"], r["reason"]): r["docs"] for r in report["generated"]["rephrase"]["rejected"]}
    assert reasons == {("rephrase", "generation_failed"): 1}
    # prompts are written in the document's own language; each request has its own seed and the model's name
    lang = {r["text"]: r["id"].split("-")[2] for r in rows if r["id"].startswith("lingua")}
    prompts = [(lang[_document(r["json"])], _last_user(r["json"])) for r in served.requests if _document(r["json"]) in lang]
    assert {iso for iso, _ in prompts} == {"de", "fr"}
    assert all(("Write in German" if iso == "de" else "Write in French") in prompt for iso, prompt in prompts)
    assert all(r["json"]["model"] == "tiny" for r in served.requests)
    assert len({r["json"]["seed"] for r in served.requests}) >= len(rows) - 2


def test_a_pipeline_drops_the_synthetic_copy_of_its_source(tmp_path, shared_data, served, quality_model, engine):
    """rephrase -> quality_fasttext -> minhash_dedup: the stages after rephrase judge the synthetic
    documents too; the near copy of a source is a near duplicate, and the source is the one kept."""
    docs = [json.loads(line) for line in open(shared_data / "quality_dev.jsonl", encoding="utf-8")]
    docs = [d for d in docs if d["label"] == "high" and len(d["text"].split()) > 400][:6]
    rows = [{"id": d["id"], "text": d["text"]} for d in docs]
    rows[0]["text"] += " COPYME"
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    after = [{"type": "quality_fasttext", "model_path": str(quality_model), "annotate_only": True},
             {"type": "minhash_dedup"}]
    cfg = _config([str(tmp_path / "in.jsonl")], tmp_path / "out", served, after, max_input_tokens=4096,
                  max_copy=0.99, max_output_tokens=64)
    run_pipeline(build_pipeline(cfg), progress=False, engine=engine)
    syn = read_manifest_files(tmp_path / "out", "synthetic/")
    rej = read_manifest_files(tmp_path / "out", "rejects/")
    data = read_manifest_files(tmp_path / "out", "data/")
    copy_id = f"{rows[0]['id']}#wikipedia-0"
    dropped = rej.filter(pc.equal(rej["id"], copy_id)).to_pylist()
    assert len(dropped) == 1 and dropped[0]["reject_stage"] == "minhash_dedup"
    assert dropped[0]["reject_reason"] == f"near_duplicate_of:{rows[0]['id']}"
    assert rows[0]["id"] in data["id"].to_pylist() and copy_id not in syn["id"].to_pylist()
    assert syn.num_rows == len(rows) - 1 and syn["quality_score"].null_count == 0   # judged by the quality model
