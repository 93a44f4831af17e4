"""Embeddings as they travel in key files: float16 bytes per document (``dim`` x 2 bytes), read back
as float32 rows renormalised to unit length (float16 rounding moves a norm by ~1e-4, and an exact
copy must meet its original at cosine 1)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def encode(rows: np.ndarray) -> pa.Array:
    """(n, dim) float rows -> a binary column of their float16 bytes."""
    half = np.ascontiguousarray(rows, dtype=np.float16)
    n, dim = half.shape if half.ndim == 2 else (0, 0)
    width = dim * 2
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32) if n else np.zeros(1, np.int32), pa.int32())
    return pa.BinaryArray.from_buffers(pa.binary(), n, [None, offsets.buffers()[1], pa.py_buffer(half.tobytes())])


def decode(column, dim: int) -> np.ndarray:
    """A binary column of float16 bytes -> (n, dim) float32 rows of unit length (zero rows stay zero)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(col)
    if n == 0:
        return np.zeros((0, dim), np.float32)
    col = col.cast(pa.binary())
    offsets = np.frombuffer(col.buffers()[1], np.int32, n + 1, col.offset * 4)
    data = np.frombuffer(col.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    if offsets[-1] - offsets[0] != n * dim * 2:
        raise ValueError(f"embeddings of {dim} dimensions expected ({n} rows, {offsets[-1] - offsets[0]} bytes)")
    rows = data.view(np.float16).reshape(n, dim).astype(np.float32)
    return normalise(rows)


def normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
