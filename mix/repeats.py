"""How many times each document goes into the mix: upsampling from a column, then the budget.

Upsampling maps a column to a whole number of repeats per document:

- ``by: dup_cluster_size``: FineWeb-2's *rehydration*, with the published curve (``fineweb2``,
  ``FINEWEB2_CURVE``) or ``[[min_size, repeats], ...]``; a null size counts as 1 (no duplicates).
- ``by: quality_score``: ``[[min_score, repeats], ...]`` (Nemotron-CC / Dolma-style quality buckets).

A value below the first bound, or a null quality score, gets 0 repeats (the document is not used).

The budget then scales a source's upsampled tokens ``A`` to its target ``T``: ``e = T / A`` whole
epochs ``k = floor(e)`` for every document, and the remainder ``e - k`` as a deterministic subset:
the documents whose selection bucket (a seeded hash of the source and row key, ``BUCKETS``
buckets) is below a threshold chosen so the subset's tokens are ``(e - k) * A``. A document's
repeats are ``u * (k + [bucket < threshold])``; with no target, ``k = 1`` and no remainder.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: selection buckets per source: the remainder of a budget is met to 1/BUCKETS of its tokens
BUCKETS = 4096
BUCKET_SHIFT = np.uint64(64 - 12)

#: FineWeb-2's rehydration weights (minhash cluster size -> repeats): 1 -> 1, 2 -> 2, 3-4 -> 3, 5-99 -> 5,
#: 100-999 -> 8, 1000+ -> 1 (github.com/huggingface/fineweb-2, README, "Deduplication")
FINEWEB2_CURVE: list[tuple[float, float]] = [(1, 1), (2, 2), (3, 3), (5, 5), (100, 8), (1000, 1)]


def curve_of(upsample) -> list[tuple[float, float]]:
    table = upsample.curve if upsample.by == "dup_cluster_size" else upsample.buckets
    return FINEWEB2_CURVE if table == "fineweb2" else [tuple(x) for x in table]


def upsample_factors(table: pa.Table, upsample) -> np.ndarray:
    """Repeats per row from the upsampling column (1 for every row without ``upsample``)."""
    if upsample is None:
        return np.ones(table.num_rows, dtype=np.int64)
    column = table[upsample.by]
    fill = 1 if upsample.by == "dup_cluster_size" else -np.inf
    values = np.asarray(pc.fill_null(column.cast(pa.float64()), fill).to_numpy(zero_copy_only=False), dtype=np.float64)
    curve = curve_of(upsample)
    lows = np.array([lo for lo, _ in curve], dtype=np.float64)
    reps = np.array([0] + [int(r) for _, r in curve], dtype=np.int64)
    return reps[np.searchsorted(lows, values, side="right")]


def row_hashes(keys: pa.Array, source: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(selection bucket, order base) of each row: one blake2b of the seed, source and row key,
    the same on every engine and every re-run."""
    prefix = f"{seed}\x00{source}\x00".encode()
    digests = b"".join(hashlib.blake2b(prefix + k.encode(), digest_size=16).digest() for k in keys.to_pylist())
    words = np.frombuffer(digests, dtype="<u8").reshape(-1, 2) if digests else np.zeros((0, 2), np.uint64)
    return (words[:, 0] >> BUCKET_SHIFT).astype(np.int64), words[:, 1].copy()


def order_keys(base: np.ndarray, repeat: np.ndarray) -> np.ndarray:
    """The global order key of repeat ``repeat`` of a document: splitmix64 of its base and repeat."""
    with np.errstate(over="ignore"):
        z = base + (repeat.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def range_of(order: np.ndarray, ranges: int) -> np.ndarray:
    """The shard (0 .. ranges-1) an order key falls in: equal slices of the 64-bit key space, so
    shards in name order hold the documents in ascending order key (the mix's global order)."""
    return ((order >> np.uint64(32)) * np.uint64(ranges) >> np.uint64(32)).astype(np.int64)


def solve_source(bucket_tokens: np.ndarray, target: float | None) -> tuple[int, int, float]:
    """(whole epochs, bucket threshold, epoch factor) that bring a source's upsampled tokens
    (``bucket_tokens[b]``: tokens in selection bucket ``b``) to ``target`` (None: once)."""
    available = float(bucket_tokens.sum())
    if target is None or available == 0:
        return 1, 0, 1.0
    factor = target / available
    epochs = int(np.floor(factor))
    rest = target - epochs * available
    cum = np.concatenate([[0.0], np.cumsum(bucket_tokens, dtype=np.float64)])
    threshold = int(np.argmin(np.abs(cum - rest)))   # the bucket boundary nearest the remainder
    return epochs, threshold, factor


def repeats_of(factors: np.ndarray, buckets: np.ndarray, epochs: int, threshold: int) -> np.ndarray:
    return factors * (epochs + (buckets < threshold).astype(np.int64))
