"""Benchmark: driver work that does not grow with the data (issue 21).

    python bench/scale.py driver                     # 10k, 100k, 1M input files (~4 min)
    python bench/scale.py driver --sizes 10000,100000
    python bench/scale.py cron --runs 1000           # 1,000 incremental runs on one output (~15 min)
    python bench/scale.py cron --runs 120

``driver``: what the driver does around a run whose input is N files, with only metadata mattering
(files on fsspec's in-memory filesystem, a few bytes each, so the store costs no I/O): list the
input and take each file's size and stamp, plan the chunks, then commit an output of N files
(``manifest.commit``, on local disk: an in-memory store's move lists the whole store, which says
nothing of a real one). Each size runs in a child process; printed: wall per phase, the child's
peak RSS (less what the in-memory store itself took) and the bytes the driver read during the
commit (``rchar``). The peer, in the same child on as many files: the commit as it was before
(``written=None``: the driver reads every output file back for its rows and SHA-256).

``cron``: ``--runs`` incremental runs of read -> exact_dedup -> minhash_dedup on one output (local
executor, ``tokenizer: none``), one small shard landing before each: 4 new documents, an exact
copy of a document of run 1 and a near copy (last 3 words changed) of one of the run before.
Every run must exit normally and reject both copies. Printed for runs 1, 10, 100, 1000 (as
reached): wall, the driver's RSS after the run, the bytes the driver read (``rchar``) and the
index folders the dedup stages read; and run N over run 10. Goal: at most 1.5x. Each run is split
into what grows with history by design (the dedup steps, which join the run's documents with
every earlier run's index: its bytes and seconds) and the rest (the run's own documents, ledger,
manifest, report, listings), and the ratios of both are printed. Between runs the cache of merged
index markers is cleared, as a new cron process would start without it.

Results: tables on stdout and ``bench/scale.json``.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import BENCH_DIR, SHARED_DATA, WORK

MiB = 1 << 20


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rchar() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


# -- driver ----------------------------------------------------------------------------------------
def driver_child(n: int, commit_max: int) -> dict:
    """One size, in this (child) process."""
    from fsspec.implementations.memory import MemoryFileSystem

    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.io.listing import list_input_files
    from tokenmill.engine.plan import input_stamps, plan_run

    class CountingMemory:   # counts the bytes of every file the driver opens for reading
        opened_for_reading = 0
        plain_open = MemoryFileSystem._open

        @staticmethod
        def _open(self, path, mode="rb", **kw):
            held = self.store.get(self._strip_protocol(path))
            if "r" in mode and held is not None and path.endswith(".parquet"):
                CountingMemory.opened_for_reading += len(held.getvalue())
            return CountingMemory.plain_open(self, path, mode, **kw)

    MemoryFileSystem._open = CountingMemory._open
    fs = MemoryFileSystem()
    base_rss = _rss_mib()
    for i in range(n):
        fs.pipe_file(f"/in/d{i // 1000:04d}/f{i:07d}.jsonl", b'{"text":"x"}\n')
    store_rss = _rss_mib() - base_rss
    out = {"files": n, "store_rss_mib": round(store_rss, 1)}
    t0 = time.time()
    files, problems = list_input_files(["memory:///in"], "auto")
    stamps = input_stamps(files)
    out["list_seconds"] = round(time.time() - t0, 2)
    assert len(files) == n and not problems and all(s[0] for s in stamps), (len(files), problems[:3], stamps[:3])
    cfg = {"name": "scale", "input": {"paths": ["memory:///in"]}, "output": {"path": "memory:///out"},
           "tokenizer": {"kind": "none"}, "stages": [{"type": "exact_dedup"}]}
    t0 = time.time()
    plan = plan_run(build_pipeline(cfg), files)
    out["plan_seconds"] = round(time.time() - t0, 2)
    out["chunks"] = len(plan.chunks)
    out["driver_peak_rss_mib"] = round(_peak_mib() - store_rss, 1)
    if n <= commit_max:
        out.update(_commits(n))
    return out


def _commits(n: int) -> dict:
    """The commit of ``n`` staged output files on local disk (real renames: an in-memory store's
    move lists the whole store), and the peer: the commit as it was, reading every file back."""
    import shutil

    from tokenmill.engine.durable import manifest

    out = {}
    for name, written in (("commit", True), ("peer_commit", False)):
        root = WORK / f"scale-commit-{name}"
        shutil.rmtree(root, ignore_errors=True)
        described = _stage_output(root / "_work" / "a" / "final", n)
        before, t0 = _rchar(), time.time()
        manifest.commit(manifest.Storage(str(root)), f"{root}/_work/a/final", f"{root}/_work/a/_commit.json",
                        "fp-a", {}, written=described if written else None)
        out[f"{name}_seconds"] = round(time.time() - t0, 2)
        out[f"{name}_bytes_read"] = _rchar() - before
        shutil.rmtree(root, ignore_errors=True)
    return out


def _stage_output(staged: Path, n: int) -> list[dict]:
    """``n`` small Parquet output files staged as a final step leaves them, with their descriptions."""
    import hashlib
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"id": ["a"], "text": ["x" * 2000]}), sink)
    body = sink.getvalue()
    sha = hashlib.sha256(body).hexdigest()
    folder = staged / "data" / "language=en"
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        rel = f"data/language=en/part-a-{i:07d}-000.parquet"
        (staged / rel).write_bytes(body)
        out.append({"path": rel, "rows": 1, "bytes": len(body), "sha256": sha})
    return out


def run_driver(sizes: list[int], commit_max: int) -> list[dict]:
    rows = []
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "_driver-child", str(n), str(commit_max)], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"driver child for {n} files failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        commit = (f"commit {r['commit_seconds']:7.2f}s, {r['commit_bytes_read']:,} bytes read (as it was: "
                  f"{r['peer_commit_seconds']:.2f}s, {r['peer_commit_bytes_read']:,} bytes)") if "commit_seconds" in r \
            else "commit not measured at this size (--commit-max)"
        print(f"{n:>9,} files: list+stamps {r['list_seconds']:7.2f}s  plan {r['plan_seconds']:6.2f}s "
              f"({r['chunks']:,} chunks)  driver peak RSS {r['driver_peak_rss_mib']:.0f} MiB "
              f"(the in-memory store's {r['store_rss_mib']:.0f} MiB apart)  {commit}", flush=True)
    return rows


# -- cron ------------------------------------------------------------------------------------------
def _vocabulary() -> list[str]:
    words: set[str] = set()
    for line in open(SHARED_DATA / "web_dev.jsonl", encoding="utf-8"):
        words.update(w for w in json.loads(line)["text"].split() if w.isalpha())
    return sorted(words)


def _doc(vocab: list[str], seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(vocab) for _ in range(80))


def _near(text: str) -> str:
    return " ".join(text.split()[:-3] + ["changed", "tail", "words"])


def cron_child(runs: int, folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.executors.local import ops as local_ops
    from tokenmill.engine.run import run_pipeline
    from tokenmill.stages.dedup import index_store

    index_read = [0]   # bytes the dedup steps read of index files (merges included), as read

    class Counted(io.FileIO):
        def read(self, n=-1):
            data = super().read(n)
            index_read[0] += len(data)
            return data

        def readinto(self, buffer):
            n = super().readinto(buffer)
            index_read[0] += n or 0
            return n

    plain_read = local_ops.read_parquet_file

    def counted(url, columns=None):
        if "/_index/" not in url:
            return plain_read(url, columns)
        with Counted(url, "rb") as fh:
            return pq.read_table(fh, columns=columns, partitioning=None)

    local_ops.read_parquet_file = counted
    vocab = _vocabulary()
    landing, out = folder / "in", folder / "out"
    landing.mkdir(parents=True)
    cfg = {"name": "cron", "input": {"paths": [str(landing)]}, "engine": "local", "local": {"num_cpus": 1},
           "tokenizer": {"kind": "none"}, "output": {"path": str(out), "incremental": True},
           "stages": [{"type": "exact_dedup"}, {"type": "minhash_dedup", "threshold": 0.7, "scope": "global"}]}
    first, previous, rows = None, None, []
    for n in range(1, runs + 1):
        docs = [(f"r{n}-{k}", _doc(vocab, n * 10 + k)) for k in range(4)]
        if first is not None:
            docs += [(f"r{n}-exact", first), (f"r{n}-near", _near(previous))]
        (landing / f"night-{n:06d}.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))
        index_store._GEN_MARKERS.clear()   # each cron run is a new process: nothing read by an earlier one
        index_read[0] = 0
        before, t0 = _rchar(), time.time()
        result = run_pipeline(build_pipeline(cfg), progress=False)
        wall, read, index_bytes = time.time() - t0, _rchar() - before, index_read[0]
        reasons = [r for r in result.report["reject_reasons"]]
        rejected = sum(r["docs"] for r in reasons)
        if first is not None and rejected != 2:
            raise SystemExit(f"run {n}: {rejected} documents rejected, expected the 2 copies: {reasons}")
        steps, phases = result.report["global_steps"], result.report["phase_seconds"]
        dedup = sum(v for k, v in phases.items() if k.endswith(("exact_dedup", "minhash_dedup")))
        # the dedup steps read every earlier run's index (it grows with history by design); the
        # rest is what the run pays for its own documents and for the ledger, manifest and report
        rows.append({"run": n, "wall_seconds": round(wall, 3), "driver_rss_mib": round(_rss_mib(), 1),
                     "driver_bytes_read": read, "index_bytes": index_bytes, "bytes_read_less_index": read - index_bytes,
                     "dedup_steps_seconds": round(dedup, 3), "wall_less_dedup_steps": round(wall - dedup, 3),
                     "index_folders": steps["minhash_dedup"].get("index_folders", 0), "rejected": rejected})
        first = first or docs[0][1]
        previous = docs[1][1]
        if n in (1, 10, 100, 1000) or n == runs:
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def run_cron(runs: int) -> dict:
    import shutil

    folder = WORK / "scale-cron"
    shutil.rmtree(folder, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "_cron-child", str(runs), str(folder)],
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit("cron child failed")
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    marks = [r for r in rows if r["run"] in (1, 10, 100, 1000) or r["run"] == runs]
    print(f"{'run':>6} {'wall s':>8} {'dedup s':>8} {'driver RSS MiB':>15} {'bytes read':>12} {'index bytes':>12} "
          f"{'index folders':>14}")
    for r in marks:
        print(f"{r['run']:>6} {r['wall_seconds']:>8.2f} {r['dedup_steps_seconds']:>8.2f} {r['driver_rss_mib']:>15.1f} "
              f"{r['driver_bytes_read']:>12,} {r['index_bytes']:>12,} {r['index_folders']:>14}")
    # a single run's wall is noisy (+-25% on this machine): medians of the 9 runs around each mark
    def around(k: int, key: str) -> float:
        window = sorted(r[key] for r in rows if abs(r["run"] - k) <= 4)
        return window[len(window) // 2]

    last = rows[-1]["run"]
    ratios = {key: round(around(last, key) / around(10, key), 2) for key in
              ("wall_seconds", "driver_rss_mib", "driver_bytes_read", "bytes_read_less_index", "wall_less_dedup_steps",
               "index_bytes", "dedup_steps_seconds")}
    print(f"run {last} / run 10 (medians of the 9 runs around each): {ratios}  (goal: each <= 1.5)")
    return {"runs": rows, "ratios_last_over_10": ratios}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_driver-child":
        print(json.dumps(driver_child(int(sys.argv[2]), int(sys.argv[3]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_cron-child":
        print(json.dumps(cron_child(int(sys.argv[2]), Path(sys.argv[3]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["driver", "cron"])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--commit-max", type=int, default=100_000, help="largest output committed (local files)")
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--json", default=str(BENCH_DIR / "scale.json"))
    args = ap.parse_args()
    results = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else {}
    if args.what == "driver":
        results["driver"] = run_driver([int(s) for s in args.sizes.split(",")], args.commit_max)
    else:
        results["cron"] = run_cron(args.runs)
    Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
