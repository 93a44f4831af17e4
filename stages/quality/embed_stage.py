"""``quality_embed``: a sentence encoder plus the logistic head ``train-quality --kind embed`` wrote.

The encoder is ``encoder: {kind, path, ...}`` (``stages/embed/encoders.EncoderSpec``), by default the
one quality.json records (``encoder_spec``; older heads: their ``encoder`` folder, else the bundled
MiniLM); ``encoder_path`` or a folder string as ``encoder`` still mean a Hugging Face folder. A
``lexical`` encoder embeds in one stage on CPU (NumPy/SciPy, no torch). A transformer encoder runs
as one config entry, two stages (``composite_parts``): ``<name>.tokenize`` turns texts into token ids
on CPU (an internal list column; the encoder and token limit as the head was trained), and ``<name>`` runs the encoder and the head on its own actor
pool, with ``num_gpus`` from its resources when GPUs exist and on CPU otherwise. Inside a batch
the documents run in order of length (``sort_by_length``), so padded micro-batches waste little.
The rule (threshold / keep_top / annotate_only) is ``base``'s. A missing model folder, a missing
head or a head whose dimension does not match the encoder is a config error before any work.
"""
from __future__ import annotations

import importlib.util
import json
from typing import Literal, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from tokenmill.engine.schema import set_column
from tokenmill.engine.stage import Part, Resources, Stage, register_stage

from ..embed.encoders import EncoderSpec, make_encoder
from ..fasttext_io import local_copy
from .base import QualityFilter, RuleParams
from .embed_model import DEFAULT_MAX_TOKENS, HEAD_FILE, Encoder, default_encoder, head_scores
from .fasttext_model import INFO_FILE

TOKENS = "quality_tokens"


class EmbedParams(RuleParams):
    model_path: str = Field(description="a folder written by train-quality --kind embed (quality.json, head.npz)")
    encoder: Optional[Union[EncoderSpec, str]] = Field(None, description="the encoder {kind, path, ...} (default: "
                                                      "the one the head was trained with); a string: an HF folder")
    encoder_path: Optional[str] = Field(None, description="encoder folder (default: the one the head was trained "
                                        "with, else the bundled all-MiniLM-L6-v2)")
    max_tokens: Optional[int] = Field(None, ge=8, le=8192, description="tokens of each document the encoder sees "
                                      "(default: as trained, 256); past the model's window (256 for MiniLM) it "
                                      "reads windows pooled together")
    micro_batch: Optional[int] = Field(None, ge=1, description="documents (windows) per encoder call (default: 256 on a GPU, "
                                       "64 on CPU: the fastest of each, measured by bench/gpu_quality.py)")
    sort_by_length: bool = Field(True, description="run a batch's documents in order of length (less padding)")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="the encoder's weights (auto: float16 on a GPU, 2.9x float32 on an H200 with embeddings "
        "at cosine >= 0.99999 to float32's; float32 on CPU)")

    @staticmethod
    def check(params: EmbedParams):
        """Before any work: the head exists, the encoder loads (torch and transformers for the
        transformer kinds, a complete folder for lexical) and the head's dimension matches it."""
        try:
            info, w, _ = read_head(params.model_path)
        except (FileNotFoundError, ValueError, KeyError, OSError) as e:
            yield ("model_path", str(e))
            return
        try:
            spec = encoder_spec(params, info)
            dim = encoder_dim(spec)
        except ImportError as e:
            yield ("type", str(e))
            return
        except (OSError, ValueError, KeyError) as e:
            yield ("encoder_path" if params.encoder_path else "encoder", str(e))
            return
        if dim != len(w):
            yield ("model_path", f"the head has {len(w)} dimensions but the encoder {spec.path or spec.kind} gives {dim}")


def encoder_dim(spec: EncoderSpec) -> int:
    """The dimension the encoder gives, read from its folder (ImportError: a missing extra)."""
    if spec.kind == "lexical":
        from ..embed.lexical import output_dim, read_folder

        return output_dim(read_folder(local_copy(spec.path), spec.path)[0])
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"quality_embed needs {' and '.join(missing)}: pip install 'tokenmill[embed]'")
    folder = encoder_folder(spec)
    try:
        return int(json.loads(open(f"{local_copy(folder)}/config.json").read())["hidden_size"])
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"not an encoder folder with a config.json: {folder} ({e})") from e


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


def encoder_spec(params: EmbedParams, info: dict) -> EncoderSpec:
    """The encoder: the stage's ``encoder`` (or ``encoder_path``), else the one quality.json
    records, else the bundled MiniLM; ``max_tokens``, ``dtype``, ``micro_batch`` of the stage apply."""
    given = params.encoder
    if isinstance(given, str) or (given is None and params.encoder_path):
        given = EncoderSpec(kind="hf", path=given if isinstance(given, str) else params.encoder_path)
    if given is None and info.get("encoder_spec"):
        given = EncoderSpec(**info["encoder_spec"])
    if given is None:
        given = EncoderSpec(kind="hf", path=info["encoder"]) if info.get("encoder") else EncoderSpec(kind="minilm")
    update = {"max_tokens": params.max_tokens or given.max_tokens or info.get("max_tokens"),
              "batch_size": params.micro_batch or given.batch_size}
    if given.dtype == "auto":
        update["dtype"] = params.dtype
    return given.model_copy(update=update)


def encoder_folder(spec: EncoderSpec) -> str:
    """A transformer encoder's folder: its path, else the bundled all-MiniLM-L6-v2."""
    if spec.path:
        return spec.path
    try:
        return default_encoder()
    except ImportError as e:
        raise ValueError(f"no encoder path and the bundled encoder is not installed ({e}): "
                         "pip install 'tokenmill[embed]'") from e


def lexical(params: EmbedParams) -> bool:
    """Whether the entry's encoder is a lexical one (one stage, no tokens column); an unreadable
    head counts as not (check_params reports it)."""
    try:
        return encoder_spec(params, read_head(params.model_path)[0]).kind == "lexical"
    except (FileNotFoundError, ValueError, KeyError, OSError):
        return False


class EmbedTokenize(Stage):
    """The CPU half: token ids of each text, cut to ``max_tokens`` (as trained, unless set)."""

    name = "quality_embed.tokenize"
    Params = EmbedParams
    adds = {TOKENS: pa.list_(pa.int32())}
    internal_columns = (TOKENS,)
    default_resources = Resources(num_cpus=1, concurrency=1, batch_size=256)

    def setup(self) -> None:
        spec = encoder_spec(self.params, read_head(self.params.model_path)[0])
        self.encoder = Encoder(local_copy(encoder_folder(spec)), max_tokens=spec.max_tokens or DEFAULT_MAX_TOKENS)

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
    def path_params(cls, raw: dict) -> tuple[str, ...]:
        return ("model_path", "encoder_path", "encoder.path") if isinstance(raw.get("encoder"), dict) else \
            ("model_path", "encoder_path", "encoder")

    @classmethod
    def columns_needed(cls, params: EmbedParams) -> dict:
        return {} if lexical(params) else dict(cls.needs)

    @classmethod
    def composite_parts(cls, name: str, params: EmbedParams, resources: Resources) -> list[Part]:
        """The stages this entry runs as: a lexical encoder in this stage alone; a transformer one
        as the CPU tokenizer, then this stage on its own pool (the model on GPUs when its
        resources ask for them)."""
        if lexical(params):
            return [Part(cls, name, params, resources)]
        tok_res = Resources(num_cpus=1, concurrency=resources.concurrency, batch_size=resources.batch_size)
        return [Part(EmbedTokenize, f"{name}.tokenize", params, tok_res), Part(cls, name, params, resources)]

    def setup(self) -> None:
        info, self.w, self.b = read_head(self.params.model_path)
        spec = encoder_spec(self.params, info)
        if spec.kind == "lexical":
            self.encoder = make_encoder(spec)
            self.encoder.load_model()
            return
        import torch

        device = "cuda" if (self.resources.num_gpus or 0) > 0 and torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(max(1, int(self.resources.num_cpus or 1)))
        self.encoder = Encoder(local_copy(encoder_folder(spec)), device=device, dtype=spec.dtype)
        self.encoder.load_model()
        self.micro_batch = spec.batch_size or (256 if device == "cuda" else 64)

    def scores(self, batch: pa.Table) -> np.ndarray:
        if not isinstance(self.encoder, Encoder):   # lexical: straight from the texts
            return head_scores(self.encoder.embed_texts(pc.fill_null(batch["text"], "").to_pylist()), self.w, self.b)
        ids = batch[TOKENS].to_pylist()
        emb = self.encoder.embed(ids, self.micro_batch, by_length=self.params.sort_by_length)
        return head_scores(emb, self.w, self.b)
