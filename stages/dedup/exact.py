"""Exact deduplication of normalised text across the whole run.

Streamed part: ``dedup_key`` = BLAKE2b-128 of the text lower-cased with whitespace runs
collapsed (Unicode NFC is the reader's job). Global part (``key_index.global_step``): one shuffle
brings every row with a key to one call, which keeps the first row in input order (source, then
offset; ``order.py``) and rejects the others as ``duplicate_of:<kept id>``. With ``index``
(incremental runs) the same step also checks earlier runs' kept keys.
"""
from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from tokenmill.engine.schema import set_column
from tokenmill.engine.stage import GlobalStage, Resources, register_stage

from . import key_index
from .band_index import IndexParams
from .index_store import run_start_state


class ExactDedupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lowercase: bool = True
    collapse_whitespace: bool = True
    index: IndexParams = Field(default_factory=IndexParams)


def normalise(texts: pa.Array, lowercase: bool = True, collapse_whitespace: bool = True) -> pa.Array:
    out = pc.fill_null(texts, "")
    if lowercase:
        out = pc.utf8_lower(out)
    if collapse_whitespace:
        out = pc.utf8_trim_whitespace(pc.replace_substring_regex(out, r"\s+", " "))
    return out


def text_hashes(texts: pa.Array) -> pa.Array:
    b2 = hashlib.blake2b
    return pa.array([b2(t.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest() for t in texts.to_pylist()], pa.string())


@register_stage("exact_dedup")
class ExactDedup(GlobalStage):
    name = "exact_dedup"
    Params = ExactDedupParams
    adds = {"dedup_key": pa.string()}
    internal_columns = ("dedup_key",)
    default_resources = Resources(num_cpus=1, concurrency=1, batch_size=2000)

    @classmethod
    def path_params(cls, raw: dict) -> tuple[str, ...]:
        """The index folders (``index.read``, ``index.write``) are paths."""
        return ("index.write", "index.read")

    @classmethod
    def report_reason(cls, reasons: pa.Array) -> pa.Array:
        """Every ``duplicate_of:<id>`` is counted as ``duplicate``."""
        dup = pc.starts_with(pc.fill_null(reasons, ""), "duplicate_of:")
        return pc.if_else(dup, pa.scalar("duplicate"), reasons)

    def __call__(self, batch: pa.Table) -> pa.Table:
        norm = normalise(batch["text"], self.params.lowercase, self.params.collapse_whitespace)
        return set_column(batch, "dedup_key", text_hashes(norm))

    @classmethod
    def incremental(cls, params: ExactDedupParams, folder: str) -> ExactDedupParams:
        return params.model_copy(update={"index": params.index.or_default(folder)})

    def shuffle_columns(self) -> list[str]:
        return ["dedup_key", "row_key", "id"]

    def external_state(self, run_id: str) -> list:
        """The key indexes this run reads (their committed runs, but for its own)."""
        return run_start_state(self.params.index, self.name, run_id)

    def global_step(self, ops, keys) -> tuple[object, dict]:
        """This run's copies, and with an index those of earlier runs' kept documents (``key_index``)."""
        decisions, figures = key_index.global_step(ops, keys, self.params.index)
        return decisions, figures if self.params.index.read or self.params.index.write else {}
