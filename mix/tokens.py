"""Tokenize the selected documents and key every repeat for the global order.

``tokenize_tasks`` runs on the executor, one call per block of tasks (a few input files each): it
reads a file's selected rows, gives each its repeats (``budget.doc_repeats``), keys repeat ``j`` of
a document with a seeded 64-bit order key and the shard (key range) it falls in, tokenizes each
document once (``text`` + EOS) and makes one row per repeat: (``_range``, ``_order``, ``source``,
``tokens``: the ids as little-endian bytes of the shard dtype). A task writes its rows sorted by
(shard, key) as one Parquet file with one row group per shard -- the exchange a shard task reads
back (``shards.py``) -- so no process, engine or object store ever holds the tokenized corpus, and
a re-run of a killed mix keeps every finished task. Shards an earlier attempt finished are left
out before tokenizing. The tokenizer loads once per worker process.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenmill.engine.io.storage import Storage
from tokenmill.engine.io.transient import retry
from tokenmill.mix.budget import doc_repeats, read_selected
from tokenmill.mix.repeats import order_keys, range_of
from tokenmill.mix.sources import TEXT

EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "[SEP]")
ROWS_SCHEMA = pa.schema([("_range", pa.int64()), ("_order", pa.uint64()), ("source", pa.int32()),
                         ("tokens", pa.large_binary())])
#: texts per tokenizer call (the encoders hold each id as a Python int for a moment)
ENCODE_BATCH = 256


@dataclass(frozen=True)
class Tokenizer:
    encode: Callable[[list[str]], list[list[int]]]
    eos_id: Optional[int]
    vocab_size: int

    @property
    def dtype(self) -> np.dtype:
        """uint16 when every id fits (Megatron's choice), else int32."""
        return np.dtype("<u2") if self.vocab_size < 65536 else np.dtype("<i4")


@lru_cache(maxsize=4)
def load_tokenizer(kind: str, encoding: str, path: Optional[str], eos_token: Optional[str]) -> Tokenizer:
    """The mix's tokenizer (raises with a reason a person can act on when it cannot load)."""
    if kind == "tiktoken":
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
        return Tokenizer(lambda texts: [enc.encode_ordinary(t) for t in texts], enc.eot_token, enc.n_vocab)
    from tokenizers import Tokenizer as HFTokenizer  # pip install tokenmill[tokenizers]

    from tokenmill.engine.io.storage import Storage

    store = Storage(path)
    with store.open(store.root, "rb") as fh:
        tok = HFTokenizer.from_str(fh.read().decode("utf-8"))
    tok.no_padding()      # a tokenizer.json may pad or cut every text to a fixed length
    tok.no_truncation()
    names = (eos_token,) if eos_token else EOS_CANDIDATES
    eos_id = next((tok.token_to_id(n) for n in names if tok.token_to_id(n) is not None), None)
    if eos_token and eos_id is None:
        raise ValueError(f"eos_token {eos_token!r} is not in the vocabulary")
    encode = lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    return Tokenizer(encode, eos_id, tok.get_vocab_size(with_added_tokens=True))


def tokenizer_of(cfg) -> Tokenizer:
    t = cfg.tokenizer
    return load_tokenizer(t.kind, t.encoding, t.path, t.eos_token)


def token_bytes(texts: list[str], tok: Tokenizer, eos: bool) -> list[bytes]:
    """Each text's ids (+ EOS) as bytes of the shard dtype, tokenized in batches."""
    out, tail = [], [tok.eos_id] if eos else []
    for i in range(0, len(texts), ENCODE_BATCH):
        for ids in tok.encode(texts[i:i + ENCODE_BATCH]):
            out.append(np.asarray(ids + tail, dtype=tok.dtype).tobytes())
    return out


def expand(repeats: np.ndarray, base: np.ndarray, ranges: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document index, order key, shard) of every repeat of every document."""
    doc = np.repeat(np.arange(len(repeats)), repeats)
    starts = np.cumsum(repeats) - repeats
    j = np.arange(len(doc)) - np.repeat(starts, repeats)
    order = order_keys(base[doc], j)
    return doc, order, range_of(order, ranges)


INDEX_SCHEMA = pa.schema([("task", pa.int64()), ("range", pa.int64()), ("group", pa.int32()),
                          ("rows", pa.int64()), ("tokens", pa.int64())])


def file_rows(url: str, s: int, *, sources: list, key_columns: list[str], plans: list[dict], seed: int, eos: bool,
              tok: Tokenizer, ranges: int, done: frozenset) -> pa.Table:
    """One row per repeat of each selected document of one file (shards in ``done`` left out)."""
    table = read_selected(url, sources[s], key_columns[s], [TEXT])
    repeats, base = doc_repeats(table, sources[s], key_columns[s], seed, plans[s])
    doc, order, shard = expand(repeats, base, ranges)
    if done:
        keep = ~np.isin(shard, np.fromiter(done, dtype=np.int64))
        doc, order, shard = doc[keep], order[keep], shard[keep]
    if not len(doc):
        return ROWS_SCHEMA.empty_table()
    needed, where = np.unique(doc, return_inverse=True)
    texts = table[TEXT].take(pa.array(needed)).to_pylist()
    ids = pa.array(token_bytes([t or "" for t in texts], tok, eos), pa.large_binary())
    return pa.table({"_range": pa.array(shard, pa.int64()), "_order": pa.array(order, pa.uint64()),
                     "source": pa.array(np.full(len(doc), s), pa.int32()), "tokens": ids.take(pa.array(where))},
                    schema=ROWS_SCHEMA)


def tokenize_tasks(items: pa.Table, *, tokenizer: tuple, work_url: str, **plan) -> pa.Table:
    """Each task of the block (``task``, ``urls``, ``sources``): its files' rows, sorted by shard and
    order key, written to ``tokens/task-NNNNNN.parquet`` with one row group per shard, then a marker
    with that index; returns the index rows (task, shard, row group, rows, tokens)."""
    tok = load_tokenizer(*tokenizer)
    store, out = Storage(work_url), []
    for task, urls, srcs in zip(items["task"].to_pylist(), items["urls"].to_pylist(), items["sources"].to_pylist()):
        rows = pa.concat_tables([file_rows(u, s, tok=tok, **plan) for u, s in zip(urls, srcs)])
        rows = rows.take(pc.sort_indices(rows, sort_keys=[("_range", "ascending"), ("_order", "ascending")]))
        index = exchange_file(store, task, rows, tok.dtype.itemsize)
        store.write_json_atomic(store.path(f"task-{task:06d}.json"), index.to_pylist())
        out.append(index)
    return pa.concat_tables(out) if out else INDEX_SCHEMA.empty_table()


def exchange_file(store: Storage, task: int, rows: pa.Table, itemsize: int) -> pa.Table:
    """Write one task's sorted rows, a row group per shard; the index of its row groups."""
    shards = rows["_range"].to_numpy()
    starts = np.flatnonzero(np.r_[True, shards[1:] != shards[:-1]]) if len(shards) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(shards)]
    sink = pa.BufferOutputStream()
    index = []
    with pq.ParquetWriter(sink, ROWS_SCHEMA, compression="zstd") as writer:
        for g, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
            piece = rows.slice(a, b - a)
            writer.write_table(piece, row_group_size=max(1, b - a))
            size = pc.sum(pc.binary_length(piece["tokens"])).as_py() or 0
            index.append({"task": task, "range": int(shards[a]), "group": g, "rows": b - a, "tokens": size // itemsize})
    put_whole(store, store.path(f"task-{task:06d}.parquet"), sink.getvalue().to_pybytes())
    return pa.Table.from_pylist(index, schema=INDEX_SCHEMA)


def put_whole(store: Storage, path: str, blob: bytes) -> None:
    """One file written whole: atomically (temporary name, then a move) on local disk; as one
    object put on an object store, where that is atomic already and a move would be a copy."""
    if store.local:
        store.write_bytes_atomic(path, blob)
    else:
        retry(store._write_once, path, blob)
