"""Hubs: keys with too many rows to meet in one call of a shuffle step.

The connected-components steps group directed edges by node, and choosing the kept document groups
a component's members by its label; a boilerplate page copied a million times would put a million
rows in one call. Before such a shuffle the stage finds the heavy keys with a map and a small
collect, and gives their rows a salted partition key (``SALTED_KEY``): a heavy key's rows spread
over ``slices`` partitions (one slice per ``hub_degree`` rows), and what each slice needs to decide
alone (a node's smallest neighbour, a component's size) comes from the driver with the step.

Finding them: each block reports the keys it holds at least ``hub_degree // 16`` times, with their
count and smallest value (pass 1, a few rows); the keys whose reports add up to half of
``hub_degree`` get their exact count and smallest value from every block (pass 2, run only when
there are any). A key that is not found has fewer than ``hub_degree / 2 + blocks * hub_degree / 16``
rows, which bounds what one call holds whatever the input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa

KEY_STATS = pa.schema([("key", pa.int64()), ("count", pa.int64()), ("min", pa.int64())])
SALTED_KEY = "_salted"
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)


def as_numpy(col) -> np.ndarray:
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return np.asarray(col.to_numpy(zero_copy_only=False))


def mix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = x.astype(np.int64).view(np.uint64) * _MIX
        h ^= h >> np.uint64(31)
        return h * _MIX2


@dataclass(frozen=True)
class Hubs:
    """The heavy keys (sorted) with their exact row counts, smallest values and slices."""

    keys: np.ndarray
    counts: np.ndarray
    mins: np.ndarray
    slices: np.ndarray

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of ``keys`` are heavy, the position of each in ``self.keys``; valid where heavy)."""
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[at] == keys, at


@dataclass
class HubLog:
    """What the steps spread, for the report: heavy keys found (summed over steps) and the most
    rows one of them had."""

    spread: int = 0
    largest: int = 0

    def record(self, hubs: Optional[Hubs]) -> Optional[Hubs]:
        if hubs is not None:
            self.spread += len(hubs.keys)
            self.largest = max(self.largest, int(hubs.counts.max()))
        return hubs


def _stats(keys: np.ndarray, values: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct keys, their row counts, their smallest values (0 without values))."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.empty(0, np.int64)
    counts = np.diff(np.r_[starts, len(k)])
    mins = np.minimum.reduceat(values[order], starts) if values is not None and len(k) else np.zeros(len(starts), np.int64)
    return k[starts], counts, mins


def _stats_table(keys, counts, mins) -> pa.Table:
    return pa.table({"key": pa.array(keys, pa.int64()), "count": pa.array(counts, pa.int64()),
                     "min": pa.array(mins, pa.int64())}, schema=KEY_STATS)


def _columns(table: pa.Table, key: str, value: Optional[str]) -> tuple[np.ndarray, Optional[np.ndarray]]:
    return as_numpy(table[key]), (as_numpy(table[value]) if value else None)


def frequent_keys(table: pa.Table, key: str, value: Optional[str], min_count: int) -> pa.Table:
    """Pass 1, per block: the keys held at least ``min_count`` times here, with count and minimum."""
    if table.num_rows < min_count:
        return KEY_STATS.empty_table()
    keys, counts, mins = _stats(*_columns(table, key, value))
    many = counts >= min_count
    return _stats_table(keys[many], counts[many], mins[many])


def key_stats(table: pa.Table, key: str, value: Optional[str], candidates: np.ndarray) -> pa.Table:
    """Pass 2, per block: count and minimum of the ``candidates`` keys (sorted) in this block."""
    keys, values = _columns(table, key, value)
    at = np.minimum(np.searchsorted(candidates, keys), len(candidates) - 1)
    hit = candidates[at] == keys
    return _stats_table(*_stats(keys[hit], values[hit] if values is not None else None))


def _merged(stats: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-block stats summed by key: (keys, counts, minimums)."""
    keys, counts, mins = as_numpy(stats["key"]), as_numpy(stats["count"]), as_numpy(stats["min"])
    order = np.argsort(keys, kind="stable")
    keys, counts, mins = keys[order], counts[order], mins[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(counts, starts), np.minimum.reduceat(mins, starts)


def find_hubs(ops, data, key: str, value: Optional[str], hub_degree: int) -> Optional[Hubs]:
    """The keys of ``data`` with about ``hub_degree / 2`` rows or more (None when there is none),
    with exact counts and smallest ``value``."""
    reported = ops.collect(ops.map(data, frequent_keys, key=key, value=value, min_count=max(1, hub_degree // 16)))
    if reported.num_rows == 0:
        return None
    keys, counts, _ = _merged(reported)
    candidates = keys[counts >= max(1, hub_degree // 2)]
    if len(candidates) == 0:
        return None
    exact = ops.collect(ops.map(data, key_stats, key=key, value=value, candidates=candidates))
    keys, counts, mins = _merged(exact)
    return Hubs(keys, counts, mins, np.maximum(1, -(-counts // hub_degree)))


def salted(table: pa.Table, key: str, by: Optional[str], hubs: Hubs) -> pa.Table:
    """``table`` with ``SALTED_KEY``: the key itself for light keys; for a heavy key, a mix of the
    key and a slice chosen by the ``by`` column (slice 0 without one), so its rows spread."""
    keys = as_numpy(table[key])
    heavy, at = hubs.lookup(keys)
    out = keys.copy()
    if heavy.any():
        spread = mix64(as_numpy(table[by])[heavy]) if by else np.zeros(int(heavy.sum()), np.uint64)
        slice_no = spread % hubs.slices[at[heavy]].astype(np.uint64)
        with np.errstate(over="ignore"):
            out[heavy] = (mix64(keys[heavy]) ^ mix64((slice_no + np.uint64(1)).view(np.int64))).view(np.int64)
    return table.append_column(SALTED_KEY, pa.array(out, pa.int64()))


def partition_by(ops, inputs: list, key: str, by: list[Optional[str]], spread: Optional[Hubs], fn, **fn_kwargs):
    """``ops.partition_map`` by ``key``, with the rows of the heavy keys in ``spread`` spread by the
    ``by`` column of each input."""
    if spread is None:
        return ops.partition_map(inputs, key, fn, **fn_kwargs)
    inputs = [ops.map(data, salted, key=key, by=b, hubs=spread) for data, b in zip(inputs, by)]
    return ops.partition_map(inputs, SALTED_KEY, fn, **fn_kwargs)
