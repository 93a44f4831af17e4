"""Spherical k-means (faiss) on a deterministic sample, and nearest-centroid assignment (NumPy).

k-means runs once per group (a language, or a giant cluster being split) on the driver, over a
sample of the group's embeddings picked by a hash of each document's run-wide ``node`` id, sorted
by that hash: the same rows in the same order on every engine and re-run, so the centroids are
the same too (faiss on one thread, a fixed seed). Assignment is a matrix product per block.
"""
from __future__ import annotations

import math

import numpy as np

_MIX = np.uint64(0x9E3779B97F4A7C15)


def node_hash(nodes: np.ndarray, salt: int = 0) -> np.ndarray:
    """A 64-bit mix of each node id (uniform, stable everywhere), as uint64."""
    with np.errstate(over="ignore"):
        h = (nodes.astype(np.int64).view(np.uint64) + np.uint64(salt)) * _MIX
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
    return h


def pair_key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One uint64 per (a, b) pair of ids (a group and a cluster in it)."""
    with np.errstate(over="ignore"):
        return a.astype(np.uint64) * np.uint64(0x100000001B3) ^ b.astype(np.uint64)


def mixed_key(*parts) -> np.ndarray:
    """One int64 per row of several int arrays (or ints), each part mixed in turn: keys of
    different shapes (a tag first) do not meet by arithmetic, as ``pair_key``'s can."""
    n = max(len(p) for p in parts if isinstance(p, np.ndarray))
    h = np.zeros(n, np.uint64)
    for i, part in enumerate(parts):
        part = np.broadcast_to(np.asarray(part, np.int64), (n,))
        h = node_hash((h ^ node_hash(part, 11 + i)).view(np.int64), 0)
    return h.view(np.int64)


def sampled(nodes: np.ndarray, rate: float) -> np.ndarray:
    """Whether each node is in a ``rate`` sample (by its hash)."""
    if rate >= 1:
        return np.ones(len(nodes), bool)
    return node_hash(nodes, 1) < np.uint64(min(rate, 1.0) * 2.0**64)


def clusters_for(n: int, clusters, docs_per_cluster: int) -> int:
    """k for a group of ``n`` documents: ``auto`` gives about n / docs_per_cluster (at least 1)."""
    k = max(1, round(n / docs_per_cluster)) if clusters == "auto" else int(clusters)
    return max(1, min(k, n))


def fit(x: np.ndarray, k: int, seed: int, iterations: int = 20) -> np.ndarray:
    """Unit-length centroids of ``x`` (already sorted deterministically); k <= len(x)."""
    import faiss

    k = max(1, min(k, len(x)))
    if k == 1:
        c = x.mean(axis=0, keepdims=True)
    else:
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)   # one thread: sums in one order, the same centroids every time
        try:
            km = faiss.Kmeans(x.shape[1], k, niter=iterations, spherical=True, seed=seed, verbose=False,
                              max_points_per_centroid=max(256, math.ceil(len(x) / k)), min_points_per_centroid=1)
            km.train(np.ascontiguousarray(x, np.float32))
            c = km.centroids
        finally:
            faiss.omp_set_num_threads(threads)
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    return np.divide(c, norms, out=np.zeros_like(c), where=norms > 0).astype(np.float32)


def assign(x: np.ndarray, centroids: np.ndarray, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(nearest centroid, cosine to it) of each row; ties go to the lower centroid. In float64 and
    the cosine rounded to 1e-6, so a row's values do not depend on the rows computed beside it
    (a map block differs between engines; the keep order sorts by this cosine)."""
    labels, cos, _, _ = assign_two(x, centroids, block, second=False)
    return labels, cos


def assign_two(x: np.ndarray, centroids: np.ndarray, block: int = 65536, second: bool = True) -> tuple[np.ndarray, ...]:
    """``assign``'s (nearest, cosine), and with ``second`` the second-nearest centroid and its
    cosine (-1 and -inf where there is none), rounded alike."""
    n = len(x)
    labels, near = np.zeros(n, np.int32), np.full(n, -1, np.int32)
    cos, cos2 = np.zeros(n, np.float32), np.full(n, -np.inf, np.float32)
    c64 = centroids.astype(np.float64)
    for s in range(0, n, block):
        sims = x[s:s + block].astype(np.float64) @ c64.T
        rows = np.arange(len(sims))
        top = sims.argmax(axis=1)
        labels[s:s + block], cos[s:s + block] = top, np.round(sims[rows, top], 6)
        if second and sims.shape[1] > 1:
            sims[rows, top] = -np.inf
            nxt = sims.argmax(axis=1)
            near[s:s + block], cos2[s:s + block] = nxt, np.round(sims[rows, nxt], 6)
    return labels, cos, near, cos2
