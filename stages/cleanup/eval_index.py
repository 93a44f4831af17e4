"""The decontamination index: every eval item's word n-grams, hashed, built once per run.

Eval sets are JSONL (optionally gzipped) or Parquet files; an item's text is its ``text_fields``
joined by newlines (a list value, such as MMLU's ``choices``, joined too), its id the
``id_field`` (default ``id``; the row's position when absent). The text is normalised exactly as
MinHash's shingles are (``dedup/normalize.py``: NFKC, lower case, numbers folded; units are runs
of letters, marks and digits, so punctuation and spacing never matter), after format characters
(soft hyphens, zero-width spaces: ``\\p{Cf}``) are dropped, so ``co\\u00adoperate`` is one word.

Text in a script written without spaces (Chinese, Japanese, Thai, Lao, Khmer, Burmese) has no
words to count: an item holding such characters also contributes its character ``char_ngram``-grams
(of letters, marks and digits, as MinHash's character shingles), which documents holding such
characters are cut into too.

An item of at least ``ngram`` words contributes its distinct ``ngram``-grams; a shorter one (but of
at least ``min_item_words``) contributes one hash of all its words, which a document matches when it
holds those words in a row (``ngram_hashes_by_size`` hashes the document's m-grams alike). The
index is two Parquet files: ``hashes.parquet`` (hash uint64, size int16, item int32; sorted by
size, then hash) and ``items.parquet`` (eval_set, item_id, ngrams: the item's distinct hashes).
"""
from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenmill.engine.io.storage import Storage
from tokenmill.engine.io.transient import retry
from tokenmill.stages.dedup.signatures import ngram_hashes_by_size, word_shingle_hashes

HASHES, ITEMS, DONE = "hashes.parquet", "items.parquet", "_SUCCESS"
#: a script written without spaces between words: its text is cut into character n-grams too
UNSPACED = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]"
#: ``size`` of a character n-gram entry: CHAR + its length in characters
CHAR = 1000
ITEM_BATCH = 2000


def without_format_chars(texts) -> pa.Array:
    """Texts without format characters (soft hyphen, zero-width space/joiner, BOM)."""
    return pc.replace_substring_regex(texts, r"\p{Cf}+", "")


def _joined(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\n".join(_joined(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(_joined(v) for v in value.values())
    return str(value)


def _read_bytes(url: str) -> bytes:
    store = Storage(url)
    with store.open(store.root, "rb") as fh:
        return fh.read()


def _rows(url: str) -> Iterator[dict]:
    """The rows of an eval file (JSONL, .jsonl.gz, Parquet) as dicts; a store that times out is
    asked again (``transient.retry``)."""
    data = retry(_read_bytes, url, what=f"reading eval set {url}")
    if url.endswith(".parquet"):
        yield from pq.read_table(io.BytesIO(data)).to_pylist()
        return
    if url.endswith(".gz"):
        data = gzip.decompress(data)
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{url}: line {n} is not JSON: {e}") from None
            if isinstance(row, dict):
                yield row


def read_items(url: str, text_fields: list[str], id_field: str) -> tuple[list[str], list[str]]:
    """(item ids, item texts) of an eval file; rows without any text are left out."""
    ids, texts = [], []
    for pos, row in enumerate(_rows(url)):
        text = "\n".join(t for t in (_joined(row.get(f)) for f in text_fields) if t)
        if text.strip():
            ids.append(str(row[id_field]) if row.get(id_field) is not None else str(pos))
            texts.append(text)
    return ids, texts


def item_hashes(texts: list[str], ngram: int, min_item_words: int, mode: str = "word"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash, size, item position) of every distinct n-gram of each item (module docstring); in
    ``char`` mode only of the items written in a script without spaces (``UNSPACED``)."""
    out_h, out_k, out_i = [], [], []
    for lo in range(0, len(texts), ITEM_BATCH):
        arr = without_format_chars(pa.array(texts[lo:lo + ITEM_BATCH], pa.large_string()))
        hashes, offsets = word_shingle_hashes(arr, ngram, mode=mode)
        words = _word_counts(arr) if mode == "word" else _char_counts(arr)
        per_item = np.diff(offsets)
        item = np.repeat(np.arange(lo, lo + len(per_item)), per_item)
        size = np.repeat(np.minimum(words, ngram), per_item).astype(np.int16)
        keep = np.repeat(words >= min_item_words, per_item)
        out_h.append(hashes[keep])
        out_k.append(size[keep])
        out_i.append(item[keep])
    if not out_h:
        return np.zeros(0, np.uint64), np.zeros(0, np.int16), np.zeros(0, np.int32)
    h, k, i = np.concatenate(out_h), np.concatenate(out_k), np.concatenate(out_i).astype(np.int32)
    key = np.unique(np.stack([h.view(np.int64), i.astype(np.int64)], axis=1), axis=0, return_index=True)[1]
    return h[key], k[key], i[key]


def _char_counts(arr: pa.Array) -> np.ndarray:
    """Letters, marks and digits per text written in a script without spaces (0 for the others)."""
    unspaced = np.asarray(pc.fill_null(pc.match_substring_regex(arr, UNSPACED), False), dtype=bool)
    _, offsets = word_shingle_hashes(arr, 1, mode="char")
    return np.where(unspaced, np.diff(offsets), 0)


def _word_counts(arr: pa.Array) -> np.ndarray:
    """Words (units) per text: its 1-gram hashes, counted."""
    _, offsets = ngram_hashes_by_size(arr, [1])[1]
    return np.diff(offsets)


def build(eval_sets, ngram: int, min_item_words: int, folder: str, char_ngram: int = 50, min_item_chars: int = 10) -> None:
    """Write the index of ``eval_sets`` (``EvalSet`` models) under ``folder``, committed by a marker."""
    store = Storage(folder)
    if store.exists(store.path(DONE)):
        return
    hs, ks, its, names, ids, counts = [], [], [], [], [], []
    for ev in eval_sets:
        item_ids, texts = read_items(ev.path, ev.text_fields, ev.id_field)
        h, k, i = item_hashes(texts, ngram, min_item_words)
        ch, ck, ci = item_hashes(texts, char_ngram, min_item_chars, mode="char")
        hs += [h, ch]
        ks += [k, ck + CHAR]
        its += [i + len(ids), ci + len(ids)]
        counts.append(np.maximum(np.bincount(i, minlength=len(texts)), np.bincount(ci, minlength=len(texts))))
        names += [ev.name] * len(texts)
        ids += item_ids
    h, k, i = (np.concatenate(x) for x in (hs, ks, its))
    order = np.lexsort((h, k))
    store.makedirs(store.root)
    store.write_parquet_atomic(store.path(HASHES), pa.table({"hash": h[order], "size": k[order], "item": i[order]}))
    store.write_parquet_atomic(store.path(ITEMS), pa.table({"eval_set": pa.array(names, pa.string()), "item_id": pa.array(ids, pa.string()),
                                   "ngrams": pa.array(np.concatenate(counts).astype(np.int32))}))
    store.write_text_atomic(store.path(DONE), "")



class EvalIndex:
    """The index loaded in a worker: per n-gram size, sorted hashes and their items."""

    def __init__(self, folder: str):
        store = Storage(folder)
        with store.open(store.path(HASHES), "rb") as fh:
            hashes = pq.read_table(fh)
        with store.open(store.path(ITEMS), "rb") as fh:
            items = pq.read_table(fh)
        h = hashes["hash"].to_numpy()
        k = hashes["size"].to_numpy()
        it = hashes["item"].to_numpy()
        self.sizes = [int(s) for s in np.unique(k)]
        bounds = np.searchsorted(k, self.sizes + [np.iinfo(np.int16).max], side="left")
        self.by_size = {s: (h[a:b], it[a:b]) for s, a, b in zip(self.sizes, bounds[:-1], bounds[1:])}
        self.eval_set = items["eval_set"].to_numpy(zero_copy_only=False)
        self.item_id = items["item_id"].to_numpy(zero_copy_only=False)
        self.ngrams = items["ngrams"].to_numpy()

    def _doc_hashes(self, arr):
        """(index size, (hashes, offsets over every document)) for each size the index holds:
        word n-grams of every document, character n-grams of those written without spaces."""
        words = [s for s in self.sizes if s < CHAR]
        yield from ngram_hashes_by_size(arr, words).items() if words else ()
        chars = [s for s in self.sizes if s >= CHAR]
        if not chars:
            return
        arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
        unspaced = np.flatnonzero(np.asarray(pc.fill_null(pc.match_substring_regex(arr, UNSPACED), False), dtype=bool))
        if not len(unspaced):
            return
        sub = arr.take(pa.array(unspaced))
        for size in chars:
            h, o = word_shingle_hashes(sub, size - CHAR, mode="char")
            full = np.zeros(len(arr) + 1, dtype=np.int64)   # offsets over every document (others: none)
            per = np.zeros(len(arr), dtype=np.int64)
            per[unspaced] = np.diff(o)
            np.cumsum(per, out=full[1:])
            yield size, (h, full)

    def matches(self, texts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(document, item, distinct matched hashes) for every (document, item) that share any."""
        arr = without_format_chars(texts)
        docs, items, hashes = [], [], []
        for size, (h, o) in self._doc_hashes(arr):
            keys, its = self.by_size[size]
            lo, hi = np.searchsorted(keys, h, "left"), np.searchsorted(keys, h, "right")
            n = hi - lo
            hit = np.flatnonzero(n)
            if not len(hit):
                continue
            reps = n[hit]
            start = np.repeat(lo[hit], reps) + (np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps))
            doc = np.searchsorted(o, hit, side="right") - 1
            docs.append(np.repeat(doc, reps))
            items.append(its[start])
            hashes.append(np.repeat(h[hit], reps))
        if not docs:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        d, i = np.concatenate(docs).astype(np.int64), np.concatenate(items).astype(np.int64)
        triples = np.unique(np.stack([d, i, np.concatenate(hashes).view(np.int64)], axis=1), axis=0)
        pairs, counts = np.unique(triples[:, :2], axis=0, return_counts=True)
        return pairs[:, 0], pairs[:, 1], counts
