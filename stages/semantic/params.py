"""The ``semantic_dedup`` stage's parameters (validated before any work)."""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenmill.stages.dedup.band_index import IndexParams
from tokenmill.stages.embed.encoders import EncoderSpec

EPS_REPORTED = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2)
#: eps per encoder kind where none is given, on bench/semantic.py's corpus (bench/README.md, issue 25):
#: MiniLM's 0.15 (at its 1,024 tokens here) removes one side of 99.1% of the copy pairs with word
#: 5-gram Jaccard >= 0.8 (goal 95%; at 256 tokens and 0.2: 96.3%) and no page without a copy (0.2:
#: 1 of 136), and of the corpus' real pages 1.3% have another page above 1 - eps (MiniLM finds
#: unrelated pages of a language it was not trained on alike, more so the more of them it reads:
#: at 0.2, 1.8%); the lexical encoder's 0.1 (at its
#: 2,048 tokens here) removes 99.5% with train-embedder's default contextual student (goal 90%) and
#: no page without a copy (0.05: 0.993; 0.15: 1 of 136 removed); the bag student 99.7%, with a
#: step of margin on both sides (0.05: 0.996; 0.15: none removed)
DEFAULT_EPS = {"minilm": 0.15, "hf": 0.15, "lexical": 0.1}
#: the boundary margin per encoder kind where none is given (bench/README.md, issue 25): the lexical
#: encoder's documents crowd near the borders (0.01 covers a quarter of them on 100,000 documents:
#: recall at eps 0.1 0.960 -> 0.979), MiniLM's lie farther apart (0.01 covers 5%, 0.05 a third:
#: recall at eps 0.2 with 10 clusters 0.924 -> 0.927 -> 0.939)
DEFAULT_BOUNDARY = {"minilm": 0.05, "hf": 0.05, "lexical": 0.01}
#: tokens of each document a lexical encoder reads here where ``encoder.max_tokens`` is not given (at
#: least its trained window): a copy is the same *document*, and a move, a new header or menu puts
#: other words into the first 256 tokens. On bench/semantic.py's corpus, copy/original pairs with
#: word 5-gram Jaccard >= 0.8 at cosine >= 0.9: 0.92 at 256 tokens, 0.999 at 1,024, 0.9996 at 4,096
#: (30,000 documents); the stage's recall at eps 0.1 0.960 -> 0.997 (3,000) and 0.917 -> 0.960
#: (100,000), no page without a copy removed, for 40% less speed (bench/README.md, issue 25)
LEXICAL_DEDUP_TOKENS = 2048
#: tokens of each document a transformer encoder (minilm, hf) reads here where ``encoder.max_tokens``
#: is not given, in windows of the model's own (256 for MiniLM; ``embed_model.Encoder.windows``), for
#: the same reason: at 256 tokens MiniLM's cosine of a copy with word 5-gram Jaccard >= 0.8 to its
#: original was >= 0.8 for 93.7% of the pairs (the misses: moves, new headers and footers), at
#: 1,024 for 99.7% (at >= 0.85: 91.0% -> 99.2%), for 4x the encoder's work (bench/README.md, issue 25)
TRANSFORMER_DEDUP_TOKENS = 1024
#: a lexical folder without a word block (format 1-2, or --word-dim 0): its earlier default, since the
#: network alone finds unrelated pages of a letter-by-letter script alike (bench/README.md, issue 25)
LEXICAL_EPS_WITHOUT_WORDS = 0.05


class DiversifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep: float = Field(0.8, gt=0, le=1, description="share of each cluster's surviving documents kept: the most "
                        "prototypical (closest to their centroid) go first")
    min_per_cluster: int = Field(1, ge=0, description="a cluster keeps at least this many documents")
    docs_per_cluster: int = Field(1000, ge=1, description="the survivors are re-clustered into about this many "
                                  "documents per cluster")


class SemanticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    encoder: EncoderSpec = Field(default_factory=EncoderSpec)
    eps: Optional[float] = Field(None, gt=0, lt=1, description="a document whose cosine to an earlier document of "
                                 "its cluster (in keep order) is above 1 - eps is removed (default: by encoder: "
                                 f"{DEFAULT_EPS})")
    clusters: Union[Literal["auto"], Annotated[int, Field(ge=1)]] = Field(
        "auto", description="k-means clusters per group (language), at least 1: auto = about documents / "
        "docs_per_cluster")
    docs_per_cluster: int = Field(10_000, ge=1, description="auto: documents per cluster")
    sample_per_cluster: int = Field(128, ge=16, le=4096, description="k-means is fitted on about this many sampled "
                                    "documents per cluster (deterministic: by a hash of each document)")
    kmeans_iterations: int = Field(20, ge=1, le=300)
    max_cluster: int = Field(50_000, ge=2, description="a cluster larger than this is split by a second k-means "
                             "(into clusters of about docs_per_cluster) before its pairwise step")
    boundary: Optional[float] = Field(None, ge=0, lt=2, description="a document whose cosine to its second-nearest "
                                      "centroid is within this of its nearest's is also compared with the documents "
                                      "of that cluster near the same border (0: only within its cluster, as SemDeDup "
                                      f"is published; default: by encoder, {DEFAULT_BOUNDARY})")
    block: int = Field(2048, ge=16, le=65536, description="rows per tile of the pairwise cosine step (memory: "
                       "block^2 x 4 bytes)")
    keep: Literal["hard", "easy", "first", "quality_score"] = Field(
        "hard", description="which document of a similar group stays: hard (farthest from the centroid first, "
        "SemDeDup's default) | easy (closest first) | first (input order) | quality_score (highest first)")
    scope: Literal["language", "global"] = "language"
    seed: int = Field(0, ge=0)
    diversify: Optional[DiversifyParams] = Field(None, description="D4: after dedup, re-cluster the survivors "
                                                 "and drop each cluster's most prototypical documents")
    index: IndexParams = Field(default_factory=IndexParams, description="across runs: write this run's kept "
                               "embeddings (index.write), dedup against earlier runs' (index.read)")
    @model_validator(mode="after")
    def _whole_documents(self):
        """A lexical encoder reads ``LEXICAL_DEDUP_TOKENS`` (or its trained window, if longer), a
        transformer ``TRANSFORMER_DEDUP_TOKENS``, unless ``encoder.max_tokens`` says otherwise."""
        if self.encoder.max_tokens is not None:
            return self
        if self.encoder.kind == "lexical" and self.encoder.path:
            trained = int(lexical_config(self.encoder.path).get("max_tokens") or 0)
            self.encoder = self.encoder.model_copy(update={"max_tokens": max(LEXICAL_DEDUP_TOKENS, trained)})
        elif self.encoder.kind in ("minilm", "hf"):
            self.encoder = self.encoder.model_copy(update={"max_tokens": TRANSFORMER_DEDUP_TOKENS})
        return self

    def boundary_for(self) -> float:
        return DEFAULT_BOUNDARY[self.encoder.kind] if self.boundary is None else self.boundary

    def eps_for(self) -> float:
        if self.eps is not None:
            return self.eps
        if self.encoder.kind == "lexical" and not lexical_config(self.encoder.path).get("words"):
            return LEXICAL_EPS_WITHOUT_WORDS
        return DEFAULT_EPS[self.encoder.kind]

    report_top: int = Field(10, ge=0, le=1000, description="largest clusters listed in the report")


def lexical_config(path: str) -> dict:
    """A lexical encoder folder's embedder.json, read alone; {} when it cannot be read (the stage's
    own check and load report it)."""
    import json

    import fsspec

    from tokenmill.stages.embed.lexical import CONFIG_FILE

    try:
        with fsspec.open(f"{path.rstrip('/')}/{CONFIG_FILE}", "r", encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError, AttributeError):
        return {}
    return config if isinstance(config, dict) else {}
