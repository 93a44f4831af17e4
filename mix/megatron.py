"""The shard format: Megatron-LM's indexed dataset (``megatron.core.datasets.indexed_dataset``).

``NAME.bin`` holds every sequence's token ids back to back in one dtype, no header. ``NAME.idx``:
the 9 bytes ``MMIDIDX\\x00\\x00``, version (``<Q`` 1), dtype code (``<B``: 8 uint16, 4 int32), the
sequence count and the document count (``<Q`` each; documents = sequences + 1), the sequence lengths
(int32, in tokens), the sequence pointers (int64, byte offsets into ``.bin``) and the document
indices (int64, ``0 .. N``: one sequence per document). No sequence modes (not multimodal).
"""
from __future__ import annotations

import struct

import numpy as np

HEADER = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES = {np.dtype("uint8"): 1, np.dtype("int8"): 2, np.dtype("int16"): 3, np.dtype("int32"): 4,
               np.dtype("int64"): 5, np.dtype("float64"): 6, np.dtype("float32"): 7, np.dtype("uint16"): 8}


def index_bytes(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """The ``.idx`` of sequences of these lengths (tokens), one document each."""
    lengths = np.asarray(lengths, dtype="<i4")
    n = len(lengths)
    pointers = np.zeros(n, dtype="<i8")
    if n:
        np.cumsum(lengths[:-1].astype("<i8") * np.dtype(dtype).itemsize, out=pointers[1:])
    head = HEADER + struct.pack("<Q", VERSION) + struct.pack("<B", DTYPE_CODES[np.dtype(dtype).newbyteorder("=")])
    head += struct.pack("<Q", n) + struct.pack("<Q", n + 1)
    return head + lengths.tobytes() + pointers.tobytes() + np.arange(n + 1, dtype="<i8").tobytes()
