"""Benchmark: connected components with one giant hub, spread (``hub_degree``) or whole.

    python bench/hubs.py                         # a hub of 2,000,000 edges, medians of 3
    python bench/hubs.py --edges 200000 --repeats 1   # a smoke run

The graph: node 0 linked to nodes 1..N (a page copied N times, after its bucket step), plus a
chain over every 7th of them (labels must travel) and 1,000 pairs elsewhere. Each system runs in
its own child process, on 2 CPUs:

- ``spread``: ``components.connected_components`` on Ray Data (``RayDatasetOps``, 8 partitions)
  with the default ``hub_degree`` (10,000): the hub's edges are cut into slices over partitions;
- ``whole``: the same with ``hub_degree`` 10^12: the hub's edges meet in one call per step, as
  before hubs were spread;
- ``scipy``: ``scipy.sparse.csgraph.connected_components`` over the same edges in one process
  (the peer: no engine, everything in one address space).

Printed: wall seconds (median), edges/s, peak RSS of the child's process tree, and the largest
RSS any single Ray worker process reached (where a whole hub lands). Every system's labels are
checked against scipy's. JSON: bench/hubs.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, machine_info, median, print_table, run_child, write_json  # noqa: E402

HERE = Path(__file__).resolve()
SYSTEMS = ("spread", "whole", "scipy")


def graph(edges: int):
    """(u, v) int64 arrays: the hub, the chain over its leaves, and pairs elsewhere."""
    import numpy as np

    leaves = np.arange(1, edges + 1, dtype=np.int64)
    chain = leaves[::7]
    far = np.arange(edges + 10, edges + 10 + 2000, dtype=np.int64)
    u = np.r_[np.zeros(edges, np.int64), chain[:-1], far[0::2]]
    v = np.r_[leaves, chain[1:], far[1::2]]
    return u, v


def oracle(u, v):
    """node -> smallest node of its component (scipy)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inv = np.unique(np.r_[u, v], return_inverse=True)
    n = len(nodes)
    m = coo_matrix((np.ones(len(u)), (inv[:len(u)], inv[len(u):])), shape=(n, n))
    _, comp = connected_components(m, directed=False)
    smallest = np.full(comp.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, comp, nodes)
    return nodes, smallest[comp]


def child(a) -> dict:
    u, v = graph(a.edges)
    res: dict = {"seconds": [], "rounds": []}
    if a.child == "scipy":
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            oracle(u, v)
            res["seconds"].append(time.perf_counter() - t0)
        return res
    import pyarrow as pa
    import ray

    from tokenmill.engine.executors.ray.ops import RayDatasetOps
    from tokenmill.stages.dedup.components import EDGES, connected_components, star_labels

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    nodes, want = oracle(u, v)
    hub_degree = 10_000 if a.child == "spread" else 10**12
    for _ in range(a.repeats):
        ops = RayDatasetOps(8)
        edges = ray.data.from_arrow(pa.table({"u": u, "v": v}, schema=EDGES)).repartition(8).materialize()
        t0 = time.perf_counter()
        stars, rounds = connected_components(ops, edges, hub_degree=hub_degree)
        labels = ops.collect(ops.map(stars, star_labels))
        res["seconds"].append(time.perf_counter() - t0)
        res["rounds"].append(rounds)
        got = dict(zip(labels["node"].to_numpy(), labels["label"].to_numpy()))
        res["correct"] = bool(all(got[n] == w for n, w in zip(nodes.tolist(), want.tolist())))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, default=2_000_000, help="edges of the hub")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--json", default=str(HERE.with_suffix(".json")))
    p.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        Path(a.result).write_text(json.dumps(child(a)))
        return
    out_dir = WORK / "hubs"
    out_dir.mkdir(parents=True, exist_ok=True)
    results, rows = {}, []
    total = a.edges + a.edges // 7 + 1000
    for name in a.systems.split(","):
        print(f"running {name} ...", flush=True)
        r = run_child([str(HERE), "--child", name, "--edges", str(a.edges), "--repeats", str(a.repeats),
                       "--result", str(out_dir / f"{name}.json")], out_dir / f"{name}.json")
        results[name] = r
        workers = {k: v for k, v in r["memory"]["peak_rss_by_process_name_mib"].items()
                   if k.startswith("ray::") and "Actor" not in k and "Metrics" not in k}
        rows.append([name, f"{median(r['seconds']):.2f}", f"{total / median(r['seconds']):,.0f}",
                     f"{r['memory']['peak_rss_all_mib']:,.0f}", f"{max(workers.values()):,.0f}" if workers else "-",
                     str(r.get("correct", "-")), str(r["rounds"][-1] if r.get("rounds") else "-")])
    base = median(results["scipy"]["seconds"]) if "scipy" in results else None
    for row, name in zip(rows, results):
        row.append(f"{median(results[name]['seconds']) / base:.1f}" if base else "-")
    table = print_table(["system", "median s", "edges/s", "peak RSS MiB", "largest Ray worker MiB", "labels = scipy's",
                         "rounds", "time / scipy"], rows,
                        title=f"connected components, a hub of {a.edges:,} edges ({total:,} edges in all), "
                              f"medians of {a.repeats}, 2 CPUs")
    write_json(Path(a.json), {"benchmark": "hubs", "machine": machine_info(), "args": vars(a), "table": table,
                              "results": results})
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
