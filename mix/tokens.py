"""Tokenize the selected documents and key every repeat for the global order.

``mix_rows`` runs on the executor over blocks of files: it reads a file's selected rows, gives each
its repeats (``budget.doc_repeats``), keys repeat ``j`` of a document with a seeded 64-bit order
key and the shard (key range) it falls in, tokenizes each document once (``text`` + EOS) and emits
one row per repeat: (``_range``, ``_order``, ``source``, ``tokens``: the ids as little-endian bytes
of the shard dtype). Shards a killed earlier attempt finished are skipped before tokenizing.
The tokenizer loads once per worker process.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import pyarrow as pa

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


def mix_rows(items: pa.Table, *, sources: list, key_columns: list[str], plans: list[dict], seed: int, eos: bool,
             tokenizer: tuple, ranges: int, done: frozenset) -> pa.Table:
    """One row per repeat of each selected document of the block's files (see the module)."""
    tok = load_tokenizer(*tokenizer)
    out = []
    for url, s in zip(items["url"].to_pylist(), items["source"].to_pylist()):
        table = read_selected(url, sources[s], key_columns[s], [TEXT])
        repeats, base = doc_repeats(table, sources[s], key_columns[s], seed, plans[s])
        doc, order, shard = expand(repeats, base, ranges)
        if done:
            keep = ~np.isin(shard, np.fromiter(done, dtype=np.int64))
            doc, order, shard = doc[keep], order[keep], shard[keep]
        if not len(doc):
            continue
        needed, where = np.unique(doc, return_inverse=True)
        texts = table[TEXT].take(pa.array(needed)).to_pylist()
        ids = pa.array(token_bytes([t or "" for t in texts], tok, eos), pa.large_binary())
        out.append(pa.table({"_range": pa.array(shard, pa.int64()), "_order": pa.array(order, pa.uint64()),
                             "source": pa.array(np.full(len(doc), s), pa.int32()),
                             "tokens": ids.take(pa.array(where))}, schema=ROWS_SCHEMA))
    return pa.concat_tables(out) if out else ROWS_SCHEMA.empty_table()
