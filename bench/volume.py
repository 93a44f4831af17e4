"""Benchmark: real volume on this machine, and a projection to 1e12 tokens (issue 21).

    python bench/volume.py ray --docs 1000000        # read -> exact_dedup -> minhash_dedup on Ray (~15 min)
    python bench/volume.py cluster --docs 200000     # the full pipeline on a 3-node Ray cluster (~15 min)
    python bench/volume.py project                   # the projection from bench/volume.json

Input: documents built from real web text (shared/data web_dev.jsonl + quality_dev.jsonl cut into
sentences): each document is 6-14 random sentences (so documents are distinct, as web pages
are), then every 10th is an exact copy of an earlier one and every 20th a near copy (one
sentence replaced); JSONL shards of 10,000 documents under bench/_work/volume/, made once.

``ray``: ``exact_dedup`` + ``minhash_dedup`` (each writing its index, as a cron run does),
``tokenizer: none``, embedded Ray on ``--cores`` CPUs, in a child process under the memory
sampler (driver and every Ray process). ``cluster``: langid -> heuristics -> exact_dedup ->
minhash_dedup with cl100k token counts, submitted with ``tokenmill run --address`` to a
``ray.cluster_utils.Cluster`` of a head and two worker nodes (one CPU each, on this 2-core
machine); peak RSS per node (each raylet and the processes under it) and of the driver.
Printed: docs/s per core, peak RSS, shuffle bytes, index bytes per kept document.

``project``: from the measured per-document costs, what 1e12 tokens take: core-hours, shuffle
TB, driver memory, and the dedup index after a year of nightly runs of 1/365 of the corpus each.
Results: bench/volume.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
from _common import BENCH_DIR, REPO, SHARED_DATA, WORK, run_child

ODIR = WORK / "volume"
SHARD = 10_000
MiB = 1 << 20


# -- input ---------------------------------------------------------------------------------------
def _sentences() -> list[str]:
    out = []
    for name in ("web_dev.jsonl", "quality_dev.jsonl"):
        for line in open(SHARED_DATA / name, encoding="utf-8"):
            text = json.loads(line).get("text") or ""
            out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 5]
    return out


def prepare(n: int) -> Path:
    folder, done = ODIR / f"input-{n}", ODIR / f"input-{n}.done"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pool, rng, docs = _sentences(), random.Random(21), []
    for s in range(0, n, SHARD):
        with open(folder / f"part-{s // SHARD:05d}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(s, min(n, s + SHARD)):
                if i % 10 == 9 and docs:
                    text = docs[rng.randrange(len(docs))]
                elif i % 20 == 4 and docs:
                    parts = docs[rng.randrange(len(docs))].split("\n")
                    parts[rng.randrange(len(parts))] = rng.choice(pool)
                    text = "\n".join(parts)
                else:
                    text = "\n".join(rng.choice(pool) for _ in range(rng.randint(6, 14)))
                if len(docs) < 50_000:
                    docs.append(text)
                else:
                    docs[rng.randrange(len(docs))] = text
                fh.write(json.dumps({"id": f"v-{i}", "text": text}, ensure_ascii=False) + "\n")
    done.write_text("ok")
    return folder


def _config(inputs: Path, out: Path, full: bool) -> dict:
    dedup = [{"type": "exact_dedup", "index": {"write": str(out.parent / f"{out.name}-index/exact")}},
             {"type": "minhash_dedup", "scope": "global",
              "index": {"write": str(out.parent / f"{out.name}-index/minhash")}}]
    stages = ([{"type": "langid"}, {"type": "heuristics"}] if full else []) + dedup
    return {"name": f"volume-{'full' if full else 'dedup'}", "input": {"paths": [str(inputs)], "files_per_chunk": 4},
            "output": {"path": str(out)}, "stages": stages,
            **({} if full else {"tokenizer": {"kind": "none"}})}


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _summary(report: dict, out: Path, wall: float, cores: int) -> dict:
    docs = report["input"]["docs"]
    index = out.parent / f"{out.name}-index"
    return {"docs": docs, "kept": report["output"]["docs"], "tokens": report["input"]["tokens"],
            "chars": report["input"]["chars"], "wall_seconds": round(wall, 1), "cores": cores,
            "docs_per_s_per_core": round(docs / wall / cores, 1), "shuffle_bytes": report.get("shuffle_bytes") or 0,
            "phase_seconds": report["phase_seconds"], "index_bytes": _dir_bytes(index) if index.exists() else 0,
            "output_bytes": _dir_bytes(out / "data") + _dir_bytes(out / "rejects")}


# -- ray -----------------------------------------------------------------------------------------
def child_ray(a) -> None:
    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    out = Path(a.output)
    t0 = time.perf_counter()
    res = run_pipeline(build_pipeline(_config(Path(a.input), out, full=False)), engine="ray", num_cpus=a.cores,
                       progress=False)
    Path(a.result).write_text(json.dumps(_summary(res.report, out, time.perf_counter() - t0, a.cores)))


def run_ray(docs: int, cores: int) -> dict:
    inputs = prepare(docs)
    out = ODIR / f"out-ray-{docs}"
    for p in (out, out.parent / f"{out.name}-index"):
        shutil.rmtree(p, ignore_errors=True)
    result = ODIR / "result-ray.json"
    r = run_child([str(Path(__file__)), "_child-ray", "--input", str(inputs), "--output", str(out),
                   "--cores", str(cores), "--result", str(result)], result, env={"RAY_AUTH_MODE": "disabled"},
                  sample_interval=1.0, pss=False)
    by_name = r["memory"]["peak_rss_by_process_name_mib"]
    r["driver_peak_rss_mib"] = max((v for k, v in by_name.items() if "ray::" not in k and "raylet" not in k
                                    and "gcs" not in k), default=None)
    print(f"ray, {r['docs']:,} docs: {r['wall_seconds']:.0f}s, {r['docs_per_s_per_core']:,.0f} docs/s per core, "
          f"peak RSS (driver + Ray workers) {r['memory']['peak_rss_workers_mib']:,.0f} MiB, "
          f"shuffle {r['shuffle_bytes'] / MiB:,.0f} MiB, index {r['index_bytes'] / MiB:,.0f} MiB for {r['kept']:,} kept",
          flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return r


# -- cluster ---------------------------------------------------------------------------------------
def _node_rss() -> dict[int, int]:
    """RSS of each raylet and every process under it (a node of the local cluster), by raylet pid."""
    out = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any("raylet" in c and c.endswith("raylet") for c in (p.info["cmdline"] or [])[:1]):
                out[p.pid] = sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])
        except psutil.Error:
            continue
    return out


def run_cluster(docs: int) -> dict:
    from ray.cluster_utils import Cluster

    inputs = prepare(docs)
    out = ODIR / f"out-cluster-{docs}"
    for p in (out, out.parent / f"{out.name}-index"):
        shutil.rmtree(p, ignore_errors=True)
    cfg = ODIR / "cluster.json"
    cfg.write_text(json.dumps(_config(inputs, out, full=True)))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    peaks: dict[int, int] = {}
    driver_peak = 0
    try:
        cluster.wait_for_nodes()
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "tokenmill.engine.cli", "run", str(cfg), "--address",
                                 cluster.address, "--progress", "off"], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=open(ODIR / "cluster.log", "w"))
        driver = psutil.Process(proc.pid)
        while proc.poll() is None:
            for pid, rss in _node_rss().items():
                peaks[pid] = max(peaks.get(pid, 0), rss)
            try:
                driver_peak = max(driver_peak, driver.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(1.0)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"cluster run failed (exit {proc.returncode}); log {ODIR / 'cluster.log'}")
    finally:
        cluster.shutdown()
    report = json.loads((out / "report.json").read_text())
    r = _summary(report, out, wall, 2)
    r["node_peak_rss_mib"] = sorted(round(v / MiB) for v in peaks.values())
    r["driver_peak_rss_mib"] = round(driver_peak / MiB)
    print(f"cluster (3 nodes, 2 cores), {r['docs']:,} docs through langid -> heuristics -> exact -> minhash: "
          f"{r['wall_seconds']:.0f}s, {r['docs_per_s_per_core']:,.0f} docs/s per core, {r['tokens'] / r['docs']:.0f} "
          f"tokens/doc, node peak RSS {r['node_peak_rss_mib']} MiB, driver {r['driver_peak_rss_mib']} MiB, "
          f"shuffle {r['shuffle_bytes'] / MiB:,.0f} MiB", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return r


# -- projection ------------------------------------------------------------------------------------
def project(results: dict, tokens: float = 1e12) -> dict:
    """1e12 tokens at the measured per-document costs (tokens per document from the cluster run)."""
    full, dedup = results.get("cluster"), results.get("ray")
    if not full or not dedup:
        raise SystemExit("project needs both the ray and the cluster results in bench/volume.json")
    tokens_per_doc = full["tokens"] / full["docs"]
    docs = tokens / tokens_per_doc
    core_s = {name: r["wall_seconds"] * r["cores"] / r["docs"] for name, r in (("dedup", dedup), ("full", full))}
    out = {"tokens": tokens, "tokens_per_doc": round(tokens_per_doc, 1), "docs": round(docs),
           "core_hours_full_pipeline": round(docs * core_s["full"] / 3600),
           "core_hours_dedup_only": round(docs * core_s["dedup"] / 3600),
           "shuffle_tb": round(docs * full["shuffle_bytes"] / full["docs"] / 1e12, 2),
           "index_tb_after_a_year": round(docs * (full["kept"] / full["docs"]) * dedup["index_bytes"] / dedup["kept"] / 1e12, 2),
           "driver_peak_rss_mib_measured": {"ray_1m": dedup.get("driver_peak_rss_mib"),
                                            "cluster": full.get("driver_peak_rss_mib")}}
    print(f"1e12 tokens = {out['docs']:,.0f} documents of {tokens_per_doc:.0f} tokens: "
          f"{out['core_hours_full_pipeline']:,} core-hours (full pipeline; dedup alone {out['core_hours_dedup_only']:,}), "
          f"{out['shuffle_tb']} TB shuffled, dedup index after a year of nightly runs {out['index_tb_after_a_year']} TB")
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child-ray":
        ap = argparse.ArgumentParser()
        for k in ("--input", "--output", "--result"):
            ap.add_argument(k)
        ap.add_argument("--cores", type=int)
        child_ray(ap.parse_args(sys.argv[2:]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["ray", "cluster", "project"])
    ap.add_argument("--docs", type=int)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--json", default=str(BENCH_DIR / "volume.json"))
    a = ap.parse_args()
    path = Path(a.json)
    results = json.loads(path.read_text()) if path.exists() else {}
    if a.what == "ray":
        results["ray"] = run_ray(a.docs or 1_000_000, a.cores)
    elif a.what == "cluster":
        results["cluster"] = run_cluster(a.docs or 200_000)
    results["projection"] = project(results) if "ray" in results and "cluster" in results else None
    path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
