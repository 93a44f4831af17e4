"""Write one shard: the rows of one key range, in ascending order key, as Megatron ``.bin``/``.idx``
(or ``format: parquet``: one list of token ids per row).

Runs on the executor, one call per block of shards: a shard's rows are one row group of each
tokenize task's exchange file (``tokens.py``), so one task writes one shard and holds only that shard. A shard over
``max_tokens_per_file`` is cut at document boundaries into ``part-NNNNN-1`` ... The task counts what
it writes (bytes, SHA-256, documents and tokens per source) while writing; those statistics go to
a ``done/part-NNNNN.json`` marker after the files, so a re-run of a killed mix skips finished shards
and the driver builds the manifest without reading a shard.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenmill.engine.io.storage import Storage
from tokenmill.mix.megatron import index_bytes
from tokenmill.mix.tokens import put_whole

DONE_SCHEMA = pa.schema([("range", pa.int64()), ("stats", pa.string())])


def shard_name(shard: int, piece: int) -> str:
    return f"part-{shard:05d}" if piece == 0 else f"part-{shard:05d}-{piece}"


def write_shards(items: pa.Table, *, out_url: str, done_url: str, dtype: str, fmt: str, max_tokens: int) -> pa.Table:
    """Each shard of the block (``range``, ``files``, ``groups``: the exchange files' row groups
    that hold it) read back, written, and marked done; one (range, stats JSON) row each."""
    out, done = [], Storage(done_url)
    for r, files, groups in zip(items["range"].to_pylist(), items["files"].to_pylist(), items["groups"].to_pylist()):
        rows = pa.concat_tables([_row_group(f, g) for f, g in zip(files, groups)])
        stats = write_range(rows, int(r), Storage(out_url), np.dtype(dtype), fmt, max_tokens)
        done.write_json_atomic(done.path(f"{shard_name(int(r), 0)}.json"), stats)
        out.append({"range": int(r), "stats": json.dumps(stats)})
    return pa.Table.from_pylist(out, schema=DONE_SCHEMA)


def _row_group(url: str, group: int) -> pa.Table:
    store = Storage(url)
    with store.open(store.root, "rb") as fh:
        return pq.ParquetFile(fh).read_row_group(group)


def write_range(rows: pa.Table, shard: int, store: Storage, dtype: np.dtype, fmt: str, max_tokens: int) -> dict:
    order = pc.sort_indices(rows, sort_keys=[("_order", "ascending"), ("tokens", "ascending")])
    rows = rows.take(order)
    tokens = rows["tokens"].combine_chunks()
    offsets = np.frombuffer(tokens.buffers()[1], dtype=np.int64)[tokens.offset:tokens.offset + len(tokens) + 1]
    data = tokens.buffers()[2]
    lengths = (np.diff(offsets) // dtype.itemsize).astype(np.int64)
    sources = rows["source"].to_numpy()
    files, per_source = [], {}
    for piece, (a, b) in enumerate(_cuts(lengths, max_tokens)):
        name = shard_name(shard, piece)
        blob = data[int(offsets[a]):int(offsets[b])].to_pybytes() if b > a else b""
        if fmt == "megatron":
            files.append(_put(store, f"{name}.bin", blob, b - a, int(lengths[a:b].sum())))
            files.append(_put(store, f"{name}.idx", index_bytes(lengths[a:b], dtype), 0, 0))
        else:
            files.append(_put(store, f"{name}.parquet", _parquet(blob, lengths[a:b], sources[a:b], dtype),
                              b - a, int(lengths[a:b].sum())))
    for s in np.unique(sources).tolist():
        mask = sources == s
        per_source[str(s)] = [int(mask.sum()), int(lengths[mask].sum())]
    return {"range": shard, "files": files, "sources": per_source,
            "docs": int(len(lengths)), "tokens": int(lengths.sum())}


def _cuts(lengths: np.ndarray, max_tokens: int) -> list[tuple[int, int]]:
    """[start, end) document slices of at most ``max_tokens`` tokens (a longer document alone)."""
    cuts, start, held = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        if held and held + n > max_tokens:
            cuts.append((start, i))
            start, held = i, 0
        held += n
    cuts.append((start, len(lengths)))
    return cuts


def _put(store: Storage, name: str, blob: bytes, docs: int, tokens: int) -> dict:
    """Write one file whole and describe it (size, SHA-256, documents, tokens)."""
    put_whole(store, store.path(name), blob)
    return {"path": name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(), "docs": docs, "tokens": tokens}


def _parquet(blob: bytes, lengths: np.ndarray, sources: np.ndarray, dtype: np.dtype) -> bytes:
    ids = np.frombuffer(blob, dtype=dtype).astype(np.int32) if blob else np.zeros(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    table = pa.table({"tokens": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ids)),
                      "source": pa.array(sources, pa.int32())})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()
