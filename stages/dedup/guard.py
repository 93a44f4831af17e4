"""The cluster guard: a document is removed as a near duplicate only if it is close to the
document its cluster keeps, not merely linked to it through a chain of candidate pairs.

Connected components are transitive: A~B and B~C put A and C in one cluster even when A and C
share nothing, and templated text (generated rephrasings, boilerplate-heavy pages) can chain a
whole source into one cluster that keeps a single document. The guard checks every member
against its cluster's kept document with the MinHash estimate of their Jaccard similarity:

- **Sketches.** The stream phase stores, besides the band keys, the low 16 bits of each signature
  value (``minhash_sketch``, ``num_perm`` x 2 bytes a document: 224 bytes at 112 permutations).
  Two documents' values agree with probability J + (1 - J) / 2^16 (b-bit MinHash, Li and König
  2010), so ``(share equal - 2^-16) / (1 - 2^-16)`` estimates J as well as the full signature does.
- **Hops.** A member passes when its estimate against the kept document is >= ``threshold``
  (hop 1), or, for up to ``hops`` - 1 more rounds, against a member that passed in the round
  before (hop 2, ...): two copies of one page that each keep 80% of it can share only ~65% with
  each other, and a copy of the original should still go when another copy is kept. Each member is
  at most ``hops`` verified links from the document that stands for it.
- **Broken chains.** A member that passes no round against the kept document is a broken chain:
  the component was joined through it by links that do not hold. Such members are not removed in
  favour of the kept document; the first of them in keep order stands for a part of its own
  (``SPLIT``: kept) and the others that pass against it (with hops) are removed in its favour,
  up to ``MAX_SPLITS`` parts; any left then are kept (``BROKEN``). So a chain of templated pages
  A~B~C~D... ends as several kept documents, each with its own close copies removed, instead of
  one. Both kinds are reported, with their estimate against the kept document.

Bounds: hop rounds compare a component's failing members with the members that passed in the
round before, at most ``MAX_PAIRS`` pairs a round (the closest ones in keep order first); the
slices of a hub component (decided on several workers) check hop 1 only. A component that an
indexed document of an earlier run wins is checked against that document's sketch, which the
index keeps (``band_index.py``); one written without a sketch (an earlier version, or guard 0) is
not checked: every member goes, as without the guard.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa

SKETCH_COLUMN = "minhash_sketch"
SKETCH_BITS = 16
MAX_PAIRS = 4_000_000          # member pairs compared in one hop round of one component
_COLLIDE = 2.0 ** -SKETCH_BITS

MAX_SPLITS = 8                 # further keepers tried in one component for members that failed
#: ``guard`` of a decision: how a member was checked (hop n >= 1: passed at that hop)
KEEPER, UNCHECKED, BROKEN, SPLIT = 0, -1, -2, -3
OWNER = -1                     # ``keeper`` of a row that stands behind the indexed document


def sketch_column(sigs: np.ndarray, empty: np.ndarray) -> pa.Array:
    """The low 16 bits of every signature value as one binary value per document (null when
    the document has no shingle)."""
    n, k = sigs.shape
    low = np.ascontiguousarray((sigs & np.uint64(0xFFFF)).astype("<u2"))
    offsets = pa.py_buffer(np.arange(0, (n + 1) * 2 * k, 2 * k, dtype=np.int32).tobytes())
    validity = pa.array(~np.asarray(empty, bool)).buffers()[1] if np.any(empty) else None
    return pa.Array.from_buffers(pa.binary(), n, [validity, offsets, pa.py_buffer(low.tobytes())],
                                 null_count=int(np.count_nonzero(empty)))


def sketch_matrix(col, num_perm: Optional[int] = None) -> np.ndarray:
    """(n, num_perm) uint16 from a sketch column (null rows: zeros)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(col)
    if n == 0:
        return np.zeros((0, num_perm or 0), np.uint16)
    col = col.cast(pa.binary())
    offsets = np.frombuffer(col.buffers()[1], np.int32)[col.offset:col.offset + n + 1]
    data = np.frombuffer(col.buffers()[2], np.uint8) if col.buffers()[2] is not None else np.zeros(0, np.uint8)
    widths = np.diff(offsets)
    k2 = int(widths.max()) if len(widths) else 0
    out = np.zeros((n, k2 // 2), np.uint16)
    full = widths == k2
    if full.all():
        out[:] = data[offsets[0]:offsets[-1]].view("<u2").reshape(n, k2 // 2)
    else:
        for i in np.flatnonzero(full):
            out[i] = data[offsets[i]:offsets[i + 1]].view("<u2")
    return out


def estimate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Jaccard estimates from two (n, k) sketch arrays (b-bit corrected, clipped to [0, 1])."""
    if a.shape[-1] == 0:
        return np.zeros(a.shape[:-1], np.float32)
    eq = np.mean(a == b, axis=-1)
    return np.clip((eq - _COLLIDE) / (1 - _COLLIDE), 0.0, 1.0).astype(np.float32)


def guard_members(sketches: np.ndarray, starts: np.ndarray, threshold: float, hops: int,
                  owner: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows grouped by component (component c = rows [starts[c], starts[c+1]), in keep order):
    (guard code per row: KEEPER, SPLIT, hop >= 1 or BROKEN; the row each row stands behind -- its
    keeper, itself when kept, ``OWNER`` for the indexed document; the estimated Jaccard against
    the component's kept document, or for a re-assigned row against its split's keeper; float32).
    ``owner``: (components, num_perm) sketches of an indexed document that wins the component
    (rows of all zeros: none, the first row keeps it)."""
    n = len(sketches)
    bounds = np.r_[starts, n]
    sizes = np.diff(bounds)
    comp_of = np.repeat(np.arange(len(starts)), sizes)
    owned = np.zeros(len(starts), bool) if owner is None else owner.any(axis=1)
    keeper = np.repeat(starts, sizes)
    ref = sketches[keeper]
    if owned.any():
        rows_owned = owned[comp_of]
        ref[rows_owned] = owner[comp_of[rows_owned]]
        keeper[rows_owned] = OWNER
    jac = estimate(sketches, ref)
    code = np.where(jac >= threshold, 1, BROKEN).astype(np.int8)
    code[starts[~owned]] = KEEPER
    failing = np.flatnonzero(code == BROKEN)
    if len(failing):
        comp = np.searchsorted(bounds, failing, side="right") - 1
        for c in np.unique(comp).tolist():
            lo, hi = int(bounds[c]), int(bounds[c + 1])
            first = OWNER if owned[c] else lo
            _assign(sketches, code, keeper, jac, first, lo, hi, threshold, hops, first_hop=2, own_keeper=True)
            for _ in range(MAX_SPLITS):
                left = lo + np.flatnonzero(code[lo:hi] == BROKEN)
                if not len(left):
                    break
                k = int(left[0])                     # the next member in keep order stands for a split
                code[k], keeper[k] = SPLIT, k
                _assign(sketches, code, keeper, jac, k, lo, hi, threshold, hops, first_hop=1, own_keeper=False)
    broken = code == BROKEN
    keeper[broken] = np.flatnonzero(broken)
    return code, keeper, jac


def _assign(sketches, code, keeper, jac, k: int, lo: int, hi: int, threshold: float, hops: int,
            first_hop: int, own_keeper: bool) -> None:
    """Rows of [lo, hi) still BROKEN that pass against keeper row ``k`` (hop 1) or a row that
    passed the round before (hops 2..) are assigned to ``k``, in place; ``own_keeper``: ``k`` is
    the component's kept document (``jac`` already holds estimates against it)."""
    for hop in range(first_hop, hops + 1):
        todo = lo + np.flatnonzero(code[lo:hi] == BROKEN)
        via = np.array([k]) if hop == 1 else lo + np.flatnonzero((code[lo:hi] == hop - 1) & (keeper[lo:hi] == k))
        if not len(todo) or not len(via):
            return
        via = via[:max(1, MAX_PAIRS // len(todo))]
        best = np.zeros(len(todo), np.float32)
        step = max(1, MAX_PAIRS // max(1, len(via)) // 8)
        for s in range(0, len(todo), step):
            block = todo[s:s + step]
            best[s:s + len(block)] = estimate(sketches[block][:, None, :], sketches[via][None, :, :]).max(axis=1)
        passed = todo[best >= threshold]
        code[passed], keeper[passed] = hop, k
        if not own_keeper:
            jac[passed] = estimate(sketches[passed], sketches[k][None, :])
