"""Benchmark: docs/s per core of tokenmill's ``langid`` stage under Ray vs a plain fastText loop.

    python bench/langid.py                 # default: ~200k docs, 3 repeats, all modes (~5-8 min on 2 cores)
    python bench/langid.py --quick         # 1 copy (~20k docs), 3 repeats: a smoke test
    python bench/langid.py --profile       # also cProfile the stage's __call__ (no Ray)

Documents: every ``text`` of shared/data/langid_dev.jsonl (lingua sentences + UDHR paragraphs,
20,479 rows, ~125 chars) replicated ``--copies`` times (default 10 -> 204,790 docs; ids unique).

Modes, each run in its own child process (peak memory = that child's process tree + ``ray::``
processes, sampled every 0.2 s):

- ``plain``     : ``fasttext.load_model(lid.176.ftz).predict(list_of_texts)`` over the texts in
                  batches of ``--batch-size``, in a Python loop, one process = one core, with the
                  C++ binding ``fasttext==0.9.3`` (the peer; ``pip install fasttext==0.9.3``, it
                  compiles). The baseline.
- ``plain-new`` : the same loop with the binding tokenmill uses, ``fasttext-new`` (Rust):
                  ``predict_batch(texts, threads=1)``, one core. Its ratio to ``plain`` is the
                  binding's own predict speed against fasttext 0.9.3.
- ``stage``     : tokenmill's LangId stage ``__call__`` on Arrow batches in a Python loop, no
                  Ray (what the stage itself costs over the bare model call).
- ``ray-cN``    : the engine's own code path: ``RayExecutor.map_stages`` (``map_batches`` of
                  ``StageActor`` over an ``ActorPoolStrategy`` of N actors, ``batch_format=pyarrow``,
                  metrics actor on) over the same documents already in the object store
                  (``ray.data.from_arrow``), then ``materialize()``. Timed from building the
                  dataset to materialized, so actor start-up (imports, model load) is included,
                  as it is in every phase of a real run; ray.init is not. Per core = docs/s / N.
- ``pipeline``  : a real ``run_pipeline`` with only the langid stage (read JSONL -> tiktoken
                  counts -> langid -> write zstd Parquet + report), fresh output folder per run.
                  Per core = docs / wall / cores. Context for how much of a run langid is.
- ``datatrove`` : datatrove 0.10.1 ``LanguageFilter`` (ft176 backend; lid.176.ftz by local path
                  via bench/_datatrove_local.py, no download) ``.run()`` over datatrove Documents
                  in one process = one core.

The goal checked: ray-c2 docs/s per core >= 80% of plain docs/s per core.
Results: a table on stdout and bench/langid.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    SHARED_DATA,
    WORK,
    CpuTracker,
    lid_model_path,
    machine_info,
    median,
    print_table,
    run_child,
    write_json,
)

HERE = Path(__file__).resolve()
LANGID_DIR = WORK / "langid"
GOAL = 0.80


# -- input ---------------------------------------------------------------------------------------
def prepare(copies: int) -> dict:
    """Write the replicated documents once: Arrow IPC (for plain/stage/ray/datatrove) and JSONL
    shards (for the real pipeline). Returns paths and counts."""
    LANGID_DIR.mkdir(parents=True, exist_ok=True)
    src = SHARED_DATA / "langid_dev.jsonl"
    rows = [json.loads(item) for item in open(src, encoding="utf-8")]
    tag = f"x{copies}"
    arrow_path = LANGID_DIR / f"docs-{tag}.arrow"
    jsonl_dir = LANGID_DIR / f"jsonl-{tag}"
    n = len(rows) * copies
    done = LANGID_DIR / f"jsonl-{tag}.done"    # outside the input folder: format jsonl would read it
    if not arrow_path.exists() or not done.exists():
        import pyarrow as pa

        ids, texts = [], []
        for c in range(copies):
            for r in rows:
                ids.append(f"{r['id']}-c{c}")
                texts.append(r["text"])
        table = pa.table({"id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.large_string())})
        tmp = arrow_path.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as fh, pa.ipc.new_file(fh, table.schema) as w:
            w.write_table(table)
        tmp.replace(arrow_path)
        jsonl_dir.mkdir(exist_ok=True)
        shards = max(2, copies)  # one shard per copy: read parallelism for the pipeline mode
        per = (n + shards - 1) // shards
        for s in range(shards):
            with open(jsonl_dir / f"part-{s:03d}.jsonl", "w", encoding="utf-8") as fh:
                for i in range(s * per, min(n, (s + 1) * per)):
                    fh.write(json.dumps({"id": ids[i], "text": texts[i]}, ensure_ascii=False) + "\n")
        done.write_text("ok")
    return {"arrow": str(arrow_path), "jsonl_dir": str(jsonl_dir), "docs": n, "source_rows": len(rows),
            "chars": None}


def load_table(path: str):
    import pyarrow as pa

    with pa.memory_map(path) as fh:
        return pa.ipc.open_file(fh).read_all()


# -- children: each measures one mode and writes JSON -----------------------------------------------
def load_lid(binding: str):
    """lid.176.ftz loaded by ``fasttext`` (C++ 0.9.3) or ``fasttext_new`` (Rust)."""
    import importlib

    return importlib.import_module(binding).load_model(lid_model_path())


def child_plain(a) -> dict:
    texts = load_table(a.input)["text"].to_pylist()
    t0 = time.perf_counter()
    model = load_lid(a.binding)
    load_s = time.perf_counter() - t0
    times, cpu, langs = [], [], None
    for _ in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        langs = plain_loop(model, texts, a.batch_size)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    en = sum(1 for item in langs if item and item[0] == "__label__en")
    return {"docs": len(texts), "seconds": times, "cpu_seconds": cpu, "cores": 1, "model_load_seconds": load_s,
            "en_docs": en}


def plain_loop(model, texts: list, bs: int) -> list:
    """The baseline: the bare fastText call over the texts, a batch at a time."""
    labels = []
    one_core = hasattr(model, "predict_batch")  # fasttext-new: one thread, like the C++ loop
    for i in range(0, len(texts), bs):
        lab, _p = model.predict_batch(texts[i:i + bs], threads=1) if one_core else model.predict(texts[i:i + bs])
        labels += lab
    return labels


def _languages_and_stage(batch_size: int):
    from tokenmill.engine.config import build_pipeline

    pipeline = build_pipeline({
        "name": "bench-langid",
        "input": {"paths": [str(SHARED_DATA / "langid_dev.jsonl")]},
        "output": {"path": str(LANGID_DIR / "unused")},
        "stages": [{"type": "langid", "resources": {"batch_size": batch_size}}],
    })
    return pipeline


def _document_batches(table, batch_size: int, schema):
    """The docs as the engine would hand them to the stage: DOCUMENT_SCHEMA + the stage's columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tokenmill.engine.schema import conform

    n = table.num_rows
    full = pa.table({
        "id": table["id"], "text": table["text"],
        "source": pa.array(["langid_dev.jsonl"] * n, pa.string()),
        "row_key": table["id"],
        "num_chars": pc.utf8_length(table["text"]).cast(pa.int64()),
    })
    full = conform(full, schema)
    return full, [full.slice(i, batch_size) for i in range(0, n, batch_size)]


def child_stage(a) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    from tokenmill.engine.schema import phase_schema
    from tokenmill.engine.worker import StreamWorker

    pipeline = _languages_and_stage(a.batch_size)
    schema = phase_schema(pipeline.stages)
    full, batches = _document_batches(load_table(a.input), a.batch_size, schema)
    t0 = time.perf_counter()
    actor = StreamWorker(_pool(pipeline, schema, a.batch_size)).run
    setup_s = time.perf_counter() - t0
    stage = actor.__self__.stages[0]
    times, cpu, times_bare = [], [], []
    out = None
    for _ in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        outs = [actor(b) for b in batches]      # StreamWorker.run: live mask + conform, as under Ray
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        out = outs
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for b in batches:
            stage(b)                             # the stage alone
        times_bare.append(time.perf_counter() - t0)
    res = {"docs": full.num_rows, "seconds": times, "cpu_seconds": cpu, "seconds_stage_only": times_bare, "cores": 1,
           "setup_seconds": setup_s}
    t = pa.concat_tables(out)
    res["en_docs"] = int(pc.sum(pc.equal(t["language"], "en")).as_py())
    res["rejected"] = int(pc.sum(pc.is_valid(t["reject_stage"])).as_py())
    if a.profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for b in batches:
            stage(b)
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
        res["profile_tottime_top15"] = s.getvalue()
        # where the time goes, by step, on the whole input (one pass each)
        import numpy as np

        texts = full["text"].combine_chunks()
        steps = {}
        t0 = time.perf_counter()
        flat = pc.replace_substring_regex(pc.fill_null(texts, ""), r"[\r\n\t]+", " ")
        steps["replace_substring_regex"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        flat = pc.utf8_slice_codeunits(flat, 0, stage.params.max_chars)
        steps["utf8_slice_codeunits"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pylist = flat.to_pylist()
        steps["to_pylist"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        labels, probs = stage.model.predict(pylist, k=1)
        steps["fasttext_predict"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        [lab[0][9:] if lab else "und" for lab in labels]
        np.fromiter((p[0] if len(p) else 0.0 for p in probs), dtype=np.float64, count=len(probs))
        steps["labels_scores_python"] = time.perf_counter() - t0
        res["step_seconds_whole_input"] = steps
    return res


def _pool(pipeline, schema, batch_size: int):
    from tokenmill.engine.jobs import PoolSpec

    rs = pipeline.stages[0]
    return PoolSpec(stages=[rs], languages=pipeline.languages, schema=schema, batch_size=batch_size,
                    resources=rs.resources)


def child_ray(a) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc
    import ray

    from tokenmill.engine.executors.ray.executor import RayExecutor
    from tokenmill.engine.schema import phase_schema

    pipeline = _languages_and_stage(a.batch_size)
    pipeline.stages[0].resources.concurrency = a.concurrency
    schema = phase_schema(pipeline.stages)
    full, _ = _document_batches(load_table(a.input), a.batch_size, schema)
    texts = full["text"].to_pylist()
    model = load_lid(a.binding)   # for the paired plain loop in this driver
    ex = RayExecutor(pipeline, num_cpus=a.cores)
    tracker = CpuTracker().__enter__()
    t0 = time.perf_counter()
    ex.start()
    init_s = time.perf_counter() - t0
    # the input in the object store before timing: ~20k-row blocks, as a reader would produce
    refs = [ray.put(full.slice(i, 20_000)) for i in range(0, full.num_rows, 20_000)]
    times, cpu, busy, plain_times, plain_cpu, actor_cpu, rows_out, en = [], [], [], [], [], [], 0, None
    try:
        for r in range(a.repeats):
            # paired baseline: the plain loop in this process, right before, under the same load
            t0, c0 = time.perf_counter(), time.process_time()
            plain_loop(model, texts, a.batch_size)
            plain_times.append(time.perf_counter() - t0)
            plain_cpu.append(time.process_time() - c0)
            before = ex.metrics()["stages"].get("langid", {"busy_seconds": 0.0, "rows": 0})
            t0, c0 = time.perf_counter(), tracker.total()
            ds = ray.data.from_arrow_refs(refs)
            ds = ex.map_stages(ds, [_pool(pipeline, schema, a.batch_size)])
            mat = ds.materialize()
            times.append(time.perf_counter() - t0)
            cpu.append(tracker.total() - c0)  # driver, raylet, GCS, actors (incl. ones that exited)
            actor_cpu.append(_remote_cpu_seconds(mat.stats(), "MapBatches(stage_task)"))
            rows_out = mat.count()
            after = ex.metrics()["stages"].get("langid", {"busy_seconds": 0.0, "rows": 0})
            busy.append(after["busy_seconds"] - before["busy_seconds"])
            if r == a.repeats - 1:
                langs = pa.concat_tables(list(mat.iter_batches(batch_format="pyarrow", batch_size=None)))["language"]
                en = int(pc.sum(pc.equal(langs, "en")).as_py())
            del mat, ds
    finally:
        ex.stop()
        tracker.__exit__()
    return {"docs": full.num_rows, "rows_out": rows_out, "seconds": times, "cpu_seconds": cpu, "busy_seconds": busy,
            "paired_plain_seconds": plain_times, "paired_plain_cpu_seconds": plain_cpu,
            "actor_batch_cpu_seconds": actor_cpu,
            "cores": a.concurrency, "ray_init_seconds": init_s, "en_docs": en, "ray_cpus": a.cores}


def _remote_cpu_seconds(stats: str, operator: str):
    """Ray Data's own 'Remote cpu time ... total' of one operator: CPU inside the batch calls."""
    import re

    block = stats.split(operator, 1)[1] if operator in stats else ""
    m = re.search(r"Remote cpu time:.*?([0-9.]+)(us|ms|s) total", block)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(2)]


def child_pipeline(a) -> dict:
    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    out = Path(a.output)
    data = {
        "name": "bench-langid-pipeline",
        "input": {"paths": [a.input], "format": "jsonl"},
        "output": {"path": str(out)},
        "stages": [{"type": "langid", "resources": {"batch_size": a.batch_size}}],
    }
    pipeline = build_pipeline(data)
    with CpuTracker() as tracker:
        t0, c0 = time.perf_counter(), tracker.total()
        res = run_pipeline(pipeline, output=str(out), progress=False, num_cpus=a.cores)
        wall = time.perf_counter() - t0
        cpu = tracker.total() - c0  # every process of the run, including Ray workers that exited
    st = {s["stage"]: s for s in res.report["stages"]}
    return {"docs": res.report["input"]["docs"], "seconds": [wall], "cpu_seconds": [cpu], "cores": a.cores,
            "report_wall_seconds": res.report["wall_seconds"], "phase_seconds": res.report["phase_seconds"],
            "langid_busy_seconds": st["langid"]["busy_seconds"], "langid_docs_per_second": st["langid"]["docs_per_second"],
            "kept_docs": st["langid"]["docs_out"]}


def child_datatrove(a) -> dict:
    from _datatrove_local import LocalLanguageFilter
    from datatrove.data import Document

    table = load_table(a.input)
    docs_src = list(zip(table["id"].to_pylist(), table["text"].to_pylist()))
    lf = LocalLanguageFilter()
    t0 = time.perf_counter()
    _ = lf.model.model  # load (copies the .ftz into the HF assets cache the first time)
    load_s = time.perf_counter() - t0
    times, cpu, kept, en = [], [], 0, 0
    for _ in range(a.repeats):
        docs = [Document(text=t, id=i) for i, t in docs_src]  # fresh docs: filter writes metadata
        t0, c0 = time.perf_counter(), time.process_time()
        out = list(lf.run(iter(docs)))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        kept = len(out)
        en = sum(1 for d in docs if d.metadata.get("language") == "en")
    return {"docs": len(docs_src), "seconds": times, "cpu_seconds": cpu, "cores": 1, "model_load_seconds": load_s,
            "kept_docs": kept, "en_docs": en, "note": "predict(k=-1) per document, as datatrove does"}


CHILDREN = {"plain": child_plain, "stage": child_stage, "ray": child_ray, "pipeline": child_pipeline,
            "datatrove": child_datatrove}


def child_main(a) -> None:
    res = CHILDREN[a.child](a)
    Path(a.result).write_text(json.dumps(res, default=str))


# -- parent ----------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, default=10, help="replications of langid_dev.jsonl (10 -> ~200k docs)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per mode (median reported)")
    p.add_argument("--pipeline-runs", type=int, default=1, help="real pipeline runs (each a fresh Ray + output)")
    p.add_argument("--batch-size", type=int, default=2000, help="rows per batch (langid's default)")
    p.add_argument("--cores", type=int, default=min(2, os.cpu_count() or 1), help="CPUs for Ray")
    p.add_argument("--modes", default="plain,plain-new,stage,ray,pipeline,datatrove")
    p.add_argument("--quick", action="store_true", help="1 copy, 3 repeats, 1 pipeline run")
    p.add_argument("--profile", action="store_true", help="cProfile the stage's __call__ (stage mode)")
    p.add_argument("--json", default=str(HERE.with_suffix(".json")), help="where to write results")
    # child-only
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--concurrency", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--binding", default="fasttext", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child_main(a)
    if a.quick:
        a.copies, a.repeats, a.pipeline_runs = 1, 3, 1
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if "datatrove" in modes:
        try:
            import datatrove  # noqa: F401
        except ImportError:
            print("datatrove not installed (pip install 'datatrove[io,processing]==0.10.1'): skipping it", flush=True)
            modes.remove("datatrove")
    try:
        import fasttext  # noqa: F401  (the C++ peer)
        baseline_binding = "fasttext"
    except ImportError:
        print("fasttext 0.9.3 not installed (pip install fasttext==0.9.3): the baseline is plain-new", flush=True)
        modes = [m for m in modes if m != "plain"]
        baseline_binding = "fasttext_new"

    t_all = time.perf_counter()
    inp = prepare(a.copies)
    print(f"langid bench: {inp['docs']:,} docs ({inp['source_rows']:,} rows of langid_dev.jsonl x {a.copies}), "
          f"batch {a.batch_size}, {a.repeats} repeats, Ray with {a.cores} CPUs", flush=True)
    res_dir = LANGID_DIR / "results"
    res_dir.mkdir(exist_ok=True)
    common = ["--batch-size", str(a.batch_size), "--repeats", str(a.repeats), "--cores", str(a.cores),
              "--binding", baseline_binding]
    runs: dict[str, dict] = {}

    def child(name, mode, extra, inp_path):
        print(f"  running {name} ...", flush=True)
        r = run_child([str(HERE), "--child", mode, "--input", inp_path, "--result", str(res_dir / f"{name}.json"),
                       *common, *extra], res_dir / f"{name}.json")
        runs[name] = r
        secs = r["seconds"]
        print(f"    {name}: median {median(secs):.2f} s -> {r['docs'] / median(secs):,.0f} docs/s "
              f"(runs {', '.join(f'{s:.2f}' for s in secs)})", flush=True)

    if "plain" in modes:
        child("plain", "plain", [], inp["arrow"])
    if "plain-new" in modes:
        child("plain-new", "plain", ["--binding", "fasttext_new"], inp["arrow"])
    if "stage" in modes:
        child("stage", "stage", ["--repeats", str(min(a.repeats, 3))] + (["--profile"] if a.profile else []), inp["arrow"])
    if "ray" in modes:
        for c in sorted({1, a.cores}):
            child(f"ray-c{c}", "ray", ["--concurrency", str(c)], inp["arrow"])
    if "datatrove" in modes:
        child("datatrove", "datatrove", ["--repeats", str(min(a.repeats, 3))], inp["arrow"])
    if "pipeline" in modes:
        import shutil

        pruns = []
        for i in range(a.pipeline_runs):
            out = LANGID_DIR / f"pipeline-out-{i}"
            shutil.rmtree(out, ignore_errors=True)
            print(f"  running pipeline {i + 1}/{a.pipeline_runs} ...", flush=True)
            r = run_child([str(HERE), "--child", "pipeline", "--input", inp["jsonl_dir"], "--output", str(out),
                           "--result", str(res_dir / f"pipeline-{i}.json"), *common], res_dir / f"pipeline-{i}.json")
            shutil.rmtree(out, ignore_errors=True)
            pruns.append(r)
            print(f"    pipeline: {r['seconds'][0]:.2f} s, langid busy {r['langid_busy_seconds']} s", flush=True)
        runs["pipeline"] = {"docs": pruns[0]["docs"], "seconds": [r["seconds"][0] for r in pruns], "cores": a.cores,
                            "cpu_seconds": [r["cpu_seconds"][0] for r in pruns],
                            "langid_busy_seconds": [r["langid_busy_seconds"] for r in pruns],
                            "phase_seconds": [r["phase_seconds"] for r in pruns],
                            "memory": max((r["memory"] for r in pruns), key=lambda m: m["peak_rss_workers_mib"]),
                            "runs": pruns}

    # -- table -----------------------------------------------------------------------------------
    def per_core(r):
        return r["docs"] / median(r["seconds"]) / r["cores"]

    def per_cpu_s(r):
        return r["docs"] / median(r["cpu_seconds"]) if r.get("cpu_seconds") else None

    plain = runs.get("plain") or runs.get("plain-new")
    plain_pc = per_core(plain) if plain else None
    plain_cpu = per_cpu_s(plain) if plain else None
    rows, summary = [], {}
    for name, r in runs.items():
        secs = r["seconds"]
        entry = {"docs": r["docs"], "cores": r["cores"], "median_seconds": median(secs), "seconds": secs,
                 "docs_per_second": r["docs"] / median(secs), "docs_per_second_per_core": per_core(r),
                 "docs_per_cpu_second": per_cpu_s(r), "cpu_seconds": r.get("cpu_seconds"),
                 "ratio_per_core_to_plain": per_core(r) / plain_pc if plain_pc else None,
                 "ratio_per_cpu_second_to_plain": (per_cpu_s(r) / plain_cpu) if plain_cpu and per_cpu_s(r) else None,
                 "memory": r["memory"], "loadavg_before": r.get("loadavg_before"), "loadavg_after": r.get("loadavg_after")}
        busy = r.get("busy_seconds") or r.get("langid_busy_seconds")
        if busy:
            entry["docs_per_busy_actor_second"] = r["docs"] / median(busy)
        if r.get("actor_batch_cpu_seconds") and median(r["actor_batch_cpu_seconds"]):
            entry["docs_per_actor_batch_cpu_second"] = r["docs"] / median(r["actor_batch_cpu_seconds"])
            entry["ratio_steady_state_to_plain"] = entry["docs_per_actor_batch_cpu_second"] / plain_cpu if plain_cpu else None
        if "paired_plain_seconds" in r:
            # per repeat: (Ray docs/s per core) / (plain docs/s on this driver just before)
            pairs = [(r["docs"] / t / r["cores"]) / (r["docs"] / pt) for t, pt in zip(secs, r["paired_plain_seconds"])]
            entry["paired_ratio_per_core"] = median(pairs)
            entry["paired_ratios"] = pairs
            entry["paired_plain_docs_per_second"] = r["docs"] / median(r["paired_plain_seconds"])
        if name == "stage":
            entry["stage_only_docs_per_second"] = r["docs"] / median(r["seconds_stage_only"])
        summary[name] = entry
        f = lambda x, fmt="{:,.0f}": "-" if x is None else fmt.format(x)
        rows.append([name, r["cores"], f"{median(secs):.2f}", f(entry["docs_per_second"]), f(entry["docs_per_second_per_core"]),
                     f(entry["ratio_per_core_to_plain"], "{:.2f}"), f(entry.get("paired_ratio_per_core"), "{:.2f}"),
                     f(entry["docs_per_cpu_second"]), f(entry["ratio_per_cpu_second_to_plain"], "{:.2f}"),
                     f(entry.get("docs_per_busy_actor_second")),
                     f(r["memory"]["peak_rss_workers_mib"]), f(r["memory"]["peak_pss_all_mib"])])
    print()
    table = print_table(["mode", "cores", "median s", "docs/s", "docs/s/core", "vs plain", "paired", "docs/CPU-s",
                         "vs plain", "docs/busy-s", "peak RSS MiB", "peak PSS MiB"], rows,
                        title=f"langid: {inp['docs']:,} docs, medians of {a.repeats} runs (pipeline: {a.pipeline_runs}, "
                              f"datatrove: {min(a.repeats, 3)}); 'paired' = Ray per core / plain loop timed just before "
                              f"in the same driver")
    goal = None
    key = f"ray-c{a.cores}"
    if plain_pc and key in summary:
        e = summary[key]
        goal = {"metric": f"{key} docs/s per core / plain loop docs/s per core", "target": GOAL,
                "ratio_wall_per_core": e["ratio_per_core_to_plain"], "ratio_paired": e.get("paired_ratio_per_core"),
                "ratio_cpu_seconds": e["ratio_per_cpu_second_to_plain"],
                "ratio_steady_state_actor_cpu": e.get("ratio_steady_state_to_plain")}
        goal["met"] = e["ratio_per_core_to_plain"] >= GOAL
        print(f"\ngoal: the Ray langid stage keeps >= {GOAL:.0%} of the plain loop's docs/s per core: "
              f"wall per core {e['ratio_per_core_to_plain']:.0%}, paired {e.get('paired_ratio_per_core', 0):.0%}, "
              f"per CPU-second (all processes) {e['ratio_per_cpu_second_to_plain'] or 0:.0%} -> "
              f"{'MET' if goal['met'] else 'NOT MET'} (judged on wall per core, actor start-up included); "
              f"steady state inside the actors (Ray Data remote CPU of the batches): "
              f"{(e.get('ratio_steady_state_to_plain') or 0):.0%} of plain per CPU-second")
    if "plain" in summary and "plain-new" in summary:
        print(f"fasttext-new (Rust) / fasttext 0.9.3 (C++) predict, one core: "
              f"{summary['plain-new']['docs_per_second_per_core'] / summary['plain']['docs_per_second_per_core']:.2f}x")
    if "datatrove" in summary and plain_pc:
        d = summary["datatrove"]
        line = f"datatrove LanguageFilter: {d['docs_per_second_per_core']:,.0f} docs/s per core ({d['ratio_per_core_to_plain']:.2f}x plain)"
        if key in summary:
            line += f"; tokenmill {key} / datatrove per core: {summary[key]['docs_per_second_per_core'] / d['docs_per_second_per_core']:.2f}x"
        print(line)
    if "stage" in runs and "step_seconds_whole_input" in runs["stage"]:
        print("\nstage __call__ step times over the whole input (s):",
              json.dumps({k: round(v, 3) for k, v in runs["stage"]["step_seconds_whole_input"].items()}))
    write_json(Path(a.json), {"benchmark": "langid", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "machine": machine_info(), "args": {k: v for k, v in vars(a).items() if k not in ("child", "input", "output", "result")},
                              "input": inp, "summary": summary, "goal": goal, "table": table, "runs": runs,
                              "total_seconds": time.perf_counter() - t_all})


if __name__ == "__main__":
    main()
