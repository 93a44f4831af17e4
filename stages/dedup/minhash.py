"""Near-duplicate removal across the whole run: MinHash LSH, then distributed connected components.

Streamed part (``__call__``): each document's MinHash signature (``signatures.MinHasher``: word
n-grams, or character n-grams for languages whose word tokenizer is cjk/thai) cut into ``bands``
band keys, stored as ``minhash_bands`` (with ``scope: language`` the language is mixed into every
key, so documents only meet within their language). A document without a shingle gets no band
and never matches. Every row starts with ``dup_cluster_size`` 1.

Global part (``global_step``, on the engine's operations): band rows -> candidate edges ->
connected components (``components``) -> per component, the document to keep by the ``keep`` rule
(first in input order: source, then offset; or highest ``quality_score``, then first); the others are
rejected as ``near_duplicate_of:<kept id>``, and every member gets ``dup_cluster_size``.
Decisions name rows by ``row_key``; no text moves.
"""
from __future__ import annotations

import zlib
from typing import Literal, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenmill.engine.schema import CHUNK, set_column
from tokenmill.engine.stage import GlobalStage, Resources, register_stage

from .order import input_order_keys, with_input_order
from .components import BAND_ROWS, LABELS, candidate_edges, connected_components, star_labels
from .signatures import MinHasher, band_keys, optimal_bands

BANDS_COLUMN = "minhash_bands"
CLUSTER_SIZE = "dup_cluster_size"
REASON_PREFIX = "near_duplicate_of:"
DECISIONS = pa.schema([("row_key", pa.string()), ("reject_reason", pa.string()), (CLUSTER_SIZE, pa.int32()),
                       (CHUNK, pa.int32())])


class MinHashParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ngram: int = Field(5, ge=1, description="word n-grams (character n-grams: minhash_char_ngram of the language)")
    num_perm: int = Field(112, ge=2, le=1024, description="permutations in a signature")
    bands: Optional[int] = Field(14, ge=1, description="bands; rows per band = num_perm / bands")
    threshold: Optional[float] = Field(None, gt=0, lt=1, description="instead of bands: datasketch's optimal "
                                       "(bands, rows) for this Jaccard threshold and num_perm")
    hash: Literal["fast", "datasketch"] = Field("fast", description="fast (64-bit) | datasketch (bit-identical "
                                                "signatures to datasketch.MinHash)")
    seed: int = Field(1, ge=0)
    verify: float = Field(0.0, ge=0, le=1, description="> 0: not supported yet (see README)")
    keep: Literal["first", "quality_score"] = Field("first", description="first (in input order: source, then "
                                                  "offset) | quality_score (highest; ties: first)")
    scope: Literal["language", "global"] = "language"
    max_rounds: int = Field(64, ge=1, description="connected-components rounds before the step fails")

    @model_validator(mode="after")
    def _bands_fit(self):
        if self.threshold is not None:
            self.bands = None
        elif self.bands is None or self.num_perm % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide num_perm ({self.num_perm}); or set threshold")
        if self.verify:
            raise ValueError("verify > 0 is not supported yet; leave it at 0.0")
        return self

    def band_layout(self) -> tuple[int, int]:
        """(bands, rows per band)."""
        if self.threshold is not None:
            return optimal_bands(self.threshold, self.num_perm)
        return self.bands, self.num_perm // self.bands


def _language_salt(lang: Optional[str]) -> np.uint64:
    return np.uint64(zlib.crc32((lang or "und").encode()) * 0x9E3779B1 & 0xFFFFFFFFFFFFFFFF)


@register_stage("minhash_dedup")
class MinHashDedup(GlobalStage):
    name = "minhash_dedup"
    Params = MinHashParams
    is_filter = True
    key_column = BANDS_COLUMN
    adds = {BANDS_COLUMN: pa.list_(pa.int64()), CLUSTER_SIZE: pa.int32()}
    internal_columns = (BANDS_COLUMN,)
    default_resources = Resources(num_cpus=1, concurrency=2, batch_size=1000)

    @classmethod
    def report_reason(cls, reasons: pa.Array) -> pa.Array:
        """Every ``near_duplicate_of:<id>`` is counted as ``near_duplicate``."""
        near = pc.starts_with(pc.fill_null(reasons, ""), REASON_PREFIX)
        return pc.if_else(near, pa.scalar("near_duplicate"), reasons)

    def setup(self) -> None:
        self._hashers: dict[int, MinHasher] = {}
        self.bands, self.rows = self.params.band_layout()

    def _hasher(self, ngram: int) -> MinHasher:
        """One hasher per n-gram length (word n-grams, a language's character n-grams)."""
        if ngram not in self._hashers:
            p = self.params
            self._hashers[ngram] = MinHasher(num_perm=p.num_perm, seed=p.seed, hash=p.hash, ngram=ngram)
        return self._hashers[ngram]

    def shuffle_columns(self) -> list[str]:
        """The columns the global step reads back (never the text)."""
        extra = ["quality_score"] if self.params.keep == "quality_score" else []
        return ["row_key", "id", BANDS_COLUMN, CHUNK, *extra]

    # -- streamed -----------------------------------------------------------------------------------
    def __call__(self, batch: pa.Table) -> pa.Table:
        if not hasattr(self, "_hashers"):
            self.setup()
        n = batch.num_rows
        langs = batch["language"].to_pylist() if "language" in batch.column_names else [None] * n
        keys = np.zeros((n, self.bands), np.uint64)
        empty = np.ones(n, bool)
        for (mode, tokenizer, ngram), idx in self._by_shingling(langs).items():
            texts = batch["text"].take(pa.array(idx))
            sigs, no_shingle = self._hasher(ngram).signatures(texts, mode=mode, tokenizer=tokenizer)
            # a document without shingles gets no band at all (set to null below), so it never matches
            keys[idx] = band_keys(sigs, np.zeros(len(idx), bool), self.bands, self.rows)
            empty[idx] = no_shingle
        if self.params.scope == "language":
            with np.errstate(over="ignore"):
                keys ^= np.array([_language_salt(l) for l in langs], np.uint64)[:, None]
        batch = set_column(batch, BANDS_COLUMN, self._band_lists(keys, empty))
        return set_column(batch, CLUSTER_SIZE, pa.array(np.ones(n, np.int32), pa.int32()))

    def _by_shingling(self, langs: list) -> dict[tuple, list[int]]:
        """Row indexes per (mode, tokenizer, n-gram length), from each row's language."""
        groups: dict[tuple, list[int]] = {}
        for i, lang in enumerate(langs):
            lp = self.languages.get(lang) if self.languages is not None else None
            tok = lp.word_tokenizer if lp is not None else "whitespace"
            key = ("word", tok, self.params.ngram) if tok == "whitespace" else ("char", tok, lp.minhash_char_ngram)
            groups.setdefault(key, []).append(i)
        return groups

    def _band_lists(self, keys: np.ndarray, empty: np.ndarray) -> pa.Array:
        n, b = keys.shape
        flat = pa.array(keys.view(np.int64).reshape(-1), pa.int64())
        offsets = pa.array(np.arange(0, (n + 1) * b, b, dtype=np.int32), pa.int32())
        lists = pa.ListArray.from_arrays(offsets, flat)
        return pc.if_else(pa.array(empty), pa.scalar(None, pa.list_(pa.int64())), lists)

    # -- global ----------------------------------------------------------------------------------
    def global_step(self, ops, keys) -> tuple[object, dict]:
        """Decisions (row_key, reject_reason, dup_cluster_size, chunk) for every document in a
        component of two or more, and the step's figures (rounds, edges)."""
        edges = candidate_edges(ops, ops.map(keys, explode_bands))
        stars, rounds = connected_components(ops, edges, self.params.max_rounds)
        labels = ops.map(stars, star_labels)
        members = ops.map(keys, member_rows, columns=self.shuffle_columns())
        labeled = ops.partition_map([labels, members], "node", attach_labels)
        decisions = ops.partition_map([labeled], "label", choose_kept, keep=self.params.keep)
        return decisions, {"rounds": rounds}


def explode_bands(keys: pa.Table) -> pa.Table:
    """Key rows -> one (node, band) row per band of each document that has bands."""
    bands = keys[BANDS_COLUMN]
    bands = bands.combine_chunks() if isinstance(bands, pa.ChunkedArray) else bands
    has = pc.is_valid(bands)
    nodes, bands = keys["node"].filter(has), bands.filter(has)
    counts = pc.list_value_length(bands).to_numpy(zero_copy_only=False)
    node = np.repeat(nodes.to_numpy(), counts)
    return pa.table({"node": pa.array(node, pa.int64()), "band": pc.list_flatten(bands)}, schema=BAND_ROWS)


def member_rows(keys: pa.Table, columns: list[str]) -> pa.Table:
    """What choosing the kept document needs of each row: node, row_key, id, chunk (+ quality)."""
    return keys.select(["node"] + [c for c in columns if c != BANDS_COLUMN])


def attach_labels(labels: Optional[pa.Table], members: Optional[pa.Table]) -> pa.Table:
    """Members of a component (a node with a label), with their label; singletons drop out."""
    if labels is None or members is None or not labels.num_rows or not members.num_rows:
        return _labeled_empty(members)
    labels = labels.group_by(["node", "label"]).aggregate([])
    return members.join(labels, "node", join_type="inner").combine_chunks()


def _labeled_empty(members: Optional[pa.Table]) -> pa.Table:
    if members is None:
        return pa.table({"node": pa.array([], pa.int64()), "label": pa.array([], pa.int64())})
    return members.slice(0, 0).append_column("label", pa.array([], pa.int64()))


def choose_kept(labeled: Optional[pa.Table], keep: str = "first") -> pa.Table:
    """Per component (label): keep one document by the rule, reject the others as
    ``near_duplicate_of:<kept id>``; every member gets the component's size."""
    if labeled is None or labeled.num_rows == 0 or "row_key" not in labeled.column_names:
        return DECISIONS.empty_table()
    sort = [("label", "ascending")]
    if keep == "quality_score":
        labeled = set_column(labeled, "_q", pc.fill_null(pc.negate(labeled["quality_score"].cast(pa.float64())),
                                                        float("inf")))
        sort.append(("_q", "ascending"))
    labeled = with_input_order(labeled)
    t = labeled.take(pc.sort_indices(labeled, sort + input_order_keys()))
    label = t["label"].to_numpy()
    first = np.r_[True, label[1:] != label[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    sizes = np.diff(np.r_[starts, len(label)])
    kept_ids = pc.take(t["id"], pa.array(starts[group]))
    reasons = pc.binary_join_element_wise(pa.scalar(REASON_PREFIX), kept_ids.cast(pa.string()), "")
    reasons = pc.if_else(pa.array(first), pa.scalar(None, pa.string()), reasons)
    return pa.table({"row_key": t["row_key"], "reject_reason": reasons,
                     CLUSTER_SIZE: pa.array(sizes[group].astype(np.int32), pa.int32()), CHUNK: t[CHUNK]},
                    schema=DECISIONS)
