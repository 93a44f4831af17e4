"""``quality_embed``: a sentence encoder plus the logistic head ``train-quality --kind embed`` wrote.

One config entry, two stages (``composite_parts``): ``<name>.tokenize`` turns texts into token ids
on CPU (an internal list column; the encoder and token limit as the head was trained), and ``<name>`` runs the encoder and the head on its own actor
pool, with ``num_gpus`` from its resources when GPUs exist and on CPU otherwise. Inside a batch
the documents run in order of length (``sort_by_length``), so padded micro-batches waste little.
The rule (threshold / keep_top / annotate_only) is ``base``'s. A missing model folder, a missing
head or a head whose dimension does not match the encoder is a config error before any work.
"""
from __future__ import annotations

import importlib.util
import json
from typing import Literal, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tokenmill.engine.schema import set_column
from tokenmill.engine.stage import Part, Resources, Stage, register_stage

from ..fasttext_io import local_copy
from .base import QualityFilter, RuleParams
from .embed_model import DEFAULT_MAX_TOKENS, HEAD_FILE, Encoder, default_encoder, head_scores
from .fasttext_model import INFO_FILE

TOKENS = "quality_tokens"


class EmbedParams(RuleParams):
    model_path: str = Field(description="a folder written by train-quality --kind embed (quality.json, head.npz)")
    encoder_path: Optional[str] = Field(None, description="encoder folder (default: the one the head was trained "
                                        "with, else the bundled all-MiniLM-L6-v2)")
    max_tokens: Optional[int] = Field(None, ge=8, le=8192, description="tokens of each document the encoder sees "
                                      "(default: as trained, 256)")
    micro_batch: Optional[int] = Field(None, ge=1, description="documents per encoder call (default: 256 on a GPU, "
                                       "64 on CPU: the fastest of each, measured by bench/gpu_quality.py)")
    sort_by_length: bool = Field(True, description="run a batch's documents in order of length (less padding)")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="the encoder's weights (auto: float16 on a GPU, 2.9x float32 on an H200 with embeddings "
        "at cosine >= 0.99999 to float32's; float32 on CPU)")

    @staticmethod
    def check(params: EmbedParams):
        """Before any work: torch and transformers are installed, the head exists and its
        dimension matches the encoder's."""
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            yield ("type", f"quality_embed needs {' and '.join(missing)}: pip install 'tokenmill[embed]'")
            return
        try:
            info, w, _ = read_head(params.model_path)
        except (FileNotFoundError, ValueError, KeyError, OSError) as e:
            yield ("model_path", str(e))
            return
        encoder = encoder_of(params, info)
        try:
            dim = json.loads(open(f"{local_copy(encoder)}/config.json").read())["hidden_size"]
        except (OSError, ValueError, KeyError) as e:
            yield ("encoder_path", f"not an encoder folder with a config.json: {encoder} ({e})")
            return
        if dim != len(w):
            yield ("model_path", f"the head has {len(w)} dimensions but the encoder {encoder} gives {dim}")


def read_head(model_path: str) -> tuple[dict, np.ndarray, float]:
    """(quality.json, w, b) of an embed model folder."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(model_path)
    root = root.rstrip("/")
    if not fs.exists(f"{root}/{INFO_FILE}"):
        raise FileNotFoundError(f"{model_path}: no {INFO_FILE} (not a folder written by train-quality)")
    info = json.loads(fs.cat_file(f"{root}/{INFO_FILE}"))
    if info.get("kind") != "embed":
        raise ValueError(f"{model_path} holds a {info.get('kind')!r} model, not an embed one")
    with fs.open(f"{root}/{HEAD_FILE}", "rb") as fh:
        head = np.load(fh)
        return info, head["w"].astype(np.float32), float(head["b"])


def encoder_of(params: EmbedParams, info: dict) -> str:
    """The encoder folder: the stage's, else the one the head was trained with, else the bundled one."""
    if params.encoder_path or info.get("encoder"):
        return params.encoder_path or info["encoder"]
    try:
        return default_encoder()
    except ImportError as e:
        raise ValueError(f"no encoder_path and the bundled encoder is not installed ({e}): "
                         "pip install 'tokenmill[embed]'") from e


class EmbedTokenize(Stage):
    """The CPU half: token ids of each text, cut to ``max_tokens`` (as trained, unless set)."""

    name = "quality_embed.tokenize"
    Params = EmbedParams
    adds = {TOKENS: pa.list_(pa.int32())}
    internal_columns = (TOKENS,)
    default_resources = Resources(num_cpus=1, concurrency=1, batch_size=256)

    def setup(self) -> None:
        info, _, _ = read_head(self.params.model_path)
        max_tokens = self.params.max_tokens or info.get("max_tokens") or DEFAULT_MAX_TOKENS
        self.encoder = Encoder(local_copy(encoder_of(self.params, info)), max_tokens=max_tokens)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = pc.fill_null(batch["text"], "").to_pylist()
        return set_column(batch, TOKENS, pa.array(self.encoder.tokens(texts), pa.list_(pa.int32())))


@register_stage("quality_embed")
class QualityEmbed(QualityFilter):
    name = "quality_embed"
    Params = EmbedParams
    needs = {TOKENS: pa.list_(pa.int32())}
    default_resources = Resources(num_cpus=1, concurrency=1, batch_size=256)
    check_params = staticmethod(EmbedParams.check)

    @classmethod
    def composite_parts(cls, name: str, params: EmbedParams, resources: Resources) -> list[Part]:
        """The stages this entry runs as: the CPU tokenizer, then this stage on its own pool (the
        model on GPUs when its resources ask for them)."""
        tok_res = Resources(num_cpus=1, concurrency=resources.concurrency, batch_size=resources.batch_size)
        return [Part(EmbedTokenize, f"{name}.tokenize", params, tok_res), Part(cls, name, params, resources)]

    def setup(self) -> None:
        import torch

        info, self.w, self.b = read_head(self.params.model_path)
        device = "cuda" if (self.resources.num_gpus or 0) > 0 and torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(max(1, int(self.resources.num_cpus or 1)))
        self.encoder = Encoder(local_copy(encoder_of(self.params, info)), device=device, dtype=self.params.dtype)
        self.encoder.load_model()
        self.micro_batch = self.params.micro_batch or (256 if device == "cuda" else 64)

    def scores(self, batch: pa.Table) -> np.ndarray:
        ids = batch[TOKENS].to_pylist()
        emb = self.encoder.embed(ids, self.micro_batch, by_length=self.params.sort_by_length)
        return head_scores(emb, self.w, self.b)
