"""Benchmark: read -> langid -> heuristics -> write, tokenmill on Ray Data and on Spark vs datatrove (local executor).

    python bench/pipeline.py                # 1x (20,000 docs), 1 run of each system
    python bench/pipeline.py --runs 3       # 3 interleaved runs of each at 1x: medians (3x as long)
    python bench/pipeline.py --scale 10     # also 10x (200,000 docs, 1 run each) for the memory check (long)
    python bench/pipeline.py --only-scale 10            # just the 10x runs
    python bench/pipeline.py --docs 5000    # a smaller "1x" (a smoke test)

Duration: datatrove's filters cost ~30-60 ms of CPU per document here (spaCy word and
sentence splitting), so its 1x run alone needs ~5+ minutes of two idle cores, and the
default run (1 run of each) ~8-10 minutes on an idle 2-core machine; more when it is shared.

Input: the ``text`` of shared/data/web_dev.jsonl (394 web pages) + quality_dev.jsonl (757 docs),
cycled to 20,000 x scale documents (unique ids, identical texts repeat), written once as JSONL
shards of 2,500 docs under bench/_work/pipeline/ (8 shards at 1x, 80 at 10x).

- tokenmill: ``run_pipeline`` of a config with ``langid`` + ``heuristics`` (rules gopher_repetition,
  gopher_quality, c4, fineweb; per-language parameters from configs/languages), embedded Ray with
  ``--cores`` CPUs, a fresh output folder per run. It also counts tokens (tiktoken) at read,
  writes rejects, the manifest and report (that is what a run does).
- tokenmill-spark: the same run with ``engine="spark"`` (embedded ``local[cores]`` Spark; the JVM and
  its Python workers are in the child's process tree). Goal: within 1.5x of Ray per core.
- datatrove 0.10.1: ``LocalPipelineExecutor(tasks=2, workers=2)`` of JsonlReader ->
  LanguageFilter (lid.176.ftz by local path, bench/_datatrove_local.py) -> GopherRepetitionFilter
  -> GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter -> ParquetWriter(zstd), all
  with their defaults (English word tokenizer = spaCy ``blank("en")``, offline).

Each run is a child process; wall time is measured around ``run_pipeline`` / ``executor.run()``
inside it (start-up of Ray or of the process pool included, interpreter imports not), CPU time
over every process of its tree, and peak memory by sampling the child's process tree every 0.2 s:
``RSS driver+workers`` (the driver plus every Ray worker, or the datatrove processes) -- the
figure asked for; ``RSS all`` adds Ray's daemons (raylet, GCS, agents); ``PSS all`` divides shared
pages among the processes that map them (not inflated by shared libraries and the object store).
Goals reported: tokenmill docs/s per core >= 5x datatrove's; peak RSS tokenmill/datatrove <= 1.2
(at 1x and at 10x). Results: a table on stdout and bench/pipeline.json.
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
BENCH = HERE.parent
PDIR = WORK / "pipeline"
DOCS_1X = 20_000
SHARD_DOCS = 2_500
SPEED_GOAL = 5.0   # issue 22 (issue 8 asked 2x)
MEM_GOAL = 1.2
SPARK_GOAL = 1.5


def prepare(scale: int, docs_1x: int = DOCS_1X) -> dict:
    rows = []
    for name in ("web_dev.jsonl", "quality_dev.jsonl"):
        for line in open(SHARED_DATA / name, encoding="utf-8"):
            r = json.loads(line)
            if isinstance(r.get("text"), str) and r["text"].strip():
                rows.append((r["id"], r["text"]))
    n = docs_1x * scale
    tag = f"x{scale}" if docs_1x == DOCS_1X else f"{n}docs"
    folder = PDIR / f"input-{tag}"
    done = PDIR / f"input-{tag}.done"          # outside the folder: not an input file
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for s in range(0, n, SHARD_DOCS):
            with open(folder / f"part-{s // SHARD_DOCS:04d}.jsonl", "w", encoding="utf-8") as fh:
                for i in range(s, min(n, s + SHARD_DOCS)):
                    rid, text = rows[i % len(rows)]
                    fh.write(json.dumps({"id": f"{rid}-{i // len(rows)}", "text": text}, ensure_ascii=False) + "\n")
        done.write_text("ok")
    size = sum(f.stat().st_size for f in folder.iterdir())
    return {"folder": str(folder), "docs": n, "files": len(list(folder.iterdir())), "bytes": size,
            "distinct_texts": len(rows)}


# -- children -----------------------------------------------------------------------------------------
def child_tokenmill(a, engine: str = "ray") -> dict:
    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    data = {
        "name": "bench-pipeline",
        "input": {"paths": [a.input], "format": "jsonl"},
        "output": {"path": a.output},
        "stages": [{"type": "langid"},
                   {"type": "heuristics", "rules": ["gopher_repetition", "gopher_quality", "c4", "fineweb"]}],
    }
    if getattr(a, "object_store_mb", None):
        data["ray"] = {"object_store_memory": a.object_store_mb << 20}
    pipeline = build_pipeline(data)
    with CpuTracker() as tracker:
        t0, c0 = time.perf_counter(), tracker.total()
        res = run_pipeline(pipeline, output=a.output, progress=False, num_cpus=a.cores, engine=engine)
        wall = time.perf_counter() - t0
        cpu = tracker.total() - c0
    rep = res.report
    return {"seconds": wall, "cpu_seconds": cpu, "docs_in": rep["input"]["docs"],
            "docs_out": rep["stages"][-1]["docs_out"], "report_wall_seconds": rep["wall_seconds"],
            "phase_seconds": rep["phase_seconds"],
            "stages": [{k: s[k] for k in ("stage", "docs_in", "docs_out", "busy_seconds", "docs_per_second")}
                       for s in rep["stages"]]}


def child_datatrove(a) -> dict:
    from _datatrove_local import LocalLanguageFilter
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import ParquetWriter

    out = Path(a.output)
    ex = LocalPipelineExecutor(
        pipeline=[
            JsonlReader(a.input, glob_pattern="*.jsonl"),
            LocalLanguageFilter(),
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            C4QualityFilter(),
            FineWebQualityFilter(),
            ParquetWriter(str(out / "data"), compression="zstd"),
        ],
        tasks=a.tasks, workers=a.workers, logging_dir=str(out / "logs"),
    )
    with CpuTracker() as tracker:
        t0, c0 = time.perf_counter(), tracker.total()
        ex.run()
        wall = time.perf_counter() - t0
        cpu = tracker.total() - c0
    st = json.loads((out / "logs" / "stats.json").read_text())
    steps = []
    for s in st:
        steps.append({"name": s.get("name"), "stats": {k: (v if not isinstance(v, dict) else v.get("total", v))
                                                        for k, v in (s.get("stats") or {}).items()
                                                        if k in ("total", "forwarded", "dropped", "documents")}})
    import pyarrow.parquet as pq

    kept = sum(pq.ParquetFile(f).metadata.num_rows for f in (out / "data").rglob("*.parquet"))
    return {"seconds": wall, "cpu_seconds": cpu, "docs_out": kept, "steps": steps}


CHILDREN = {"tokenmill": child_tokenmill, "tokenmill-spark": lambda a: child_tokenmill(a, engine="spark"),
            "datatrove": child_datatrove}


# -- parent ---------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1, help="runs of each system at 1x (interleaved; median reported)")
    p.add_argument("--docs", type=int, default=DOCS_1X, help="documents at 1x (default 20,000)")
    p.add_argument("--scale", type=int, default=None, help="also run at this scale (e.g. 10: 200k docs) for memory")
    p.add_argument("--scale-runs", type=int, default=1, help="runs of each system at --scale")
    p.add_argument("--only-scale", type=int, default=None, help="run only this scale (skip 1x)")
    p.add_argument("--cores", type=int, default=min(2, os.cpu_count() or 1), help="CPUs for Ray / datatrove workers")
    p.add_argument("--systems", default="tokenmill,tokenmill-spark,datatrove")
    p.add_argument("--object-store-mb", type=int, default=None, help="cap the embedded Ray's object store (MiB)")
    p.add_argument("--json", default=str(HERE.with_suffix(".json")))
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--tasks", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        Path(a.result).write_text(json.dumps(CHILDREN[a.child](a), default=str))
        return
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    if "datatrove" in systems:
        try:
            import datatrove  # noqa: F401
            import spacy  # noqa: F401  (datatrove's English word tokenizer)
        except ImportError as e:
            print(f"datatrove comparison skipped ({e}); pip install 'datatrove[io,processing]==0.10.1' spacy", flush=True)
            systems.remove("datatrove")
    plan = [] if a.only_scale else [(1, a.runs)]
    scale = a.only_scale or a.scale
    if scale and scale != 1:
        plan.append((scale, a.scale_runs if not a.only_scale else a.runs))
    elif a.only_scale == 1:
        plan = [(1, a.runs)]

    t_all = time.perf_counter()
    res_dir = PDIR / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for sc, nruns in plan:
        inp = prepare(sc, a.docs)
        print(f"pipeline bench x{sc}: {inp['docs']:,} docs in {inp['files']} JSONL files ({inp['bytes'] / 1e6:,.0f} MB), "
              f"{nruns} run(s) of {', '.join(systems)} interleaved, {a.cores} cores", flush=True)
        runs = {s: [] for s in systems}
        for i in range(nruns):
            for sysname in systems:
                out = PDIR / f"out-{sysname}-x{sc}-{i}"
                shutil.rmtree(out, ignore_errors=True)
                rpath = res_dir / f"{sysname}-x{sc}-{i}.json"
                print(f"  {sysname} run {i + 1}/{nruns} ...", flush=True)
                r = run_child([str(HERE), "--child", sysname, "--input", inp["folder"], "--output", str(out),
                               "--result", str(rpath), "--cores", str(a.cores), "--tasks", str(a.cores),
                               "--workers", str(a.cores)]
                              + (["--object-store-mb", str(a.object_store_mb)] if a.object_store_mb else []), rpath,
                              env={"PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))})
                shutil.rmtree(out, ignore_errors=True)
                r["docs"] = inp["docs"]
                runs[sysname].append(r)
                m = r["memory"]
                print(f"    {r['seconds']:.1f} s, {inp['docs'] / r['seconds'] / a.cores:,.0f} docs/s/core, "
                      f"CPU {r['cpu_seconds']:.0f} s, kept {r['docs_out']:,}, peak RSS driver+workers "
                      f"{m['peak_rss_workers_mib']:,.0f} MiB (all {m['peak_rss_all_mib']:,.0f}, PSS {m['peak_pss_all_mib']:,.0f}), "
                      f"load {r['loadavg_before'][0]:.1f}->{r['loadavg_after'][0]:.1f}", flush=True)
        summ = {}
        for sysname, rs in runs.items():
            if not rs:
                continue
            secs = [r["seconds"] for r in rs]
            cpus = [r["cpu_seconds"] for r in rs]
            summ[sysname] = {
                "runs": len(rs), "docs": inp["docs"], "median_seconds": median(secs), "seconds": secs,
                "docs_per_second_per_core": inp["docs"] / median(secs) / a.cores,
                "docs_per_cpu_second": inp["docs"] / median(cpus), "cpu_seconds": cpus,
                "docs_out": [r["docs_out"] for r in rs],
                "peak_rss_workers_mib": max(r["memory"]["peak_rss_workers_mib"] for r in rs),
                "peak_rss_all_mib": max(r["memory"]["peak_rss_all_mib"] for r in rs),
                "peak_pss_all_mib": max(r["memory"]["peak_pss_all_mib"] for r in rs),
                "median_peak_rss_workers_mib": median([r["memory"]["peak_rss_workers_mib"] for r in rs]),
                "loadavg": [(r["loadavg_before"][0], r["loadavg_after"][0]) for r in rs],
            }
        ratios = {}
        if "tokenmill" in summ and "tokenmill-spark" in summ:
            t, sp = summ["tokenmill"], summ["tokenmill-spark"]
            ratios["spark_vs_ray_per_core"] = sp["docs_per_second_per_core"] / t["docs_per_second_per_core"]
            ratios["spark_vs_ray_rss_workers"] = sp["peak_rss_workers_mib"] / t["peak_rss_workers_mib"]
        if "tokenmill" in summ and "datatrove" in summ:
            t, d = summ["tokenmill"], summ["datatrove"]
            ratios |= {"speed_per_core": t["docs_per_second_per_core"] / d["docs_per_second_per_core"],
                      "speed_per_cpu_second": t["docs_per_cpu_second"] / d["docs_per_cpu_second"],
                      "speed_paired_median": median([(dr["seconds"] / tr["seconds"]) for tr, dr in zip(runs["tokenmill"], runs["datatrove"])]),
                      "rss_workers": t["peak_rss_workers_mib"] / d["peak_rss_workers_mib"],
                      "rss_all": t["peak_rss_all_mib"] / d["peak_rss_all_mib"],
                      "pss_all": t["peak_pss_all_mib"] / d["peak_pss_all_mib"]}
        results[f"x{sc}"] = {"input": inp, "summary": summ, "ratios": ratios, "runs": runs}

    # -- table ------------------------------------------------------------------------------------------
    rows = []
    for key, r in results.items():
        for sysname, s in r["summary"].items():
            rows.append([key, sysname, s["runs"], f"{s['median_seconds']:.1f}", f"{s['docs_per_second_per_core']:,.0f}",
                         f"{s['docs_per_cpu_second']:,.0f}", f"{median(s['docs_out']):,.0f}",
                         f"{s['peak_rss_workers_mib']:,.0f}", f"{s['peak_rss_all_mib']:,.0f}", f"{s['peak_pss_all_mib']:,.0f}"])
        q = r["ratios"]
        if "spark_vs_ray_per_core" in q:
            rows.append([key, "spark/ray", "", f"{1 / q['spark_vs_ray_per_core']:.2f}x",
                         f"{q['spark_vs_ray_per_core']:.2f}x", "", "", f"{q['spark_vs_ray_rss_workers']:.2f}x", "", ""])
        if "speed_per_core" in q:
            rows.append([key, "tokenmill/datatrove", "", f"{1 / q['speed_per_core']:.2f}x", f"{q['speed_per_core']:.2f}x",
                         f"{q['speed_per_cpu_second']:.2f}x", "", f"{q['rss_workers']:.2f}x", f"{q['rss_all']:.2f}x",
                         f"{q['pss_all']:.2f}x"])
    print()
    table = print_table(["scale", "system", "runs", "median wall s", "docs/s/core", "docs/CPU-s", "docs kept",
                         "peak RSS drv+wrk MiB", "peak RSS all MiB", "peak PSS MiB"], rows,
                        title=f"read -> langid -> heuristics -> write on {a.cores} cores (medians; memory: max over runs)")
    goals = {}
    for key, r in results.items():
        q = r["ratios"]
        if "spark_vs_ray_per_core" in q:
            met = q["spark_vs_ray_per_core"] >= 1 / SPARK_GOAL
            goals[f"spark_{key}"] = {"spark_vs_ray_per_core": q["spark_vs_ray_per_core"], "met": met}
            print(f"\ngoal: Spark within {SPARK_GOAL}x of Ray per core at {key}: Spark runs at "
                  f"{q['spark_vs_ray_per_core']:.2f}x Ray's docs/s per core -> {'MET' if met else 'NOT MET'}")
        if "speed_per_core" not in q:
            continue
        if key == "x1":
            goals["speed"] = {"ratio_per_core": q["speed_per_core"], "ratio_per_cpu_second": q["speed_per_cpu_second"],
                              "target": SPEED_GOAL, "met": q["speed_per_core"] >= SPEED_GOAL}
            print(f"\ngoal: tokenmill docs/s per core >= {SPEED_GOAL}x datatrove: {q['speed_per_core']:.2f}x "
                  f"(per CPU-second {q['speed_per_cpu_second']:.2f}x, paired {q['speed_paired_median']:.2f}x) -> "
                  f"{'MET' if goals['speed']['met'] else 'NOT MET'}")
        goals[f"memory_{key}"] = {"ratio_rss_workers": q["rss_workers"], "ratio_rss_all": q["rss_all"],
                                  "ratio_pss_all": q["pss_all"], "target": MEM_GOAL, "met": q["rss_workers"] <= MEM_GOAL}
        print(f"goal: peak RSS tokenmill/datatrove <= {MEM_GOAL} at {key}: driver+workers {q['rss_workers']:.2f}x "
              f"(all processes {q['rss_all']:.2f}x, PSS {q['pss_all']:.2f}x) -> "
              f"{'MET' if goals[f'memory_{key}']['met'] else 'NOT MET'}")
    old = {}
    jpath = Path(a.json)
    if jpath.exists() and a.only_scale:
        try:
            old = json.loads(jpath.read_text()).get("results", {})
        except ValueError:
            old = {}
    write_json(jpath, {"benchmark": "pipeline", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_info(),
                       "args": {k: v for k, v in vars(a).items() if k not in ("child", "input", "output", "result")},
                       "results": {**old, **results}, "goals": goals, "table": table,
                       "total_seconds": time.perf_counter() - t_all})


if __name__ == "__main__":
    main()
