"""The ``rephrase`` stage's parameters (validated before any work)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .backend import Sampling


class Route(BaseModel):
    """One bucket of ``route_by``: documents whose score is at least ``min`` use this mix."""

    model_config = ConfigDict(extra="forbid")
    min: float
    styles: dict[str, float] = Field(min_length=1)


#: Nemotron-CC's routing: low-quality documents to Wikipedia-style paraphrase, high-quality ones
#: to the four knowledge-dense styles
NEMOTRON_ROUTES = [Route(min=0.0, styles={"wikipedia": 1.0}),
                   Route(min=0.5, styles={"qa": 1.0, "distill": 1.0, "extract_knowledge": 1.0, "knowledge_list": 1.0})]


class Select(BaseModel):
    """Which live documents are rephrased (all by default)."""

    model_config = ConfigDict(extra="forbid")
    min_quality_score: Optional[float] = Field(None, description="only documents whose quality_score reaches this")
    languages: Optional[list[str]] = Field(None, description="only documents in these languages")
    min_tokens: int = Field(50, ge=0, description="shorter documents (run tokenizer) are not worth a request")


class OpenAIParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str = Field(description="e.g. http://host:8000/v1 (the server's OpenAI-compatible API)")
    api_key_env: Optional[str] = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    concurrency: int = Field(16, ge=1, description="requests in flight per worker")
    timeout_s: float = Field(120.0, gt=0, description="per attempt")
    max_retries: int = Field(4, ge=0, description="after the first attempt (timeouts, connection errors, 429, 5xx)")


class RephraseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["vllm", "openai", "transformers"] = Field(
        "vllm", description="vllm (ray.data.llm on Ray; vllm.LLM elsewhere), openai (any OpenAI-compatible "
        "server), transformers (local generate, CPU or GPU)")
    model: str = Field(description="a local model folder or object-store path; for openai, the served model's name")
    styles: dict[str, float] = Field(default_factory=lambda: {"wikipedia": 0.3, "qa": 0.3, "distill": 0.2, "tutorial": 0.2},
                                     min_length=1, description="style -> weight of the mix")
    styles_dir: Optional[str] = Field(None, description="a folder of style YAML files that adds or overrides styles")
    route_by: Optional[str] = Field(None, description="a score column: its buckets (routes) pick the mix")
    routes: list[Route] = Field(default_factory=lambda: list(NEMOTRON_ROUTES))
    select: Select = Field(default_factory=Select)
    max_input_tokens: int = Field(1024, ge=16, description="longer documents are cut at paragraph/line boundaries")
    max_output_tokens: int = Field(512, ge=1)
    sampling: Sampling = Field(default_factory=Sampling)
    budget_tokens: Optional[int] = Field(None, ge=1, description="stop once kept synthetic documents hold this many tokens")
    reject_truncated: bool = Field(True, description="reject outputs cut off by max_output_tokens (truncated)")
    min_chars: int = Field(50, ge=0, description="shorter outputs are rejected as too_short")
    max_copy: float = Field(0.9, gt=0, le=1, description="outputs sharing this share of 8-grams with the source are rejected")
    openai: Optional[OpenAIParams] = None
    engine_kwargs: dict = Field(default_factory=dict, description="vllm: engine arguments (dtype, max_model_len ...)")
    env: dict[str, str] = Field(default_factory=dict, description="environment of the engine's processes")
    device: Optional[str] = Field(None, description="transformers: cuda or cpu (default: cuda when there is one)")
    dtype: str = Field("auto", description="transformers: torch dtype of the weights")

    @model_validator(mode="after")
    def _openai_needs_url(self):
        if self.backend == "openai" and self.openai is None:
            raise ValueError("backend openai needs openai: {base_url: ...}")
        return self

    def all_styles(self) -> set[str]:
        names = set(self.styles)
        if self.route_by:
            names |= {s for r in self.routes for s in r.styles}
        return names
