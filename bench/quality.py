"""Benchmark: the fastText quality stage against a plain loop over the same model, per core.

    python bench/quality.py                      # 20,000 documents, medians of 3
    python bench/quality.py --docs 2000 --repeats 1   # a smoke run

Model: trained once here with ``train-quality`` on shared/data/quality_dev.jsonl (high vs low;
epoch 25, lr 0.5, the default 2 M buckets). Input: quality_dev's texts repeated to ``--docs``
documents (~6 KB each), written as JSONL shards. Each mode in its own child process on ONE core:

- ``plain``: ``fasttext_new.load_model`` + ``predict_batch(texts, k=-1, threads=1)`` per batch of
  ``--batch-size`` over texts with newlines replaced (what a user's own loop does; DCLM's enricher
  calls ``predict`` per document, which is slower);
- ``stage``: ``QualityFastText.__call__`` on Arrow batches of the same size, no engine;
- ``pipeline``: a real ``run_pipeline`` (read JSONL -> quality_fasttext with ``threshold: 0.5`` ->
  write Parquet), embedded Ray with ``num_cpus=1``, ``tokenizer.kind: none``.

Printed: docs/s per core (median), docs per CPU-second, peak RSS, the ratio to ``plain``; the goal
is the pipeline at >= 0.8x the plain loop per core; the stage's busy time inside the pipeline
(report.json) is printed too. JSON: bench/quality.json.
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
from _common import (SHARED_DATA, WORK, CpuTracker, machine_info, median, print_table, run_child,  # noqa: E402
                     write_json)

HERE = Path(__file__).resolve()
QDIR = WORK / "quality"
MODES = ("plain", "stage", "pipeline")
GOAL = 0.8


def prepare(docs: int) -> dict:
    """The model (trained once) and the JSONL shards of ``docs`` documents."""
    from tokenmill.stages.quality.train import TrainArgs, train

    rows = [json.loads(line) for line in (SHARED_DATA / "quality_dev.jsonl").read_text().splitlines()]
    model = QDIR / "model"
    if not (model / "quality.json").exists():
        QDIR.mkdir(parents=True, exist_ok=True)
        for label, name in (("high", "positive.jsonl"), ("low", "negative.jsonl")):
            (QDIR / name).write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows if r["label"] == label))
        train(TrainArgs(positive=[str(QDIR / "positive.jsonl")], negative=[str(QDIR / "negative.jsonl")],
                        out=str(model), holdout=0.2, fasttext={"epoch": 25, "lr": 0.5}))
    shards = QDIR / f"docs-{docs}"
    if not shards.exists():
        shards.mkdir(parents=True)
        n_files = max(1, docs // 2500)
        for f in range(n_files):
            part = range(f, docs, n_files)
            (shards / f"part-{f}.jsonl").write_text("".join(
                json.dumps({"id": f"d{i}", "text": rows[i % len(rows)]["text"]}) + "\n" for i in part))
    return {"model": str(model), "shards": str(shards)}


def _texts(shards: str) -> list[str]:
    return [json.loads(line)["text"] for p in sorted(Path(shards).glob("*.jsonl")) for line in p.open()]


def child(a) -> dict:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    res: dict = {"seconds": [], "cpu_seconds": []}
    if a.child == "pipeline":
        return _pipeline(a, res)
    import pyarrow as pa

    from tokenmill.stages.quality.fasttext_model import fasttext_lines, load, resolve
    from tokenmill.stages.quality.fasttext_stage import QualityFastText, QualityParams

    texts = _texts(a.shards)
    ref = resolve(a.model)
    if a.child == "plain":
        model = load(ref)
        run = lambda: [model.predict_batch(fasttext_lines(pa.array(texts[i:i + a.batch_size])), k=-1, threads=1)
                       for i in range(0, len(texts), a.batch_size)]
    else:
        stage = QualityFastText(QualityParams(model_path=a.model, threshold=0.5))
        stage.setup()
        batches = [pa.table({"text": pa.array(texts[i:i + a.batch_size], pa.large_string()),
                             "reject_reason": pa.nulls(len(texts[i:i + a.batch_size]), pa.string()),
                             "reject_stage": pa.nulls(len(texts[i:i + a.batch_size]), pa.string())})
                   for i in range(0, len(texts), a.batch_size)]
        run = lambda: [stage(b) for b in batches]
    for _ in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        res["seconds"].append(time.perf_counter() - t0)
        res["cpu_seconds"].append(time.process_time() - c0)
    res["docs"] = len(texts)
    return res


def _pipeline(a, res: dict) -> dict:
    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    for rep in range(a.repeats):
        out = QDIR / f"out-{rep}"
        shutil.rmtree(out, ignore_errors=True)
        pipeline = build_pipeline({"name": "bench-quality", "input": {"paths": [a.shards]}, "output": {"path": str(out)},
                                   "tokenizer": {"kind": "none"},
                                   "stages": [{"type": "quality_fasttext", "model_path": a.model, "threshold": 0.5,
                                               "resources": {"batch_size": a.batch_size}}]})
        with CpuTracker() as tracker:
            t0, c0 = time.perf_counter(), tracker.total()
            r = run_pipeline(pipeline, output=str(out), progress=False, num_cpus=1)
            res["seconds"].append(time.perf_counter() - t0)
            res["cpu_seconds"].append(tracker.total() - c0)
        res["docs"] = r.report["input"]["docs"]
        res["kept"] = r.report["output"]["docs"]
        stage = {st["stage"]: st for st in r.report["stages"]}["quality_fasttext"]
        res.setdefault("stage_busy_seconds", []).append(stage["busy_seconds"])
        shutil.rmtree(out, ignore_errors=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--json", default=str(HERE.with_suffix(".json")))
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--shards", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        Path(a.result).write_text(json.dumps(child(a)))
        return
    inp = prepare(a.docs)
    results, rows = {}, []
    for mode in a.modes.split(","):
        print(f"running {mode} ...", flush=True)
        result = QDIR / f"{mode}.json"
        results[mode] = run_child([str(HERE), "--child", mode, "--model", inp["model"], "--shards", inp["shards"],
                                   "--repeats", str(a.repeats), "--batch-size", str(a.batch_size), "--result",
                                   str(result)], result, env={"OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"})
    plain = results.get("plain")
    for mode, r in results.items():
        rate = r["docs"] / median(r["seconds"])
        ratio = rate / (plain["docs"] / median(plain["seconds"])) if plain else None
        rows.append([mode, f"{rate:,.0f}", f"{r['docs'] / median(r['cpu_seconds']):,.0f}",
                     f"{r['memory']['peak_rss_all_mib']:,.0f}", f"{ratio:.2f}" if ratio else "-"])
    table = print_table(["mode", "docs/s per core", "docs per CPU-s", "peak RSS MiB", "x plain"], rows,
                        title=f"quality_fasttext, {a.docs:,} docs of ~6 KB, one core, medians of {a.repeats}")
    if "pipeline" in results and plain:
        busy = results["pipeline"]["docs"] / median(results["pipeline"]["stage_busy_seconds"])
        print(f"in the pipeline, the stage's own busy time: {busy:,.0f} docs/s per core "
              f"({busy / (plain['docs'] / median(plain['seconds'])):.2f}x plain); the rest is reading, writing and "
              "the engine's fixed cost")
    if plain and "pipeline" in results:
        got = (results["pipeline"]["docs"] / median(results["pipeline"]["seconds"])) / (plain["docs"] / median(plain["seconds"]))
        print(f"goal: the pipeline at >= {GOAL}x the plain loop per core: {got:.2f}x -> {'MET' if got >= GOAL else 'NOT MET'}")
    write_json(Path(a.json), {"benchmark": "quality", "machine": machine_info(), "args": vars(a), "table": table,
                              "results": results})
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
