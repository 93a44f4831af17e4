"""Benchmark: the engine's own cost. How much of a run's wall time is the stages' work?

    python bench/overhead.py                      # quickstart, 5k and 50k web docs, 3 runs each (~15 min)
    python bench/overhead.py --cases quickstart --runs 5
    python bench/overhead.py --cases 5k,50k --runs 1
    python bench/overhead.py --pythonpath /tmp/oldpkg --json bench/overhead-before.json   # another checkout:
        # git worktree add /tmp/oldtree <commit>; mkdir -p /tmp/oldpkg/tokenmill;
        # for d in engine stages cluster; do ln -s /tmp/oldtree/$d /tmp/oldpkg/tokenmill/$d; done

Cases (each run is a child process under a memory sampler; an embedded Ray with ``--cores``
CPUs starts inside it, and its start is part of the wall time):

- ``quickstart``: ``configs/quickstart.yaml`` as shipped (802 docs: JSONL, .zst, Parquet, WARC).
- ``5k`` / ``50k``: real web pages (shared/data/web_dev.jsonl + quality_dev.jsonl, 1,151 texts)
  cycled to 5,000 / 50,000 documents in JSONL shards of 500; each copy of a text gets a distinct
  last line, except every 10th document, which repeats an earlier one exactly (so exact dedup
  has work). Pipeline: langid -> heuristics -> exact_dedup, ``files_per_chunk: 2``.

Printed per case (medians over runs): wall (inside the child: Ray start, every phase, commit,
report), summed stage busy time (read + every stage, summed over workers, from report.json),
``efficiency`` = busy / (wall x cores) = end-to-end docs/s per core over the stages' own busy
docs/s (goal >= 0.7 at 50k), phase times, shuffle bytes, and peak RSS of the process tree.

Shuffle bytes: ``after`` is what this engine shuffles (the key columns of live rows, measured by
the executor); ``join (before)`` is the in-memory size of the stream phase's output plus the
decisions -- what the previous engine moved through ``Dataset.join`` to apply the decisions
(it joined every column of every document), measured from the same run's phase files.

Memory: peak RSS at 5k (1x) vs 50k (10x) (goal: ratio <= 1.2), and the peak per process name.
Results: a table on stdout and bench/overhead.json.
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
from _common import SHARED_DATA, WORK, machine_info, median, print_table, run_child, write_json  # noqa: E402

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
ODIR = WORK / "overhead"
SHARD_DOCS = 500
CASES = {"quickstart": None, "5k": 5_000, "50k": 50_000}
EFFICIENCY_GOAL = 0.7
MEM_GOAL = 1.2


def prepare(n: int) -> Path:
    texts = []
    for name in ("web_dev.jsonl", "quality_dev.jsonl"):
        for line in open(SHARED_DATA / name, encoding="utf-8"):
            t = json.loads(line).get("text")
            if isinstance(t, str) and t.strip():
                texts.append(t)
    folder = ODIR / f"input-{n}"
    done = ODIR / f"input-{n}.done"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    def text_of(i: int) -> str:
        if i % 10 == 9:          # an exact copy of an earlier document
            return text_of(i // 2)
        return texts[i % len(texts)] + f"\nArchived copy {i // len(texts)}."

    for s in range(0, n, SHARD_DOCS):
        with open(folder / f"part-{s // SHARD_DOCS:04d}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(s, min(n, s + SHARD_DOCS)):
                fh.write(json.dumps({"id": f"web-{i}", "text": text_of(i)}, ensure_ascii=False) + "\n")
    done.write_text("ok")
    return folder


# -- child --------------------------------------------------------------------------------------
def child(a) -> dict:
    from tokenmill.engine.config import build_pipeline, load_config
    from tokenmill.engine.run import run_pipeline

    if a.case == "quickstart":
        pipeline = load_config(REPO / "configs" / "quickstart.yaml")
    else:
        pipeline = build_pipeline({
            "name": f"overhead-{a.case}",
            "input": {"paths": [a.input], "format": "jsonl", "files_per_chunk": 2},
            "output": {"path": a.output},
            "stages": [{"type": "langid"}, {"type": "heuristics"}, {"type": "exact_dedup"}],
        })
    t0 = time.perf_counter()
    res = run_pipeline(pipeline, output=a.output, progress=False, num_cpus=a.cores, keep_work=True)
    wall = time.perf_counter() - t0
    rep = res.report
    return {"wall": wall, "docs": rep["input"]["docs"], "tokens": rep["input"]["tokens"],
            "busy": sum(s["busy_seconds"] or 0 for s in rep["stages"]),
            "busy_by_stage": {s["stage"]: s["busy_seconds"] for s in rep["stages"]},
            "phase_seconds": rep["phase_seconds"], "shuffle_bytes": rep.get("shuffle_bytes") or 0,
            "join_bytes_before": join_bytes(Path(a.output))}


def join_bytes(out: Path) -> int:
    """In-memory bytes of the stream phase's output + decisions: what a join of the documents
    against the decisions (the previous engine's final phase) had to shuffle."""
    import pyarrow.parquet as pq

    total = 0
    for f in out.glob("_work/*/p0-*/**/*.parquet"):
        total += pq.read_table(f, partitioning=None).nbytes
    return total


# -- parent -------------------------------------------------------------------------------------
def run_case(case: str, runs: int, cores: int, pythonpath: str = "") -> dict:
    inp = str(prepare(CASES[case])) if CASES[case] else ""
    res = []
    for i in range(runs):
        out = ODIR / f"out-{case}"
        shutil.rmtree(out, ignore_errors=True)
        r = run_child([str(HERE), "--child", "--case", case, "--input", inp, "--output", str(out),
                       "--cores", str(cores), "--result", str(ODIR / f"result-{case}.json")],
                      ODIR / f"result-{case}.json",
                      env={"RAY_AUTH_MODE": "disabled", **({"PYTHONPATH": pythonpath} if pythonpath else {})})
        r["efficiency"] = r["busy"] / (r["wall"] * cores)
        print(f"  {case} run {i + 1}/{runs}: wall {r['wall']:.1f}s, busy {r['busy']:.1f}s, efficiency "
              f"{r['efficiency']:.2f}, peak RSS {r['memory']['peak_rss_workers_mib']:,.0f} MiB", flush=True)
        res.append(r)
        shutil.rmtree(out, ignore_errors=True)
    return summarise(res)


def summarise(res: list[dict]) -> dict:
    phases = sorted({k for r in res for k in r["phase_seconds"]})
    return {
        "runs": res, "docs": res[0]["docs"], "tokens": res[0]["tokens"],
        "wall": median([r["wall"] for r in res]), "busy": median([r["busy"] for r in res]),
        "efficiency": median([r["efficiency"] for r in res]),
        "phases": {p: median([r["phase_seconds"].get(p) for r in res]) for p in phases},
        "shuffle_bytes": median([r["shuffle_bytes"] for r in res]),
        "join_bytes_before": median([r["join_bytes_before"] for r in res]),
        "rss_workers": median([r["memory"]["peak_rss_workers_mib"] for r in res]),
        "rss_all": median([r["memory"]["peak_rss_all_mib"] for r in res]),
        "rss_by_name": res[-1]["memory"]["peak_rss_by_process_name_mib"],
    }


def report(results: dict, cores: int) -> None:
    rows = []
    for case, s in results.items():
        rows.append([case, f"{s['docs']:,}", f"{s['wall']:.1f}", f"{s['busy']:.1f}", f"{s['efficiency']:.2f}",
                     f"{s['docs'] / s['wall'] / cores:,.0f}", f"{s['docs'] / s['busy']:,.0f}" if s["busy"] else "-",
                     f"{s['shuffle_bytes'] / 1e6:,.2f}", f"{s['join_bytes_before'] / 1e6:,.1f}",
                     f"{s['rss_workers']:,.0f}", f"{s['rss_all']:,.0f}"])
    print_table(["case", "docs", "wall s", "busy s", "busy/(wall*cores)", "docs/s/core", "busy docs/s",
                 "shuffle MB", "join MB (before)", "peak RSS MiB", "RSS all MiB"], rows,
                title=f"engine overhead, {cores} cores, medians of {len(next(iter(results.values()))['runs'])} runs")
    prow = [[case] + [f"{s['phases'].get(p, 0) or 0:.2f}" for p in _phase_names(results)] for case, s in results.items()]
    print_table(["case"] + _phase_names(results), prow, title="phase seconds (medians)")
    if "5k" in results and "50k" in results:
        ratio = results["50k"]["rss_workers"] / results["5k"]["rss_workers"]
        print(f"peak RSS 50k/5k (10x input): {ratio:.2f} (goal <= {MEM_GOAL}); efficiency at 50k: "
              f"{results['50k']['efficiency']:.2f} (goal >= {EFFICIENCY_GOAL})")
        names = sorted(set(results["5k"]["rss_by_name"]) | set(results["50k"]["rss_by_name"]),
                       key=lambda n: -results["50k"]["rss_by_name"].get(n, 0))
        print_table(["process", "5k MiB", "50k MiB"], [[n, results["5k"]["rss_by_name"].get(n, 0),
                                                        results["50k"]["rss_by_name"].get(n, 0)] for n in names[:15]],
                    title="peak RSS per process name (last run of each)")


def _phase_names(results: dict) -> list[str]:
    names = sorted({p for s in results.values() for p in s["phases"]})
    order = ["p0-stream", "p0-exact_dedup", "write", "commit", "report"]
    return [p for p in order if p in names] + [p for p in names if p not in order]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="quickstart,5k,50k")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cores", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--json", default=str(HERE.with_suffix(".json")))
    p.add_argument("--pythonpath", default="", help="a folder holding another checkout's code as tokenmill/ "
                   "(symlinks engine, stages, cluster): measures that code instead, e.g. the previous commit")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        Path(a.result).write_text(json.dumps(child(a), default=str))
        return
    ODIR.mkdir(parents=True, exist_ok=True)
    results = {}
    for case in [c.strip() for c in a.cases.split(",") if c.strip()]:
        print(f"{case}: {a.runs} run(s)", flush=True)
        results[case] = run_case(case, a.runs, a.cores, a.pythonpath)
    report(results, a.cores)
    write_json(Path(a.json), {"machine": machine_info(), "cores": a.cores, "results": results})


if __name__ == "__main__":
    main()
