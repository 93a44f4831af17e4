"""The ``contextual`` network of a lexical encoder (NumPy only): each token's output in context, averaged.

The teacher mean-pools its tokens' outputs *in context*; this network predicts each token's
output from its own vector, its two neighbours' and the document's mean, and averages them:

    out_t = prior[x_t] + relu(A[x_t] + L[x_t-1] + R[x_t+1] + mean_d(prior) @ M + b) @ C
    doc   = normalise((mean_t out_t + c) @ P)

``prior`` (vocabulary x teacher dim) is the teacher's mean output for each token in the training
texts; ``A = prior @ Wa``, ``L = prior @ Wl``, ``R = prior @ Wr`` are vocabulary tables built once at
load, so a token costs three row lookups, a ReLU and a sum; ``M``, ``C`` and ``P`` apply once per
document. Ids are the teacher tokenizer's with its special tokens around the text (the teacher's
window). Trained by ``train_contextual.py``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: the arrays of weights.npz a contextual folder holds
ARRAYS = ("prior", "a_w", "a_b", "left_w", "right_w", "mean_w", "c_w", "c_b", "p_w")
#: tokens a forward step holds at once (its hidden rows: this x hidden x 4 bytes; small enough to
#: stay in cache: 1 << 15 ran 3.5x slower)
CHUNK_TOKENS = 2048


def check_shapes(arrays: dict, dim: int) -> str | None:
    """What is wrong with the shapes of a contextual folder's arrays (None when they agree)."""
    vocab, teacher = arrays["prior"].shape
    hidden = arrays["a_w"].shape[1]
    want = {"a_w": (teacher, hidden), "a_b": (hidden,), "left_w": (teacher, hidden), "right_w": (teacher, hidden),
            "mean_w": (teacher, hidden), "c_w": (hidden, teacher), "c_b": (teacher,), "p_w": (teacher, dim)}
    bad = [f"{k} {arrays[k].shape} (expected {v})" for k, v in want.items() if arrays[k].shape != v]
    return ", ".join(bad) or None


class Contextual:
    """The network of a contextual folder's arrays; ``embed`` maps id arrays to rows."""

    def __init__(self, arrays: dict):
        self.prior = np.ascontiguousarray(arrays["prior"], np.float32)
        self.a = self.prior @ arrays["a_w"] + arrays["a_b"]
        # one zero row past the vocabulary: the neighbour of a document's first and last token
        self.left, self.right = (np.vstack([self.prior @ arrays[k], np.zeros((1, self.a.shape[1]), np.float32)])
                                 for k in ("left_w", "right_w"))
        self.none = len(self.prior)
        self.mean_w, self.c_w, self.c_b, self.p_w = (arrays[k] for k in ("mean_w", "c_w", "c_b", "p_w"))
        self.dim = self.p_w.shape[1]

    def embed(self, ids: list[np.ndarray]) -> np.ndarray:
        """L2-normalised rows; an empty id array gives a zero row. Ids past the vocabulary (a
        tokenizer's added tokens) are left out."""
        ids = [x if not len(x) or x.max() < self.none else x[x < self.none] for x in ids]
        out = np.zeros((len(ids), self.dim), np.float32)
        lens = np.fromiter((len(x) for x in ids), np.int64, len(ids))
        ends = np.cumsum(lens)
        start = 0
        while start < len(ids):   # documents up to CHUNK_TOKENS tokens at a time (at least one)
            stop = max(start + 1, int(np.searchsorted(ends, ends[start] - lens[start] + CHUNK_TOKENS, "right")))
            keep = np.flatnonzero(lens[start:stop]) + start
            if len(keep):
                out[keep] = self._pooled([ids[i] for i in keep], lens[keep])
            start = stop
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _pooled(self, ids: list[np.ndarray], lens: np.ndarray) -> np.ndarray:
        flat = np.concatenate(ids)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        doc = np.repeat(np.arange(len(ids)), lens)
        # each document's mean over its tokens as a sparse product (np.add.reduceat on rows is slow)
        average = sp.csr_matrix(((1.0 / lens[doc]).astype(np.float32), (doc, np.arange(len(flat)))),
                                shape=(len(ids), len(flat)))
        mean = average @ self.prior[flat]
        pre = self.a[flat] + (mean @ self.mean_w)[doc]
        before, after = np.roll(flat, 1), np.roll(flat, -1)
        before[starts] = self.none
        after[starts + lens - 1] = self.none
        pre += self.left[before]
        pre += self.right[after]
        hidden = average @ np.maximum(pre, 0.0, out=pre)
        return ((mean + hidden @ self.c_w + self.c_b) @ self.p_w).astype(np.float32)
