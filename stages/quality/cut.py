"""The score cut that keeps the top fraction of each language's documents over the whole run.

Exact, in two small passes over the (language, score) keys, never one call with a language's
documents: each block counts its scores in ``BINS`` equal bins per language (summed on the
driver); for each language the bin holding the cut is found from the top, and a second pass
brings only that bin's scores, from which the exact k-th largest score is the threshold
(k = round(fraction × documents)). Keeping ``score >= threshold`` reproduces the kept set (ties
at the threshold are all kept).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BINS = 4096
HIST = pa.schema([("group", pa.string()), ("bin", pa.int32()), ("count", pa.int64())])
IN_BIN = pa.schema([("group", pa.string()), ("score", pa.float64())])


def _bins(scores: pa.ChunkedArray) -> np.ndarray:
    s = np.nan_to_num(np.asarray(pc.fill_null(scores, 0.0).to_numpy(), np.float64), nan=0.0)
    return np.clip((s * BINS).astype(np.int64), 0, BINS - 1)


def histogram(keys: pa.Table, group: str, score: str) -> pa.Table:
    """Per block: (group, bin, count) of the scores."""
    if keys.num_rows == 0:
        return HIST.empty_table()
    t = pa.table({"group": keys[group].cast(pa.string()), "bin": pa.array(_bins(keys[score]), pa.int32())})
    counts = t.group_by(["group", "bin"]).aggregate([("bin", "count")])
    return pa.table({"group": counts["group"], "bin": counts["bin"], "count": counts["bin_count"].cast(pa.int64())},
                    schema=HIST)


def cut_bins(hist: pa.Table, keep_top: float) -> dict[str, tuple[int, int, int]]:
    """Per group: (bin holding the cut, documents to keep from that bin, documents in the group)."""
    out = {}
    merged = hist.group_by(["group", "bin"]).aggregate([("count", "sum")])
    for g in pc.unique(merged["group"]).to_pylist():
        rows = merged.filter(pc.equal(merged["group"], g))
        counts = np.zeros(BINS, np.int64)
        counts[rows["bin"].to_numpy()] = rows["count_sum"].to_numpy()
        total = int(counts.sum())
        k = int(round(keep_top * total))
        if k == 0:
            out[g] = (BINS, 0, total)     # keep none: the cut is above every bin
            continue
        from_top = np.cumsum(counts[::-1])
        top_bin = BINS - 1 - int(np.searchsorted(from_top, k))
        above = int(counts[top_bin + 1:].sum())
        out[g] = (top_bin, k - above, total)
    return out


def scores_in_bins(keys: pa.Table, group: str, score: str, cuts: dict) -> pa.Table:
    """Per block: the scores that fall in their group's cut bin."""
    if keys.num_rows == 0:
        return IN_BIN.empty_table()
    groups = keys[group].cast(pa.string())
    wanted = pc.take(pa.array([cuts.get(g, (-1,))[0] for g in pc.unique(groups).to_pylist()], pa.int64()),
                     pc.index_in(groups, pc.unique(groups)))
    hit = np.asarray(wanted.to_numpy(zero_copy_only=False)) == _bins(keys[score])
    return pa.table({"group": groups.filter(pa.array(hit)), "score": keys[score].filter(pa.array(hit)).cast(pa.float64())},
                    schema=IN_BIN)


def thresholds(in_bins: pa.Table, cuts: dict) -> dict[str, float]:
    """Per group: the score of its k-th best document (k from ``cut_bins``); infinite keeps none."""
    out = {}
    for g, (_, need, _) in cuts.items():
        if need <= 0:   # round(fraction x documents) is 0: keep none
            out[g] = float("inf")
            continue
        s = in_bins.filter(pc.equal(in_bins["group"], g))["score"].to_numpy()
        out[g] = float(np.sort(s)[::-1][need - 1])
    return out


def decide(ops, keys, group: str, score: str, keep_top: float) -> tuple[dict, dict]:
    """(threshold per group, documents per group) over the whole dataset ``keys``."""
    hist = ops.collect(ops.map(keys, histogram, group=group, score=score))
    if hist.num_rows == 0:
        return {}, {}
    cuts = cut_bins(hist, keep_top)
    in_bins = ops.collect(ops.map(keys, scores_in_bins, group=group, score=score, cuts=cuts))
    if in_bins.num_rows == 0:
        in_bins = IN_BIN.empty_table()
    return thresholds(in_bins, cuts), {g: c[2] for g, c in cuts.items()}
