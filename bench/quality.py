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

The embedding stage, on ``--embed-docs`` of the same documents, one core (torch with one thread),
the bundled all-MiniLM-L6-v2 with a head trained here (``train-quality --kind embed``), 256 tokens:

- ``embed-plain``: the model called directly, as in its model card: padded batches of
  ``--micro-batch`` in input order, mean pooling, L2 norm, the head;
  (texts cut to a seeded log-uniform 10-400 words: web documents vary in length);
- ``embed-sorted`` / ``embed-unsorted``: the stage's two halves (tokenizer, then encoder and head)
  on batches of ``--batch-size``, with ``sort_by_length`` on and off.

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
from _common import SHARED_DATA, WORK, CpuTracker, machine_info, median, print_table, run_child, write_json  # noqa: E402

HERE = Path(__file__).resolve()
QDIR = WORK / "quality"
MODES = ("plain", "stage", "pipeline")
EMBED_MODES = ("embed-plain", "embed-sorted", "embed-unsorted")
GOAL = 0.8


def prepare(docs: int, embed_too: bool = False) -> dict:
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
    embed = QDIR / "embed-model"
    if embed_too and not (embed / "quality.json").exists():
        train(TrainArgs(positive=[str(QDIR / "positive.jsonl")], negative=[str(QDIR / "negative.jsonl")],
                        out=str(embed), kind="embed", holdout=0.2))
    shards = QDIR / f"docs-{docs}"
    if not shards.exists():
        shards.mkdir(parents=True)
        n_files = max(1, docs // 2500)
        for f in range(n_files):
            part = range(f, docs, n_files)
            (shards / f"part-{f}.jsonl").write_text("".join(
                json.dumps({"id": f"d{i}", "text": rows[i % len(rows)]["text"]}) + "\n" for i in part))
    return {"model": str(model), "shards": str(shards), "embed_model": str(embed)}


def _texts(shards: str) -> list[str]:
    return [json.loads(line)["text"] for p in sorted(Path(shards).glob("*.jsonl")) for line in p.open()]


def child(a) -> dict:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    res: dict = {"seconds": [], "cpu_seconds": []}
    if a.child == "pipeline":
        return _pipeline(a, res)
    if a.child.startswith("embed"):
        return _embed(a, res)
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
    return _timed(run, res, a.repeats, len(texts))


def _timed(run, res: dict, repeats: int, docs: int) -> dict:
    """``run()`` ``repeats`` times: wall and CPU seconds of each, into ``res``."""
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        res["seconds"].append(time.perf_counter() - t0)
        res["cpu_seconds"].append(time.process_time() - c0)
    res["docs"] = docs
    return res


def _embed(a, res: dict) -> dict:
    import pyarrow as pa
    import torch

    from tokenmill.stages.quality.embed_model import Encoder, head_scores
    from tokenmill.stages.quality.embed_stage import EmbedParams, EmbedTokenize, QualityEmbed, read_head

    torch.set_num_threads(1)
    texts = _varied_lengths(_texts(a.shards)[:a.embed_docs])
    if a.child == "embed-plain":
        _, w, b = read_head(a.model)
        enc = Encoder()
        enc.load_model()

        def run():
            with torch.no_grad():
                for i in range(0, len(texts), a.micro_batch):
                    batch = enc.tokenizer(texts[i:i + a.micro_batch], padding=True, truncation=True, max_length=256,
                                          return_tensors="pt")
                    hidden = enc.model(**batch).last_hidden_state
                    m = batch["attention_mask"].unsqueeze(-1).float()
                    emb = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=1).numpy()
                    head_scores(emb, w, b)
    else:
        params = EmbedParams(model_path=a.model, annotate_only=True, micro_batch=a.micro_batch,
                             sort_by_length=a.child == "embed-sorted")
        tok, stage = EmbedTokenize(params), QualityEmbed(params, resources=_res())
        tok.setup()
        stage.setup()
        batches = [pa.table({"text": pa.array(texts[i:i + a.batch_size], pa.large_string())})
                   for i in range(0, len(texts), a.batch_size)]
        run = lambda: [stage.scores(tok(b)) for b in batches]
    return _timed(run, res, a.repeats, len(texts))


def _varied_lengths(texts: list[str]) -> list[str]:
    """Each text cut to a seeded log-uniform 10-400 words, as web documents vary (most quality_dev
    documents are longer than the encoder's 256 tokens, where sorting by length could not help)."""
    import numpy as np

    words = np.exp(np.random.default_rng(0).uniform(np.log(10), np.log(400), len(texts))).astype(int)
    return [" ".join(t.split(" ")[:n]) for t, n in zip(texts, words)]


def _res():
    from tokenmill.engine.stage import Resources

    return Resources(num_cpus=1, concurrency=1, batch_size=256)


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
    p.add_argument("--modes", default=",".join(MODES + EMBED_MODES))
    p.add_argument("--embed-docs", type=int, default=1000, help="documents for the embedding modes")
    p.add_argument("--micro-batch", type=int, default=64, help="documents per encoder call (embedding modes)")
    p.add_argument("--json", default=str(HERE.with_suffix(".json")))
    p.add_argument("--child", choices=MODES + EMBED_MODES, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--shards", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        Path(a.result).write_text(json.dumps(child(a)))
        return
    modes = a.modes.split(",")
    inp = prepare(a.docs, embed_too=any(m.startswith("embed") for m in modes))
    results, rows = {}, []
    for mode in modes:
        print(f"running {mode} ...", flush=True)
        result = QDIR / f"{mode}.json"
        model = inp["embed_model"] if mode.startswith("embed") else inp["model"]
        results[mode] = run_child([str(HERE), "--child", mode, "--model", model, "--shards", inp["shards"],
                                   "--repeats", str(a.repeats), "--batch-size", str(a.batch_size), "--embed-docs",
                                   str(a.embed_docs), "--micro-batch", str(a.micro_batch), "--result", str(result)],
                                  result, env={"OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"})
    plain = results.get("plain")
    for mode, r in results.items():
        base = results.get("embed-plain") if mode.startswith("embed") else plain
        rate = r["docs"] / median(r["seconds"])
        ratio = rate / (base["docs"] / median(base["seconds"])) if base else None
        rows.append([mode, f"{rate:,.0f}", f"{r['docs'] / median(r['cpu_seconds']):,.0f}",
                     f"{r['memory']['peak_rss_all_mib']:,.0f}", f"{ratio:.2f}" if ratio else "-"])
    table = print_table(["mode", "docs/s per core", "docs per CPU-s", "peak RSS MiB", "x plain (embed: x embed-plain)"], rows,
                        title=f"quality stages, one core, medians of {a.repeats}: fastText modes on {a.docs:,} docs "
                              f"of ~6 KB, embed modes on {a.embed_docs:,} docs of 10-400 words")
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
