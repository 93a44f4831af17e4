"""Benchmark: ``semantic_dedup`` against the embedding index of earlier runs (issue 25, incremental).

A cron series adds a few documents to many. Run A deduplicates ``--earlier`` documents and writes
its kept documents' embeddings to an index; run B deduplicates ``--new`` documents against that
index. Measured in the same invocation on the same documents, each run in its own child pinned to
one CPU: B with the index, and its peer, B without it (the same new documents alone); per run the
wall, docs/s per core, the global step's seconds (the report's ``p0-semantic_dedup`` phase), the
documents of A it read and peak RSS; and of B's copies (word 5-gram Jaccard >= 0.8) of A's
documents, the share removed as a duplicate of a document of A. (A "before" figure for a change to
the stage: run this once on each version.)

    python bench/semantic_incremental.py [--earlier 30000] [--new 1000] [--lexical bench/_work/lexical] [--eps 0.1]

Corpus: ``tests/neardup_corpus.py`` ``build_corpus(earlier + new, --seed)``, shuffled by the seed,
the first ``--earlier`` documents to A. Results: tables on stdout and bench/semantic_incremental.json.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import WORK, machine_info, print_table, run_child, write_json  # noqa: E402
from semantic import ONE_THREAD, _pin  # noqa: E402   (bench/semantic.py: one thread, one CPU per child)

HERE = Path(__file__).resolve()
IDIR = WORK / "semantic_incremental"


def prepare(a) -> dict:
    """A's and B's documents as JSONL, and the copies in B of A's documents."""
    import neardup_corpus as nc

    rows = nc.build_corpus(a.earlier + a.new, seed=a.seed)
    random.Random(a.seed).shuffle(rows)
    first, later = rows[:a.earlier], rows[a.earlier:]
    IDIR.mkdir(parents=True, exist_ok=True)
    for name, part in (("a", first), ("b", later)):
        nc.write_jsonl(part, IDIR / f"{name}.jsonl")
    in_a = {r["id"] for r in first}
    copies = [r["id"] for r in later if r["group"] in in_a and r["group"] != r["id"] and r["jaccard"] >= 0.8]
    return {"a": str(IDIR / "a.jsonl"), "b": str(IDIR / "b.jsonl"), "copies_of_a": copies, "ids_of_a": sorted(in_a)}


def config(a, jsonl: str, out: Path, index: dict) -> dict:
    stage = {"type": "semantic_dedup", "encoder": {"kind": "lexical", "path": a.lexical}, "eps": a.eps,
             "scope": "global", **({"index": index} if index else {})}
    return {"name": f"bench-sem-incr-{out.name}", "input": {"paths": [jsonl]}, "output": {"path": str(out)},
            "tokenizer": {"kind": "none"}, "stages": [stage]}


def child(a) -> dict:
    """One tokenmill run on the local executor, one CPU: wall, the global step's seconds, the report's figures."""
    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    _pin()
    cfg = json.loads(Path(a.config).read_text())
    shutil.rmtree(cfg["output"]["path"], ignore_errors=True)
    t0 = time.perf_counter()
    run = run_pipeline(build_pipeline(cfg), engine="local", num_cpus=1, progress=False, force=True)
    wall = time.perf_counter() - t0
    phases = run.report.get("phase_seconds") or {}
    return {"wall_seconds": wall, "global_seconds": next((v for k, v in phases.items() if k.endswith("semantic_dedup")), None),
            "figures": run.report["global_steps"]["semantic_dedup"]}


def removed_ids(out: Path) -> dict:
    from pipeline_helpers import read_manifest_files

    rej = read_manifest_files(out, "rejects/")
    if "id" not in rej.column_names:   # nothing rejected
        return {}
    return {i: r for i, r in zip(rej["id"].to_pylist(), rej["reject_reason"].to_pylist()) if r}


def run_one(a, name: str, jsonl: str, index: dict) -> dict:
    out = IDIR / f"out-{name}"
    cfg_path = IDIR / f"{name}.json"
    cfg_path.write_text(json.dumps(config(a, jsonl, out, index)))
    print(f"  {name} ...", flush=True)
    res = run_child([str(HERE), "--child", "--config", str(cfg_path), "--result", str(IDIR / f"result-{name}.json")],
                    IDIR / f"result-{name}.json", env=ONE_THREAD)
    res["removed"] = removed_ids(out)
    print(f"  {name}: {res['wall_seconds']:.1f} s, global step {res['global_seconds']:.2f} s", flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--earlier", type=int, default=30_000, help="documents of run A (the index)")
    p.add_argument("--new", type=int, default=1_000, help="documents of run B")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--lexical", default=str(WORK / "lexical"), help="a train-embedder folder")
    p.add_argument("--out", default=str(HERE.with_suffix(".json")))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        Path(a.result).write_text(json.dumps(child(a)))
        return
    if not (Path(a.lexical) / "embedder.json").exists():
        raise SystemExit(f"--lexical {a.lexical}: no embedder.json (tokenmill train-embedder --input ... --out {a.lexical})")
    data = prepare(a)
    index = IDIR / "index"
    shutil.rmtree(index, ignore_errors=True)
    runs = {"A (writes the index)": run_one(a, "a", data["a"], {"write": str(index)}),
            "B against the index": run_one(a, "b", data["b"], {"read": [str(index)]}),
            "B alone (peer)": run_one(a, "b-alone", data["b"], {})}
    indexed = a.earlier - len(runs["A (writes the index)"]["removed"])   # what A kept
    rows = []
    for name, r in runs.items():
        docs = a.earlier if name.startswith("A") else a.new
        rows.append([name, docs, indexed if "index" in name and name.startswith("B") else 0,
                     round(r["wall_seconds"], 2), round(docs / r["wall_seconds"], 1), round(r["global_seconds"], 2),
                     len(r["removed"]), round(r["memory"]["peak_rss_all_mib"], 1)])
    print_table(["run", "docs", "A's kept documents read", "wall s", "docs/s/core", "global step s", "removed",
                 "peak RSS MiB"], rows, "semantic_dedup against an index (one core each)")
    b, alone = runs["B against the index"], runs["B alone (peer)"]
    in_a = set(data["ids_of_a"])
    hit = sum(1 for c in data["copies_of_a"] if b["removed"].get(c, "").split(":", 1)[-1] in in_a)   # names an A document
    summary = {"copies_of_a_in_b": len(data["copies_of_a"]), "removed_of_them": hit,
               "share": round(hit / max(1, len(data["copies_of_a"])), 4),
               "global_step_ratio_with_index": round(b["global_seconds"] / max(alone["global_seconds"], 1e-9), 2),
               "wall_ratio_with_index": round(b["wall_seconds"] / alone["wall_seconds"], 2)}
    print(json.dumps(summary))
    write_json(Path(a.out), {"machine": machine_info(), "args": vars(a), "summary": summary,
                             "runs": {k: {kk: vv for kk, vv in v.items() if kk != "removed"} for k, v in runs.items()}})


if __name__ == "__main__":
    main()
