"""Benchmark: the cleanup stages (url_filter, text_repair, pii, decontaminate), each against
datatrove's step that does the same job, on the same documents, one process (one core) each.

    python bench/cleanup.py                  # 20,000 documents, 3 runs per side, medians
    python bench/cleanup.py --docs 5000 --runs 1
    TOKENMILL_BENCH_PYTHON=/path/to/venv/bin/python   # the interpreter with datatrove 0.10.1 (pip install 'tokenmill[bench]')

Documents: the texts (and URLs) of shared/data/web_dev.jsonl + quality_dev.jsonl, the texts
bench/pipeline.py cycles, cycled to ``--docs``; one in 20 gets an e-mail, an IP address and a
phone number pasted in (so the PII steps have work). Peers (datatrove 0.10.1):

- url_filter vs ``URLFilter(use_integrated_lists=False)``, both given the same 1,000,000-domain
  block list (synthetic domains plus 50 real domains of the documents) and the word ``casino``;
- text_repair vs ``FTFYFormatter`` + ``C4QualityFilter`` with only its line rules on (javascript,
  lorem ipsum, policy; no sentence/line-length/terminal-punctuation rules), the closest pair;
- pii vs ``PIIFormatter`` (e-mails and IPs only: tokenmill also finds phones, cards and IBANs);
- decontaminate vs ``NGramsDecontFilter`` (13-grams), on the decontamination test set
  of tests/decon_corpus.py (book passages hidden in web pages under case, punctuation and
  spacing edits; other passages of the same books; near misses): recall, false positives, docs/s.
  The index holds what ``NGramsDecontIndexer.compute_hashes`` gives each item (its ``run`` needs
  lighteval), built here with the same tokenizer, normalisation and hash.

Printed: docs/s per core of each side, the ratio (tokenmill / datatrove), setup seconds, and
decontamination recall and false-positive rates. Written to bench/cleanup.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1] / "tests"))
from _common import SHARED_DATA, WORK  # noqa: E402

OUT = WORK / "cleanup"
PEER_PYTHON = os.environ.get("TOKENMILL_BENCH_PYTHON", "/tmp/benchvenv/bin/python")
BLOCK_DOMAINS = 1_000_000


def documents(n: int) -> list[dict]:
    base = []
    for name in ("web_dev.jsonl", "quality_dev.jsonl"):
        base += [json.loads(line) for line in open(SHARED_DATA / name, encoding="utf-8")]
    rng = random.Random(0)
    docs = []
    for i in range(n):
        r = base[i % len(base)]
        text = r["text"]
        if i % 20 == 0:
            text += f"\nContact jane.doe{i}@example.org or call +44 20 7946 {i % 10000:04d}. Server 192.168.{i % 256}.{rng.randrange(256)}"
        docs.append({"id": f"d{i}", "text": text, "url": r.get("url") or f"https://example.net/{r['id']}"})   # datatrove needs one
    return docs


def write_inputs(n: int) -> dict:
    """Documents, the block list and the decontamination set, as files both sides read."""
    from decon_corpus import build, write_eval

    OUT.mkdir(parents=True, exist_ok=True)
    docs = documents(n)
    with open(OUT / "docs.jsonl", "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    from urllib.parse import urlsplit

    real = sorted({urlsplit(d["url"]).hostname or "" for d in docs if d["url"]} - {""})[:50]
    rng = random.Random(1)
    with open(OUT / "block.txt", "w") as fh:
        fh.write("# synthetic block list\n")
        for i in range(BLOCK_DOMAINS - len(real)):
            fh.write(f"{''.join(rng.choices('abcdefghijklmnopqrstuvwxyz', k=10))}{i}.com\n")
        fh.write("".join(f"{h}\n" for h in real))
    items, decon_docs = build(SHARED_DATA, seed=0, per_book=3)
    write_eval(items, OUT / "evals.jsonl")
    with open(OUT / "decon_docs.jsonl", "w", encoding="utf-8") as fh:
        for d in decon_docs:
            fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    return {"docs": len(docs), "decon_docs": len(decon_docs), "eval_items": len(items), "blocked_real_domains": len(real)}


def _read(name: str) -> list[dict]:
    return [json.loads(line) for line in open(OUT / name, encoding="utf-8")]


# -- tokenmill -----------------------------------------------------------------------------------
def tokenmill_stage(kind: str):
    from tokenmill.engine.config import shipped_languages_dir
    from tokenmill.engine.languages import LanguageTable, load_language_files
    from tokenmill.engine.stage import get_stage_class

    langs = LanguageTable(files=load_language_files(shipped_languages_dir()))
    params = {"url_filter": {"block_domains": [str(OUT / "block.txt")], "block_url_words": ["casino"]},
              "text_repair": {}, "pii": {},
              "decontaminate": {"eval_sets": [{"name": "books", "path": str(OUT / "evals.jsonl"), "text_fields": ["passage"]}]}}[kind]
    cls = get_stage_class(kind)
    p = cls.Params.model_validate(params)
    if kind == "decontaminate":
        import shutil

        shutil.rmtree(OUT / "index", ignore_errors=True)
        p = cls.prepare(p, str(OUT / "index"))
    stage = cls(p, langs)
    stage.setup()
    return stage


def run_tokenmill(kind: str) -> dict:
    import pyarrow as pa

    from tokenmill.engine.batches import run_stage
    from tokenmill.engine.schema import conform, phase_schema

    class _RS:   # the engine's view of one stage, for its schema
        def __init__(self, cls):
            self.cls = cls

    docs = _read("decon_docs.jsonl" if kind == "decontaminate" else "docs.jsonl")
    t0 = time.perf_counter()
    stage = tokenmill_stage(kind)
    setup = time.perf_counter() - t0
    schema = phase_schema([_RS(type(stage))])
    table = conform(pa.table({"id": [d["id"] for d in docs], "text": pa.array([d["text"] for d in docs], pa.large_string()),
                              "url": [d.get("url") for d in docs],
                              "num_chars": pa.array([len(d["text"]) for d in docs], pa.int64())}), schema)
    t0 = time.perf_counter()
    outs = [run_stage(stage, table.slice(i, 1000), schema)[0] for i in range(0, table.num_rows, 1000)]
    seconds = time.perf_counter() - t0
    out = pa.concat_tables(outs)
    flagged = [r is not None for r in out["reject_reason"].to_pylist()]
    changed = sum(a != b for a, b in zip(out["text"].to_pylist(), [d["text"] for d in docs]))
    return {"seconds": seconds, "setup_seconds": setup, "docs": len(docs), "flagged": flagged, "changed": changed}


# -- datatrove (run under the peer interpreter) ----------------------------------------------------
def datatrove_step(kind: str):
    if kind == "url_filter":
        from datatrove.pipeline.filters import URLFilter

        domains = [ln.strip() for ln in open(OUT / "block.txt") if ln.strip() and not ln.startswith("#")]
        return [URLFilter(extra_domains=domains, banned_words=["casino"], use_integrated_lists=False)]
    if kind == "text_repair":
        from datatrove.pipeline.filters import C4QualityFilter
        from datatrove.pipeline.formatters import FTFYFormatter

        return [FTFYFormatter(), C4QualityFilter(remove_citations=False, filter_no_terminal_punct=False, min_num_sentences=-1,
                                                 min_words_per_line=-1, max_word_length=-1, filter_curly_bracket=False)]
    if kind == "pii":
        from datatrove.pipeline.formatters import PIIFormatter

        return [PIIFormatter()]
    import numpy as np
    from datatrove.pipeline.decont import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.text import ngrams, simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    cfg = NGramsDecontConfig(n_grams=13, find_query_ngrams=True, find_overlap_ngrams=False)
    tokenizer, hash_func = load_word_tokenizer("en"), create_hash_func(cfg.hash_config)
    hashes = set()
    for item in _read("evals.jsonl"):   # NGramsDecontIndexer.compute_hashes(label), without lighteval
        tokens = tokenizer.word_tokenize(simplify_text(item["passage"], cfg.norm_config))
        hashes.update(map(hash_func, map(" ".join, ngrams(tokens, cfg.n_grams))))
    (OUT / "dt_index").mkdir(exist_ok=True)
    np.array(sorted(hashes), dtype=cfg.hash_config.np_descr).tofile(OUT / "dt_index" / "books.index.hashes")
    return [NGramsDecontFilter(str(OUT / "dt_index"), config=cfg)]


def run_datatrove(kind: str) -> dict:
    from datatrove.data import Document

    docs = _read("decon_docs.jsonl" if kind == "decontaminate" else "docs.jsonl")
    t0 = time.perf_counter()
    steps = datatrove_step(kind)
    setup = time.perf_counter() - t0
    stream = [Document(text=d["text"], id=d["id"], metadata={"url": d.get("url") or ""}) for d in docs]
    t0 = time.perf_counter()
    kept_docs = list(stream)
    for step in steps:
        kept_docs = list(step.run(iter(kept_docs)))
    seconds = time.perf_counter() - t0
    kept = {d.id for d in kept_docs}
    texts = {d.id: d.text for d in kept_docs}
    return {"seconds": seconds, "setup_seconds": setup, "docs": len(docs),
            "flagged": [d["id"] not in kept for d in docs],
            "changed": sum(1 for d in docs if d["id"] in texts and texts[d["id"]] != d["text"])}


def child(side: str, kind: str) -> dict:
    cmd = [sys.executable if side == "tokenmill" else PEER_PYTHON, str(HERE), "--child", side, kind]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{side} {kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def decon_quality(flagged: list[bool]) -> dict:
    labels = [d["label"] for d in _read("decon_docs.jsonl")]

    def rate(label: str) -> float:
        sel = [f for f, lab in zip(flagged, labels) if lab == label]
        return round(sum(sel) / len(sel), 4) if sel else None

    return {"recall": rate("contaminated"), "fp_other_passage": rate("other_passage"),
            "fp_near_miss": rate("near_miss"), "fp_page": rate("page")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stages", default="url_filter,text_repair,pii,decontaminate")
    ap.add_argument("--child", nargs=2, metavar=("SIDE", "STAGE"))
    a = ap.parse_args()
    if a.child:
        side, kind = a.child
        print(json.dumps(run_tokenmill(kind) if side == "tokenmill" else run_datatrove(kind)))
        return
    inputs = write_inputs(a.docs)
    print(f"inputs: {inputs}", flush=True)
    results = {"inputs": inputs, "runs": a.runs, "stages": {}}
    for kind in a.stages.split(","):
        per = {"tokenmill": [], "datatrove": []}
        for _ in range(a.runs):
            for side in per:   # interleaved: the two sides see the same machine state
                per[side].append(child(side, kind))
        row = {}
        for side, runs in per.items():
            rates = [r["docs"] / r["seconds"] for r in runs]
            row[side] = {"docs_per_s_per_core": round(statistics.median(rates), 1),
                         "setup_seconds": round(statistics.median(r["setup_seconds"] for r in runs), 2),
                         "flagged": sum(runs[0]["flagged"]), "changed": runs[0]["changed"]}
            if kind == "decontaminate":
                row[side].update(decon_quality(runs[0]["flagged"]))
        row["ratio"] = round(row["tokenmill"]["docs_per_s_per_core"] / row["datatrove"]["docs_per_s_per_core"], 2)
        results["stages"][kind] = row
        print(f"{kind:<14} tokenmill {row['tokenmill']['docs_per_s_per_core']:>10,.0f} docs/s/core   datatrove "
              f"{row['datatrove']['docs_per_s_per_core']:>10,.0f}   ratio {row['ratio']:.2f}x   "
              f"setup {row['tokenmill']['setup_seconds']}s vs {row['datatrove']['setup_seconds']}s", flush=True)
        if kind == "decontaminate":
            for side in ("tokenmill", "datatrove"):
                q = {k: row[side][k] for k in ("recall", "fp_other_passage", "fp_near_miss", "fp_page")}
                print(f"    {side:<10} {q}", flush=True)
    (HERE.parent / "cleanup.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
