"""SemDeDup inside one cluster (Abbas et al., 2023), with bounded memory.

The published algorithm: order the cluster's documents by the keep rule (``hard``: farthest from
the centroid first), take the upper triangle of their cosine-similarity matrix, and for each
document its largest similarity to any document before it (0 for the first): ``max_sim``. A
document is removed where ``max_sim > 1 - eps``. Because every earlier document counts (kept or
not), the removals at any other ``eps`` are read off ``max_sim`` alone, so ``eps`` can be chosen
after one run. Here the matrix is never whole: it is computed in ``block`` x ``block`` tiles, and
each removed document also learns the earlier document it is closest to, from which the kept one
that names it is found.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def max_similarity(x: np.ndarray, block: int = 2048, labels: Optional[np.ndarray] = None,
                   first: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For rows ``x`` (unit length, in keep order): each row's largest cosine to an earlier row
    (floored at 0, as the published upper triangle is) and that row's index (-1: none above 0).
    With ``labels``, only rows of another label count (two clusters compared across their border).
    Rows before ``first`` (earlier runs' documents) are only compared with, never answered (0, -1):
    a cluster of i earlier and m new documents costs about i x m + m^2 / 2, not (i + m)^2 / 2."""
    n = len(x)
    best = np.zeros(n, np.float32)
    arg = np.full(n, -1, np.int64)
    for s in range(first, n, block):
        e = min(n, s + block)
        for r in range(0, e, block):
            sims = x[r:min(r + block, e)] @ x[s:e].T            # rows r.. (earlier) x columns s..e
            rows = np.arange(r, r + len(sims))[:, None]
            sims[rows >= np.arange(s, e)[None, :]] = -np.inf   # only earlier rows count
            if labels is not None:
                sims[labels[r:r + len(sims), None] == labels[None, s:e]] = -np.inf
            top = sims.argmax(axis=0)
            val = sims[top, np.arange(e - s)]
            better = val > best[s:e]
            best[s:e] = np.where(better, val, best[s:e])
            arg[s:e] = np.where(better, r + top, arg[s:e])
    return best, arg


def removed(max_sim: np.ndarray, eps: float) -> np.ndarray:
    return max_sim > 1.0 - eps


def kept_of(arg: np.ndarray, gone: np.ndarray) -> np.ndarray:
    """For each removed row, the kept row its chain of closest earlier rows ends at (itself when
    kept). Closest earlier rows point strictly upward, so one pass in order resolves them."""
    root = np.arange(len(arg))
    for j in np.flatnonzero(gone):
        root[j] = root[arg[j]]
    return root
