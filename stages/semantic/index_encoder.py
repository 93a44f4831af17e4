"""Which encoder an embedding index holds, so no run mixes embeddings of two encoders.

An index folder (``index.write``) gets ``_encoder.json`` from the first run that writes it: the
encoder's kind, its path, a digest of its folder (the marker file's bytes and each file's name,
size, first and last MiB: a retrained or fine-tuned model changes it) and the tokens it sees. A
run whose encoder is another one and that reads or writes that folder fails before any work,
naming the folder and both encoders: cosines between embeddings of two encoders mean nothing (a
copy scored 0.67 against its original; another dimension crashed the pairwise step). Folders
written before this file existed are read unchecked.
"""
from __future__ import annotations

import hashlib
import json
from typing import Optional

from tokenmill.engine.io.storage import Storage

ENCODER_FILE = "_encoder.json"
BUNDLED = "all-MiniLM-L6-v2 (bundled)"
#: bytes read from each end of each file of an encoder folder for its digest
SAMPLED = 1 << 20


def identity(spec) -> Optional[dict]:
    """(kind, name, digest, max_tokens) of the encoder ``spec`` names; None when its folder cannot
    be read (its own check reports that)."""
    if spec.kind == "minilm" and not spec.path:
        return {"kind": "minilm", "name": BUNDLED, "digest": "bundled", "max_tokens": spec.max_tokens or 256}
    try:
        digest, config = _folder_digest(spec.path, "embedder.json" if spec.kind == "lexical" else "config.json")
    except Exception:   # noqa: BLE001 -- a store's own errors: the encoder check and load report them
        return None
    tokens = spec.max_tokens or (config.get("max_tokens") if spec.kind == "lexical" else None) or 256
    return {"kind": spec.kind, "name": spec.path, "digest": digest, "max_tokens": int(tokens)}


def _folder_digest(path: str, marker: str) -> tuple[str, dict]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    root = root.rstrip("/")
    with fs.open(f"{root}/{marker}", "rb") as fh:
        raw = fh.read()
    h = hashlib.sha256(raw)
    for name, info in sorted(fs.find(root, detail=True).items()):
        size = int(info.get("size") or 0)
        h.update(f"{name[len(root):]}\0{size}\n".encode())
        with fs.open(name, "rb") as fh:   # the first and last MiB: weights differ there when retrained
            h.update(fh.read(SAMPLED))
            if size > 2 * SAMPLED:
                fh.seek(size - SAMPLED)
                h.update(fh.read(SAMPLED))
    return h.hexdigest()[:24], json.loads(raw) if marker == "embedder.json" else {}


def problem(spec, roots: list[str]) -> Optional[str]:
    """Why this encoder cannot use the index folders ``roots`` (the first that holds another
    encoder's embeddings), or None."""
    ours = identity(spec)
    if ours is None:
        return None
    for root in dict.fromkeys(roots):
        store = Storage(root)
        theirs = store.read_json(store.path(ENCODER_FILE)) if store.exists(store.root) else None
        if theirs and (theirs.get("digest"), theirs.get("max_tokens")) != (ours["digest"], ours["max_tokens"]):
            return (f"{root} holds embeddings of encoder {_shown(theirs)}; this run's encoder is {_shown(ours)}. "
                    "Use the encoder that wrote the index, or another index folder")
    return None


def record(spec, root: str) -> None:
    """Name this run's encoder in the index folder ``root`` unless a file already names one."""
    store = Storage(root)
    if store.read_json(store.path(ENCODER_FILE)) is None:
        ours = identity(spec)
        if ours is not None:
            store.write_json_atomic(store.path(ENCODER_FILE), ours)


def _shown(e: dict) -> str:
    return f"{e.get('kind')} {e.get('name')} (digest {e.get('digest')}, {e.get('max_tokens')} tokens)"
