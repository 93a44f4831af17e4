"""Which kept document names each removed one, inside one cluster partition, once the boundary
pass (``boundary.py``) may have found a document's closest earlier neighbour in another cluster.

``merge`` takes the boundary pass's answer where it beats the cluster's own (a larger cosine);
``chains`` follows each removed row's closest earlier row inside the cluster to the row its name
comes from: a kept row (closed), a row of an earlier run across the border (closed: never
removed) or a new row across the border, whose own fate is decided in its own cluster (open:
``boundary.resolve`` names the kept document at the end of the chain).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import semdedup

#: the boundary pass's answer per row and partition: its largest cosine to an earlier row across the
#: border, that row, and which of the row's partitions (``_level``: a giant's row is in two)
ACROSS = pa.schema([("node", pa.int64()), ("_ckey", pa.int64()), ("_best", pa.float32()), ("_to_node", pa.int64()),
                    ("_to_id", pa.string()), ("_to_indexed", pa.bool_()), ("_level", pa.int8())])


@dataclass
class Far:
    """Per row of a partition: whether its ``max_sim`` came from across a border (``won``), and the
    node, id and earlier-run flag of the row across the border it came from."""
    won: np.ndarray
    node: np.ndarray
    ids: np.ndarray
    indexed: np.ndarray

    @classmethod
    def none(cls, n: int) -> Far:
        return cls(np.zeros(n, bool), np.zeros(n, np.int64), np.full(n, None, object), np.zeros(n, bool))


def merge(rows: pa.Table, best: np.ndarray, across: Optional[pa.Table]) -> Far:
    """Raise ``best`` (in place) where the boundary pass found a larger cosine; say where."""
    far = Far.none(rows.num_rows)
    if across is None or across.num_rows == 0:
        return far
    across = best_per_row(across)
    nodes = rows["node"].to_numpy()
    order = np.argsort(nodes, kind="stable")
    wanted = across["node"].to_numpy()
    pos = order[np.clip(np.searchsorted(nodes, wanted, sorter=order), 0, len(order) - 1)]
    if (nodes[pos] != wanted).any():
        raise ValueError("semantic_dedup: the boundary pass names a document its cluster does not hold")
    b2 = across["_best"].to_numpy(zero_copy_only=False)
    win = b2 > best[pos]
    p = pos[win]
    best[p] = b2[win]
    far.won[p] = True
    far.node[p] = across["_to_node"].to_numpy()[win]
    far.ids[p] = np.asarray(across["_to_id"].to_pylist(), object)[win]
    far.indexed[p] = across["_to_indexed"].to_numpy(zero_copy_only=False)[win]
    return far


def best_per_row(across: pa.Table) -> pa.Table:
    """One answer per row: the largest cosine; on a tie, the row's first partition's (as the
    partitions are searched in order and only a larger cosine replaces an answer)."""
    across = across.take(pc.sort_indices(across, [("node", "ascending"), ("_best", "descending"),
                                                  ("_level", "ascending")]))
    nodes = across["node"].to_numpy()
    return across.filter(pa.array(np.r_[True, nodes[1:] != nodes[:-1]]))


def chains(rows: pa.Table, arg: np.ndarray, gone: np.ndarray, far: Far) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """For every row: the id its removal names, the node that id belongs to, and whether the name is
    open (a new document across a border, itself perhaps removed). Rows removed inside the cluster
    follow their closest earlier row (``arg``, always upward) to a kept row or to one removed across."""
    ids = np.asarray(pc.cast(rows["id"], pa.string()).to_pylist(), object)
    nodes = rows["node"].to_numpy()
    won = far.won & gone   # a kept row names itself, however close it came across a border
    root = semdedup.kept_of(arg, gone & ~won)
    name = np.where(won, far.ids, ids)
    to = np.where(won, far.node, nodes)
    opened = won & ~far.indexed
    return pa.array(name[root], pa.string()), to[root], opened[root] & gone
