"""What every generation backend of the rephrase stage takes and returns.

A backend turns a list of chat conversations into one ``Generation`` each, in order. It is set up
once per worker (``setup()``: load the model, open a connection pool) and never raises for one
bad request: a request that still fails after its retries comes back with ``error`` set, and the
stage sends it to rejects. Backends: ``transformers_backend`` (local generate on CPU or GPU),
``openai_backend`` (any OpenAI-compatible server), ``vllm_backend`` (vLLM in process; on Ray the
executor runs vLLM through ``ray.data.llm`` instead).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

from pydantic import BaseModel, ConfigDict, Field


class Sampling(BaseModel):
    """Sampling parameters of every request (``max_tokens`` comes from ``max_output_tokens``)."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.5, ge=0, description="0: greedy decoding")
    top_p: float = Field(0.9, gt=0, le=1)
    seed: int = Field(0, description="with the request's key, fixes each request's random draw")


@dataclass
class Generation:
    """One request's outcome: the text (None when it failed), the model's token counts, why it
    stopped (``stop`` or ``length``: cut off by ``max_tokens``), and the error after retries."""

    text: Optional[str]
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: Optional[str] = None
    error: Optional[str] = None


class Backend(Protocol):
    def setup(self) -> None:
        """Load the model or open the client; once per worker."""

    def generate(self, conversations: list[list[dict]], seeds: list[int], max_tokens: int) -> list[Generation]:
        """One generation per conversation (``[{"role", "content"}, ...]``), in order; ``seeds[i]``
        is request i's own seed (the stage derives it from the config's seed and the request)."""
