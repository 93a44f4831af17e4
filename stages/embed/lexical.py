"""The ``lexical`` encoder: hashed TF-IDF token n-grams and a small ReLU network (NumPy/SciPy only).

A folder written by ``tokenmill train-embedder`` (``train_embedder.py``) holds ``embedder.json``
(dim, n-gram orders, buckets, max_tokens, teacher...), ``weights.npz`` (``idf`` and the layers
``w0, b0, w1, b1, ...``) and ``tokenizer.json`` (the teacher's, read with ``tokenizers``).
A text becomes the teacher tokenizer's ids of its first ``max_tokens`` tokens; its n-grams of ids
fall into ``buckets`` columns (unigrams: the id itself; longer ones hashed into the columns past
the tokenizer's ``vocab``, or, in a version-1 folder without ``vocab``, into all of them);
sublinear TF x IDF, L2-normalised, is a sparse row. The layers map it (ReLU between them) to
``dim``, L2-normalised. A version-3 folder may add a word block (``words`` in embedder.json,
``word_idf`` in weights.npz; ``word_block.py``): a fixed sketch of the text's words appended to the
network's output, so the encoder's rows have ``dim + words.dim`` columns. A version-4 folder with
``network: contextual`` (train-embedder's default since version 4) holds the arrays of
``contextual.py`` instead of IDF and layers: its ids keep the tokenizer's special tokens (the
teacher's window) and no n-grams are counted.
No torch and no transformers at inference.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import scipy.sparse as sp

from . import word_block
from .contextual import ARRAYS, Contextual, check_shapes

CONFIG_FILE = "embedder.json"
WEIGHTS_FILE = "weights.npz"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 4
#: a bag folder is written as version 3 (its format did not change), so earlier tokenmills read it
BAG_VERSION = 3
READABLE_VERSIONS = (1, 2, 3, 4)
#: embedder.json's ``network`` of a contextual folder (a bag of n-grams otherwise)
CONTEXTUAL = "contextual"
#: characters kept per token asked for before tokenizing (a text is cut first: tokenizing whole
#: long documents to keep their first tokens is most of the time otherwise)
CHARS_PER_TOKEN = 12
_MIX = np.uint64(0x9E3779B97F4A7C15)
_STEP = np.uint64(1_000_003)


def load_tokenizer(path: str):
    """The tokenizer at ``path`` without its own truncation and padding."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:   # tokenizers raises its own Exception type
        raise ValueError(f"{path}: not a readable tokenizer.json ({e})") from e
    tok.no_truncation()
    tok.no_padding()
    return tok


def unknown_id(tokenizer):
    """The id of the tokenizer's unknown token (None for a byte-level one without it)."""
    name = getattr(tokenizer.model, "unk_token", None)
    return tokenizer.token_to_id(name) if name else None


def token_ids(tokenizer, texts: list[str], max_tokens: int) -> list[np.ndarray]:
    """Ids (no special tokens) of the first ``max_tokens`` tokens of each text."""
    cut = [t[:max_tokens * CHARS_PER_TOKEN] for t in texts]
    encs = tokenizer.encode_batch(cut, add_special_tokens=False)
    return [np.asarray(e.ids[:max_tokens], np.int64) for e in encs]


def context_ids(tokenizer, texts: list[str], max_tokens: int, specials: dict, unk) -> list[np.ndarray]:
    """Ids of a contextual network: the text's first tokens between the tokenizer's special ones
    (``max_tokens`` in all, as the teacher's window); empty for a text with no token, or whose
    every token is ``unk`` (nothing to read: a zero row)."""
    before, after = list(specials.get("before", [])), list(specials.get("after", []))
    out = []
    for x in token_ids(tokenizer, texts, max(1, max_tokens - len(before) - len(after))):
        readable = len(x) and not (unk is not None and bool(np.all(x == unk)))
        out.append(np.concatenate([before, x, after]).astype(np.int64) if readable else x[:0])
    return out


def ngram_counts(ids: list[np.ndarray], orders: tuple[int, ...], buckets: int, vocab: int = 0) -> sp.csr_matrix:
    """(documents, buckets) n-gram counts: unigram ``i`` in column ``i % buckets``, longer n-grams
    hashed into columns ``vocab..buckets`` (all columns when ``vocab`` is 0 or leaves none)."""
    first = vocab if 0 < vocab < buckets else 0
    lens = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    flat = np.concatenate(ids).astype(np.uint64) if lens.sum() else np.zeros(0, np.uint64)
    doc = np.repeat(np.arange(len(ids)), lens)
    left = np.repeat(np.cumsum(lens), lens) - np.arange(len(flat))   # tokens from each position to its doc's end
    rows, cols = [], []
    for n in orders:
        ok = np.flatnonzero(left >= n)
        if n == 1:
            key = flat[ok]
        else:
            key = flat[ok]
            for k in range(1, n):
                key = key * _STEP + flat[ok + k]
            key = (key + np.uint64(n)) * _MIX >> np.uint64(20)
        rows.append(doc[ok])
        span = buckets if n == 1 else buckets - first
        cols.append((key % np.uint64(span)).astype(np.int64) + (0 if n == 1 else first))
    r, c = np.concatenate(rows), np.concatenate(cols)
    m = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(ids), buckets))
    m.sum_duplicates()
    return m


def tfidf(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Sublinear TF x IDF, rows L2-normalised (an empty row stays empty)."""
    x = counts.copy()
    x.data = ((1.0 + np.log(x.data)) * idf[x.indices]).astype(np.float32)
    per_row = np.diff(x.indptr)
    norms = np.sqrt(np.bincount(np.repeat(np.arange(x.shape[0]), per_row), x.data.astype(np.float64) ** 2,
                                minlength=x.shape[0]))
    x.data /= np.repeat(np.maximum(norms, 1e-12), per_row).astype(np.float32)
    return x


def fit_idf(counts: sp.csr_matrix) -> np.ndarray:
    """Smoothed IDF per bucket: ``log((1 + n) / (1 + df)) + 1``."""
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    return (np.log((1.0 + counts.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)


def forward(x: sp.csr_matrix, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The network over sparse rows: ReLU between layers, rows L2-normalised; empty rows give zeros."""
    h = np.asarray(x @ layers[0][0]) + layers[0][1]
    for w, b in layers[1:]:
        h = np.maximum(h, 0.0, out=h) @ w + b
    norms = np.linalg.norm(h, axis=1, keepdims=True)
    out = (h / np.maximum(norms, 1e-12)).astype(np.float32)
    out[np.diff(x.indptr) == 0] = 0.0
    return out


class LexicalEncoder:
    """An encoder folder of ``train-embedder``; ``spec.max_tokens`` overrides the trained token limit."""

    def __init__(self, spec):
        self.spec = spec
        self.dim = 0
        self.batch_size = spec.batch_size or 256

    def load_model(self) -> None:
        from tokenmill.stages.fasttext_io import local_copy

        folder = local_copy(self.spec.path)
        self.config, self.idf, self.layers, self.word_idf = read_folder(folder, self.spec.path)
        self.contextual = Contextual(self.layers) if self.config.get("network") == CONTEXTUAL else None
        self.tokenizer = load_tokenizer(os.path.join(folder, TOKENIZER_FILE))
        self.unk = unknown_id(self.tokenizer)
        self.words = self.config.get("words") if self.word_idf is not None else None
        self.word_proj = word_block.projection(len(self.word_idf), int(self.words["dim"])) if self.words else None
        self.dim = output_dim(self.config)
        self.max_tokens = int(self.spec.max_tokens or self.config["max_tokens"])
        self.orders = tuple(int(n) for n in self.config.get("orders", (1,)))
        self.buckets = int(self.config.get("buckets", 0))
        self.vocab = int(self.config.get("vocab", 0))   # version 1: n-grams hashed over all columns

    def features(self, texts: list[str]) -> sp.csr_matrix:
        """TF-IDF rows; a text whose every token is unknown to the tokenizer gets an empty row (so a
        zero embedding: nothing the encoder can read, never anyone's near-duplicate)."""
        ids = token_ids(self.tokenizer, texts, self.max_tokens)
        if self.unk is not None:
            ids = [x[:0] if len(x) and bool(np.all(x == self.unk)) else x for x in ids]
        return tfidf(ngram_counts(ids, self.orders, self.buckets, self.vocab), self.idf)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for s in range(0, len(texts), self.batch_size):
            out[s:s + self.batch_size] = self._embed(texts[s:s + self.batch_size])
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self.contextual is not None:
            network = self.contextual.embed(context_ids(self.tokenizer, texts, self.max_tokens,
                                                        self.config.get("specials", {}), self.unk))
        else:
            network = forward(self.features(texts), self.layers)
        if not self.words:
            return network
        words = word_block.rows(texts, self.word_idf, self.word_proj, self.max_tokens * CHARS_PER_TOKEN)
        return word_block.combine(network, words, float(self.words["weight"]))


def output_dim(config: dict) -> int:
    """Columns of the encoder's rows: the network's ``dim`` plus the word block's."""
    return int(config["dim"]) + int((config.get("words") or {}).get("dim", 0))


def read_folder(folder: str, shown: str | None = None) -> tuple[dict, np.ndarray | None, list | dict,
                                                               np.ndarray | None]:
    """(embedder.json, idf, layers, word block IDF or None) of a lexical encoder folder (a
    contextual one: no idf, and its arrays by name instead of layers); a clear error naming the
    folder."""
    shown = shown or folder
    try:
        with open(os.path.join(folder, CONFIG_FILE)) as fh:
            config = json.load(fh)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{shown}: no {CONFIG_FILE} (not a folder written by tokenmill train-embedder, "
                                "or its training did not finish)") from e
    except ValueError as e:
        raise ValueError(f"{shown}/{CONFIG_FILE} is not valid JSON: {e}") from e
    if config.get("kind") != "lexical":
        raise ValueError(f"{shown}/{CONFIG_FILE}: kind {config.get('kind')!r}, expected 'lexical'")
    if config.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"{shown}/{CONFIG_FILE}: format version {config.get('version')!r}; this tokenmill reads "
                         f"{', '.join(map(str, READABLE_VERSIONS))} (retrain it with this tokenmill's train-embedder)")
    for name in (WEIGHTS_FILE, TOKENIZER_FILE):
        if not os.path.isfile(os.path.join(folder, name)):
            raise FileNotFoundError(f"{shown}: {name} is missing (an incomplete lexical encoder folder)")
    if config.get("network") == CONTEXTUAL:
        return _read_contextual(folder, shown, config)
    try:
        with np.load(os.path.join(folder, WEIGHTS_FILE)) as z:
            idf = z["idf"].astype(np.float32, copy=False)
            layers = [(z[f"w{i}"].astype(np.float32, copy=False), z[f"b{i}"].astype(np.float32))
                      for i in range(int(config["layers"]))]
            word_idf = z["word_idf"].astype(np.float32, copy=False) if config.get("words") else None
            word_buckets = int(config["words"]["buckets"]) if config.get("words") else None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{shown}/{WEIGHTS_FILE} is unreadable or incomplete, or {CONFIG_FILE}'s words is: {e}") from e
    if len(idf) != config["buckets"] or layers[0][0].shape[0] != config["buckets"] or \
            layers[-1][0].shape[1] != config["dim"]:
        raise ValueError(f"{shown}/{WEIGHTS_FILE}: shapes do not match {CONFIG_FILE} (buckets {config['buckets']}, "
                         f"dim {config['dim']})")
    if word_idf is not None and len(word_idf) != word_buckets:
        raise ValueError(f"{shown}/{WEIGHTS_FILE}: word_idf has {len(word_idf)} buckets, {CONFIG_FILE} says "
                         f"{word_buckets}")
    return config, idf, layers, word_idf


def _read_contextual(folder: str, shown: str, config: dict) -> tuple[dict, None, dict, np.ndarray | None]:
    try:
        with np.load(os.path.join(folder, WEIGHTS_FILE)) as z:
            arrays = {k: z[k].astype(np.float32, copy=False) for k in ARRAYS}
            word_idf = z["word_idf"].astype(np.float32, copy=False) if config.get("words") else None
        problem = check_shapes(arrays, int(config["dim"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError, IndexError, zipfile.BadZipFile) as e:
        raise ValueError(f"{shown}/{WEIGHTS_FILE} is unreadable or incomplete, or {CONFIG_FILE} is: {e}") from e
    if problem:
        raise ValueError(f"{shown}/{WEIGHTS_FILE}: shapes do not match {CONFIG_FILE} (dim {config['dim']}): {problem}")
    if word_idf is not None and len(word_idf) != int(config["words"]["buckets"]):
        raise ValueError(f"{shown}/{WEIGHTS_FILE}: word_idf has {len(word_idf)} buckets, {CONFIG_FILE} says "
                         f"{config['words']['buckets']}")
    return config, None, arrays, word_idf
