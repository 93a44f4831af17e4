"""Which encoder an embedding index holds, so no run mixes embeddings of two encoders.

An index folder (``index.write``) gets ``_encoder.json`` from the first run that writes it: the
encoder's kind, its path, a digest of its folder (the marker file's bytes and each model file's
name, size, first and last MiB: a retrained or fine-tuned model changes it; notes, hidden folders
and eval.json do not) and the tokens it sees. A
run whose encoder is another one and that reads or writes that folder fails before any work,
naming the folder and both encoders: cosines between embeddings of two encoders mean nothing (a
copy scored 0.67 against its original; another dimension crashed the pairwise step). Folders
written before this file existed are read unchecked.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Optional

from tokenmill.engine.io.storage import Storage, in_store
from tokenmill.stages.embed.encoders import marker_file

ENCODER_FILE = "_encoder.json"
BUNDLED = "all-MiniLM-L6-v2 (bundled)"
#: bytes read from each end of each file of an encoder folder for its digest
SAMPLED = 1 << 20
#: the files of an encoder folder its digest covers
MODEL_SUFFIXES = (".json", ".safetensors", ".bin", ".npz", ".txt", ".model", ".pt", ".onnx", ".msgpack", ".h5")


def identity(spec) -> Optional[dict]:
    """(kind, name, digest, max_tokens) of the encoder ``spec`` names; None when its folder cannot
    be read (its own check reports that). Kept per process for a local folder while its marker
    file is unchanged (train-embedder and model downloads write it again)."""
    stamp = _stamp(spec.kind, spec.path)
    if spec.path and stamp is None:   # in a store (or missing): read each time
        return _identity.__wrapped__(spec.kind, spec.path, spec.max_tokens, None)
    return _identity(spec.kind, spec.path, spec.max_tokens, stamp)


def _stamp(kind: str, path: Optional[str]) -> Optional[int]:
    if not path or in_store(path):
        return None
    marker = os.path.join(path.removeprefix("file://"), marker_file(kind))
    try:
        return os.stat(marker).st_mtime_ns
    except OSError:
        return None


@functools.lru_cache(maxsize=16)
def _identity(kind: str, path: Optional[str], max_tokens: Optional[int], stamp: Optional[int]) -> Optional[dict]:
    name = path or BUNDLED
    try:
        if kind == "minilm" and not path:
            from tokenmill.stages.quality.embed_model import default_encoder

            path = default_encoder()
        digest, config = _folder_digest(path, marker_file(kind))
    except Exception:   # noqa: BLE001 -- a store's own errors: the encoder check and load report them
        return None
    tokens = max_tokens or (config.get("max_tokens") if kind == "lexical" else None) or 256
    return {"kind": kind, "name": name, "digest": digest, "max_tokens": int(tokens)}


def _folder_digest(path: str, marker: str) -> tuple[str, dict]:
    """A digest of what makes the encoder: its weights, configs and vocabularies (``_counted``), not
    notes, hidden folders (``.git``) or train-embedder's eval.json."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    root = root.rstrip("/")
    with fs.open(f"{root}/{marker}", "rb") as fh:
        raw = fh.read()
    h = hashlib.sha256(raw)
    for name, info in sorted(fs.find(root, detail=True).items()):
        rel = name[len(root):].lstrip("/")
        if not _counted(rel):
            continue
        size = int(info.get("size") or 0)
        h.update(f"{rel}\0{size}\n".encode())
        with fs.open(name, "rb") as fh:   # the first and last MiB: weights differ there when retrained
            h.update(fh.read(SAMPLED))
            if size > SAMPLED:
                fh.seek(max(SAMPLED, size - SAMPLED))
                h.update(fh.read(SAMPLED))
    return h.hexdigest()[:24], json.loads(raw) if marker == "embedder.json" else {}


def _counted(rel: str) -> bool:
    parts = rel.split("/")
    name = parts[-1]
    return (not any(p.startswith(".") for p in parts) and name != "eval.json"
            and os.path.splitext(name)[1].lower() in MODEL_SUFFIXES
            and not name.lower().startswith(("readme", "license")))


def problem(spec, roots: list[str]) -> Optional[str]:
    """Why this encoder cannot use the index folders ``roots`` (the first whose committed runs hold
    another encoder's embeddings), or None. An index with no committed run (a failed first run
    left its _encoder.json) and a store that does not answer are not held against the run."""
    ours = identity(spec)
    if ours is None:
        return None
    for root in dict.fromkeys(roots):
        try:
            theirs = _named(root)
        except Exception:   # noqa: BLE001 -- the store's own errors: the run's reads retry and report them
            continue
        if theirs and not _same(theirs, ours):
            return (f"{root} holds embeddings of encoder {_shown(theirs)}; this run's encoder is {_shown(ours)}. "
                    f"{_advice(theirs, ours)}")
    return None


def _named(root: str) -> Optional[dict]:
    """The encoder an index folder names, when it holds a committed run."""
    from tokenmill.stages.dedup.index_store import folders_of

    store = Storage(root)
    if not store.exists(store.root) or not folders_of(root)[0]:
        return None
    return store.read_json(store.path(ENCODER_FILE))


def record(spec, root: str) -> None:
    """Name this run's encoder in the index folder ``root`` unless its committed runs name one."""
    store = Storage(root)
    if _named(root) is None:
        ours = identity(spec)
        if ours is not None:
            store.write_json_atomic(store.path(ENCODER_FILE), ours)


def still_ours(spec, root: str) -> Optional[str]:
    """Just before a run commits its folder: why the index now names another encoder (a run of
    it named itself while this one ran, both having started on an empty index), or None."""
    ours, store = identity(spec), Storage(root)
    theirs = store.read_json(store.path(ENCODER_FILE))
    if ours and theirs and not _same(theirs, ours):
        return (f"{root} now names encoder {_shown(theirs)} (another run named it while this run ran); this "
                f"run's encoder is {_shown(ours)}: its embeddings were not added")
    return None


def _same(theirs: dict, ours: dict) -> bool:
    return (theirs.get("digest"), theirs.get("max_tokens")) == (ours["digest"], ours["max_tokens"])


def _advice(theirs: dict, ours: dict) -> str:
    if theirs.get("digest") == ours["digest"] and theirs.get("max_tokens") != ours["max_tokens"]:
        why = " (semantic_dedup's default for transformers went from 256 to 1,024 tokens)" if ours["kind"] != "lexical" else ""
        return (f"Set encoder.max_tokens: {theirs.get('max_tokens')} to read documents as that index was written{why}, "
                "or use another index folder")
    return "Use the encoder that wrote the index, or another index folder"


def _shown(e: dict) -> str:
    return f"{e.get('kind')} {e.get('name')} (digest {e.get('digest')}, {e.get('max_tokens')} tokens)"
