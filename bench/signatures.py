"""Benchmark: MinHash signatures, docs/s on one core: tokenmill (fast and datasketch-compatible)
against datasketch and rensa on the same documents and the same shingle sets.

    python bench/signatures.py                          # 20,000 docs, 3 repeats, all modes
    python bench/signatures.py --docs 2000 --repeats 1  # a smoke run (seconds)

Documents: the ``text`` of shared/data/web_dev.jsonl (394 web pages, ~5 KB each), replicated to
``--docs`` documents; every copy after the first has ``--mutation`` of its words replaced
(seeded), so the documents are distinct near-duplicates, as in a real crawl.

Modes, each in its own child process pinned to one CPU (``sched_setaffinity``; OMP/RAYON threads
1), medians of ``--repeats``; peak memory = the child's RSS (``ru_maxrss``) and the sampled
process-tree peak:

- ``tokenmill-fast``       : ``MinHasher(hash="fast").signatures(arrow text column)``: text in,
                             signatures out (lower-casing, tokenising, shingle hashes, permutations).
- ``tokenmill-hashes``     : of which ``word_shingle_hashes`` alone (text -> 64-bit shingle hashes).
- ``tokenmill-datasketch`` : ``MinHasher(hash="datasketch")``: text in, signatures bit-identical
                             to datasketch's out (``shingles()`` + SHA-1 per shingle + NumPy).
- ``shingling``            : ``shingles()`` of every document (Python, the peers' input): timed
                             alone, since the peers below get it ready-made.
- ``datasketch``           : ``MinHash(num_perm, seed)`` + ``update_batch(shingles)`` per document
                             (hashing only; shingles precomputed).
- ``rensa``                : ``RMinHash(num_perm, seed)`` + ``update(shingles)`` per document
                             (hashing only; shingles precomputed, the same bytes).
- ``rensa-flat``           : rensa's compiled bulk kernel ``RMinHash.digest_matrix_from_flat_token_hashes``
                             over tokenmill's flat shingle hashes + offsets (rensa's own 32-bit
                             permutations): what a compiled min kernel would give in place of NumPy's
                             broadcast + ``np.minimum.reduceat`` (context, not a peer).

The table gives docs/s per core and ratios against datasketch and rensa, both hashing-only and
with the shingling time added (text to signatures for everyone). Goal: tokenmill-fast >= 4,000
docs/s per core on these ~5 KB pages (rensa was measured at 1,580, datasketch at 644).
Results: a table on stdout and bench/signatures.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, WORK, machine_info, median, print_table, run_child, write_json  # noqa: E402

HERE = Path(__file__).resolve()
SIG_DIR = WORK / "signatures"
GOAL = 4000.0
MODES = ("tokenmill-fast", "tokenmill-hashes", "tokenmill-datasketch", "shingling", "datasketch", "rensa",
         "rensa-flat")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}


# -- input ---------------------------------------------------------------------------------------
def prepare(docs: int, mutation: float, seed: int = 0) -> dict:
    """Write ``docs`` documents (web_dev pages, mutated copies) once as Arrow IPC."""
    import pyarrow as pa

    SIG_DIR.mkdir(parents=True, exist_ok=True)
    path = SIG_DIR / f"docs-{docs}-m{mutation:g}.arrow"
    with open(SHARED_DATA / "web_dev.jsonl", encoding="utf-8") as fh:
        pages = [json.loads(line)["text"] for line in fh]
    if not path.exists():
        rng = random.Random(seed)
        texts = []
        for i in range(docs):
            page = pages[i % len(pages)]
            if i >= len(pages):
                words = page.split(" ")
                for _ in range(max(1, int(len(words) * mutation))):
                    words[rng.randrange(len(words))] = f"w{rng.randrange(1 << 30):x}"
                page = " ".join(words)
            texts.append(page)
        table = pa.table({"text": pa.array(texts, pa.large_string())})
        tmp = path.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as fh, pa.ipc.new_file(fh, table.schema) as w:
            w.write_table(table)
        tmp.replace(path)
    table = load_table(str(path))
    nbytes = sum(len(t.encode("utf-8")) for t in table["text"].to_pylist()[:len(pages)])
    return {"arrow": str(path), "docs": table.num_rows, "source_pages": len(pages),
            "mean_bytes_per_page": round(nbytes / len(pages))}


def load_table(path: str):
    import pyarrow as pa

    with pa.memory_map(path) as fh:
        return pa.ipc.open_file(fh).read_all()


# -- children: one mode each, one core ------------------------------------------------------------
def _timed(fn, repeats: int) -> tuple[list, list]:
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu


def child_main(a) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})                # one core
    from tokenmill.stages.dedup.signatures import MinHasher, shingles, word_shingle_hashes

    texts = load_table(a.input)["text"].combine_chunks()
    t0 = time.perf_counter()
    res: dict = {"docs": len(texts), "cores": 1, "cpu": cpus[-1]}
    mode, n, k, seed = a.child, a.ngram, a.num_perm, a.seed
    if mode.startswith("tokenmill"):
        if mode == "tokenmill-hashes":
            word_shingle_hashes(texts.slice(0, 10), n)        # builds the code point tables
            fn = lambda: word_shingle_hashes(texts, n)
        else:
            mh = MinHasher(k, seed, "fast" if mode == "tokenmill-fast" else "datasketch", n)
            mh.signatures(texts.slice(0, 10))
            fn = lambda: mh.signatures(texts)
    elif mode == "rensa-flat":
        from rensa import RMinHash

        hashes, offsets = word_shingle_hashes(texts, n)
        fn = lambda: RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, k, seed)
    else:
        pylist = texts.to_pylist()
        if mode == "shingling":
            fn = lambda: [shingles(t, n) for t in pylist]
        else:
            sets = [shingles(t, n) for t in pylist]
            res["shingles_per_doc"] = sum(map(len, sets)) / len(sets)
            if mode == "datasketch":
                from datasketch import MinHash

                def fn():
                    for s in sets:
                        m = MinHash(num_perm=k, seed=seed)
                        m.update_batch(s)
            else:
                from rensa import RMinHash

                def fn():
                    for s in sets:
                        m = RMinHash(k, seed)
                        m.update(s)
                        m.digest()
    res["setup_seconds"] = time.perf_counter() - t0
    res["seconds"], res["cpu_seconds"] = _timed(fn, a.repeats)
    res["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(a.result).write_text(json.dumps(res))


# -- parent ----------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20_000, help="documents (web_dev pages replicated with mutations)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per mode (median reported)")
    p.add_argument("--mutation", type=float, default=0.02, help="fraction of words replaced in each copy")
    p.add_argument("--num-perm", type=int, default=112)
    p.add_argument("--ngram", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--json", default=str(HERE.with_suffix(".json")), help="where to write results")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child_main(a)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    for peer, needs in (("datasketch", ("datasketch", "tokenmill-datasketch")), ("rensa", ("rensa", "rensa-flat"))):
        try:
            __import__(peer)
        except ImportError:
            print(f"{peer} not installed (pip install {peer}): skipping {', '.join(needs)}", flush=True)
            modes = [m for m in modes if m not in needs]

    t_all = time.perf_counter()
    inp = prepare(a.docs, a.mutation)
    print(f"signatures bench: {inp['docs']:,} docs (web_dev.jsonl, {inp['source_pages']} pages of "
          f"~{inp['mean_bytes_per_page']:,} bytes, copies {a.mutation:.0%} mutated), num_perm {a.num_perm}, "
          f"ngram {a.ngram}, {a.repeats} repeats, one core per mode", flush=True)
    res_dir = SIG_DIR / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict] = {}
    for m in modes:
        print(f"  running {m} ...", flush=True)
        result = res_dir / f"{m}.json"
        runs[m] = r = run_child([str(HERE), "--child", m, "--input", inp["arrow"], "--result", str(result),
                                 "--repeats", str(a.repeats), "--num-perm", str(a.num_perm), "--ngram", str(a.ngram),
                                 "--seed", str(a.seed)], result, env=ONE_THREAD)
        print(f"    {m}: median {median(r['seconds']):.2f} s -> {r['docs'] / median(r['seconds']):,.0f} docs/s "
              f"(runs {', '.join(f'{s:.2f}' for s in r['seconds'])})", flush=True)

    # -- table -----------------------------------------------------------------------------------
    rate = {m: r["docs"] / median(r["seconds"]) for m, r in runs.items()}
    shingle_s = median(runs["shingling"]["seconds"]) if "shingling" in runs else None

    def with_shingling(m):
        """Text to signatures: peers get the shingling time added; tokenmill modes include it."""
        if m in ("datasketch", "rensa") and shingle_s is not None:
            return runs[m]["docs"] / (median(runs[m]["seconds"]) + shingle_s)
        return rate[m] if m.startswith("tokenmill") or m == "rensa-flat" else None

    def ratio(x, y):
        return None if x is None or not y else x / y

    f = lambda x, fmt="{:,.0f}": "-" if x is None else fmt.format(x)
    rows, summary = [], {}
    for m, r in runs.items():
        e2e = with_shingling(m)
        entry = {"docs": r["docs"], "median_seconds": median(r["seconds"]), "seconds": r["seconds"],
                 "docs_per_second_per_core": rate[m], "docs_per_cpu_second": r["docs"] / median(r["cpu_seconds"]),
                 "text_to_signatures_docs_per_second": e2e,
                 "vs_datasketch_hashing": ratio(rate[m], rate.get("datasketch")),
                 "vs_rensa_hashing": ratio(rate[m], rate.get("rensa")),
                 "vs_datasketch_text_to_signatures": ratio(e2e, with_shingling("datasketch") if "datasketch" in runs else None),
                 "vs_rensa_text_to_signatures": ratio(e2e, with_shingling("rensa") if "rensa" in runs else None),
                 "ru_maxrss_mib": r["ru_maxrss_mib"], "memory": r["memory"], "setup_seconds": r["setup_seconds"],
                 "loadavg_before": r.get("loadavg_before"), "loadavg_after": r.get("loadavg_after")}
        summary[m] = entry
        rows.append([m, f"{median(r['seconds']):.2f}", f(rate[m]), f(entry["docs_per_cpu_second"]), f(e2e),
                     f(entry["vs_datasketch_hashing"], "{:.2f}"), f(entry["vs_rensa_hashing"], "{:.2f}"),
                     f(entry["vs_datasketch_text_to_signatures"], "{:.2f}"), f(entry["vs_rensa_text_to_signatures"], "{:.2f}"),
                     f(r["ru_maxrss_mib"]), f(r["memory"]["peak_rss_workers_mib"])])
    print()
    table = print_table(["mode", "median s", "docs/s/core", "docs/CPU-s", "text->sig docs/s", "vs ds", "vs rensa",
                         "vs ds (text)", "vs rensa (text)", "maxrss MiB", "peak RSS MiB"], rows,
                        title=f"MinHash signatures: {inp['docs']:,} docs, medians of {a.repeats}, one core each; "
                              f"'vs' = docs/s ratios (hashing only; '(text)' = peers' shingling time added)")
    goal = None
    if "tokenmill-fast" in rate:
        goal = {"metric": "tokenmill-fast docs/s per core", "target": GOAL, "value": rate["tokenmill-fast"],
                "met": rate["tokenmill-fast"] >= GOAL}
        print(f"\ngoal: tokenmill fast signatures >= {GOAL:,.0f} docs/s per core: {rate['tokenmill-fast']:,.0f} -> "
              f"{'MET' if goal['met'] else 'NOT MET'}")
    write_json(Path(a.json), {"benchmark": "signatures", "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "machine": machine_info(), "args": {k: v for k, v in vars(a).items()
                                                                  if k not in ("child", "input", "result")},
                              "input": inp, "summary": summary, "goal": goal, "table": table, "runs": runs,
                              "total_seconds": time.perf_counter() - t_all})


if __name__ == "__main__":
    main()
