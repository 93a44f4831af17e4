"""The lexical encoder's word block: a fixed (untrained) sketch of a text's words appended to the
network's output, so the cosine of two embeddings is ``(1 - weight) x`` the network's cosine
``+ weight x`` (about) the cosine of their word TF-IDF vectors.

Why: the network is distilled from a teacher whose tokenizer may spell a script letter by letter
(all-MiniLM-L6-v2's English WordPiece does this to Cyrillic and Greek); its unigram features then
see only letter counts, and every page of that script looks alike to it (cosine 0.96-0.99 where
the teacher gives 0.3-0.6). Words tell such pages apart and never change between a page and its
copy, so the block lowers the similarity of unrelated pages and leaves copies alone (measured in
bench/README.md, "the word block").

Words: ``stages/dedup/signatures.py``'s units of the normalised text (NFKC, lower case, numbers
folded to 0; every Han/kana character a word, other scripts split at non-word characters), hashed
(64-bit) into ``buckets`` columns; sublinear TF x IDF (the IDF fitted on the training texts), then
a signed feature-hashing projection to ``dim`` columns (column and sign fixed by the bucket),
L2-normalised. NumPy/SciPy only.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

TOKENIZER = "cjk"
_MIX = np.uint64(0x9E3779B97F4A7C15)


def word_counts(texts: list[str], buckets: int) -> sp.csr_matrix:
    """(texts, buckets) counts of each text's hashed words."""
    from tokenmill.stages.dedup.signatures import word_shingle_hashes

    hashes, offsets = word_shingle_hashes(texts, 1, tokenizer=TOKENIZER)
    cols = (hashes % np.uint64(buckets)).astype(np.int64)
    rows = np.repeat(np.arange(len(texts)), np.diff(offsets))
    m = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(texts), buckets))
    m.sum_duplicates()
    return m


def projection(buckets: int, dim: int) -> sp.csr_matrix:
    """(buckets, dim): each bucket adds its value, with a fixed sign, to one fixed column."""
    mixed = (np.arange(buckets, dtype=np.uint64) * _MIX) >> np.uint64(32)
    cols = (mixed % np.uint64(dim)).astype(np.int64)
    signs = np.where((mixed >> np.uint64(20)) & np.uint64(1), 1.0, -1.0).astype(np.float32)
    return sp.csr_matrix((signs, (np.arange(buckets), cols)), shape=(buckets, dim))


def sketch(tfidf_rows: sp.csr_matrix, proj: sp.csr_matrix) -> np.ndarray:
    """The projected rows, L2-normalised (an empty row stays zeros)."""
    y = np.asarray((tfidf_rows @ proj).todense(), np.float32)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return np.divide(y, norms, out=np.zeros_like(y), where=norms > 0)


def rows(texts: list[str], idf: np.ndarray, proj: sp.csr_matrix, max_chars: int) -> np.ndarray:
    """The word block of ``texts`` (each cut to ``max_chars``, as the network's tokens are)."""
    from .lexical import tfidf

    return sketch(tfidf(word_counts([t[:max_chars] for t in texts], len(idf)), idf), proj)


def combine(network: np.ndarray, words: np.ndarray, weight: float) -> np.ndarray:
    """``[sqrt(1 - weight) * network, sqrt(weight) * words]``, rows L2-normalised (zeros stay zeros)."""
    out = np.hstack([np.sqrt(1.0 - weight) * network, np.sqrt(weight) * words]).astype(np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
