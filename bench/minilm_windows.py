"""Study: how many tokens MiniLM should read of each document for semantic_dedup (its windows).

    python bench/minilm_windows.py                  # 3,000 docs of tests/neardup_corpus.py, seed 0 (~7 min, 2 cores)
    python bench/minilm_windows.py --docs 600       # a quick run

Every document of ``build_corpus(--docs, --seed)`` is read in windows of 256 tokens (254 of its own
plus [CLS]/[SEP], as ``embed_model.Encoder.windows`` cuts them), up to 8 windows; each window's
token outputs are summed once, so the embedding at 256, 512, ... 2,048 tokens is the pooled mean of
its first 1, 2, ... 8 windows (what ``Encoder(max_tokens=N)`` gives). Per token budget:

- pairs: the share of copy/original pairs with word 5-gram Jaccard >= 0.8 whose cosine is above
  1 - eps (the pair itself, before any clustering), for eps 0.1 / 0.15 / 0.2;
- real pages: the share of the corpus' real web pages (its non-spliced originals) whose nearest
  other real page is above 1 - eps (what eps may remove among pages without a copy);
- misses at eps 0.2 by mutation.

Prints a table; no files written. The stage's own figures come from bench/semantic.py.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "tests"))

WINDOW, MAX_WINDOWS, EPS = 256, 8, (0.1, 0.15, 0.2)


def window_sums(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum of token outputs, tokens, owning document) of every window, in document order."""
    from tokenmill.stages.quality.embed_model import Encoder

    enc = Encoder(max_tokens=WINDOW * MAX_WINDOWS)
    enc.load_model()
    rows, starts = enc.windows(enc.tokens(texts))
    owner = np.repeat(np.arange(len(texts)), np.diff(np.append(starts, len(rows))))
    sums, counts = enc.pooled_sums(rows, 64, True)
    return sums, counts, owner


def embeddings(sums, counts, owner, n: int, windows: int) -> np.ndarray:
    first = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
    rank = np.arange(len(owner)) - np.repeat(first, np.diff(np.append(first, len(owner))))
    keep = rank < windows
    s = np.zeros((n, sums.shape[1]))
    np.add.at(s, owner[keep], sums[keep])
    return s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)


def main() -> None:
    import torch
    from neardup_corpus import build_corpus

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(2)
    rows = build_corpus(a.docs, seed=a.seed)
    t0 = time.perf_counter()
    sums, counts, owner = window_sums([r["text"] for r in rows])
    print(f"{len(rows)} documents, {len(owner)} windows embedded in {time.perf_counter() - t0:.0f} s")
    at = {r["id"]: i for i, r in enumerate(rows)}
    pairs = [(i, at[r["group"]], r["mutation"].split(":")[0]) for i, r in enumerate(rows)
             if r["mutation"] not in ("original", "natural") and r["jaccard"] >= 0.8 and r["group"] in at]
    copy, orig = (np.array(x) for x in zip(*[(c, o) for c, o, _ in pairs]))
    real = np.array([i for i, r in enumerate(rows) if r["mutation"] == "original"
                     and not str(r.get("origin", "")).startswith("splice")])
    print(f"{len(pairs)} copy/original pairs with Jaccard >= 0.8; {len(real)} real pages")
    print("tokens  " + "  ".join(f"pairs@{e:<4}" for e in EPS) + "  " + "  ".join(f"real@{e:<4}" for e in EPS) + "  misses@0.2")
    for windows in (1, 2, 3, 4, 8):
        e = embeddings(sums, counts, owner, len(rows), windows)
        cos = np.sum(e[copy] * e[orig], axis=1)
        sim = e[real] @ e[real].T
        np.fill_diagonal(sim, -1)
        nearest = sim.max(axis=1)
        misses = collections.Counter(k for (_, _, k), c in zip(pairs, cos) if c <= 0.8)
        print(f"{windows * WINDOW:6d}  " + "  ".join(f"{np.mean(cos > 1 - x):9.3f}" for x in EPS) + "  "
              + "  ".join(f"{np.mean(nearest > 1 - x):8.3f}" for x in EPS) + f"  {dict(misses.most_common(4))}")


if __name__ == "__main__":
    main()
