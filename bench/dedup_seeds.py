"""Benchmark (recall, not speed): recall at true Jaccard >= 0.8 of tokenmill's ``fast`` MinHash
family against its ``datasketch`` mode (bit-identical to datasketch.MinHash) on the same normalised
shingles, over several seeds, with 112 permutations in 14 bands of 8 rows and an in-process
union-find over the band buckets. Tells whether a recall difference between systems is the hash
family or chance.

    python bench/dedup.py --docs 20000 --repeats 1 --systems tokenmill-sig   # builds the corpus once
    python bench/dedup_seeds.py fast,datasketch 4
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import neardup_corpus as nc  # noqa: E402

from tokenmill.stages.dedup.signatures import MinHasher, band_keys  # noqa: E402

FOLDER = Path(__file__).resolve().parent / "_work" / "dedup" / "corpus-20000-s0-u0.3"


def roots(keys: np.ndarray) -> np.ndarray:
    """Union-find over the documents sharing a band key; each document's root (smallest index)."""
    n = len(keys)
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for b in range(keys.shape[1]):
        col = keys[:, b]
        order = np.argsort(col, kind="stable")
        c = col[order]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], n]):
            if e - s < 2:
                continue
            r0 = find(order[s])
            for j in order[s + 1:e]:
                rj = find(j)
                if rj != r0:
                    lo, hi = min(r0, rj), max(r0, rj)
                    parent[hi] = lo
                    r0 = lo
    return np.array([find(i) for i in range(n)])


def main() -> None:
    kinds, seeds = sys.argv[1].split(","), int(sys.argv[2])
    docs = ipc.open_file(str(FOLDER / "docs.arrow")).read_all()
    rows = ipc.open_file(str(FOLDER / "truth.arrow")).read_all().to_pylist()
    ids = docs["id"].to_pylist()
    for kind in kinds:
        recalls = []
        for seed in range(1, seeds + 1):
            t0 = time.time()
            sigs, empty = MinHasher(112, seed=seed, hash=kind).signatures(docs["text"])
            root = roots(band_keys(sigs.astype(np.uint64), empty, 14, 8, row_ids=docs["id"]))
            first: dict[int, int] = {}
            for i, r in enumerate(root.tolist()):
                first.setdefault(r, i)
            removed = {ids[i]: ids[first[r]] for i, r in enumerate(root.tolist()) if first[r] != i}
            recalls.append(nc.evaluate(rows, removed)["recall_at_0.8"])
            print(f"{kind} seed {seed}: recall at J >= 0.8 {recalls[-1]:.4f} ({time.time() - t0:.0f} s)", flush=True)
        print(f"{kind}: mean {np.mean(recalls):.4f}, sd {np.std(recalls):.4f}", flush=True)


if __name__ == "__main__":
    main()
