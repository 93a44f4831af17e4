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

from tokenmill.engine.global_ops import GlobalStepError
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.languages import register_language_params
from tokenmill.engine.schema import set_column
from tokenmill.engine.stage import GlobalStage, Resources, register_stage

from .band_index import IndexParams, indexed_rows, keep_rows
from .components import BAND_ROWS, HUB_DEGREE, band_rows, candidate_edges, connected_components, star_labels
from .guard import SKETCH_COLUMN, sketch_column
from .hubs import HubLog
from .index_store import commit_marker, compact, index_figures, index_folders, own_position, run_folder, run_start_state
from .kept import CLUSTER_SIZE, DECISIONS, REASON_PREFIX, decide
from .losses import guard_figures, largest_clusters, source_losses
from .signatures import MinHasher, band_keys, optimal_bands

BANDS_COLUMN = "minhash_bands"
SIGNATURE_COLUMN = "minhash_signature"   # kept only with verify > 0


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
    normalize: bool = Field(True, description="shingle normalised text: NFKC, lower case, numbers folded to 0, "
                            "'_' as a space (stages/dedup/normalize.py); false: only lower-cased")
    fold_diacritics: bool = Field(False, description="with normalize: also strip accents (café = cafe); off "
                                  "since in many scripts marks are letters")
    verify: float = Field(0.0, ge=0, le=1, description="> 0: drop candidate edges whose estimated Jaccard "
                          "(share of equal signature values) is below it")
    keep: Literal["first", "quality_score"] = Field("first", description="first (in input order: source, then "
                                                  "offset) | quality_score (highest; ties: first)")
    scope: Literal["language", "global"] = "language"
    max_rounds: int = Field(64, ge=1, description="connected-components rounds before the step fails")
    hub_degree: int = Field(HUB_DEGREE, ge=2, description="a document with more near-duplicate links than this, "
                            "or a cluster with more members, is spread over several workers")
    index: IndexParams = Field(default_factory=IndexParams)
    guard: float = Field(0.7, ge=0, le=1, description="a member is removed only if its estimated Jaccard with the "
                         "document its cluster keeps (or, see guard_hops, with a member that passed) is >= this; "
                         "else it is kept and reported as a broken chain. 0: off")
    guard_hops: int = Field(2, ge=1, le=8, description="verified links allowed between a removed member and "
                            "the kept document")
    max_source_removal: Optional[float] = Field(None, gt=0, le=1, description="fail the run (before anything is "
                                                "committed) when a source file or web domain with at least "
                                                "source_min_docs documents loses more than this share to dedup")
    source_min_docs: int = Field(100, ge=1, description="sources smaller than this are listed in no loss table")
    report_top: int = Field(10, ge=0, le=1000, description="clusters and sources listed in report.json")

    @model_validator(mode="after")
    def _bands_fit(self):
        if self.fold_diacritics and not self.normalize:
            raise ValueError("fold_diacritics: true needs normalize: true")
        if self.threshold is not None:
            self.bands = None
        elif self.bands is None or self.num_perm % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide num_perm ({self.num_perm}); or set threshold")
        return self

    def band_layout(self) -> tuple[int, int]:
        """(bands, rows per band)."""
        if self.threshold is not None:
            return optimal_bands(self.threshold, self.num_perm)
        return self.bands, self.num_perm // self.bands


register_language_params(minhash_char_ngram=(int, Field(5, ge=1, description="minhash_dedup: character "
                                                    "n-gram length for cjk/thai tokenizers")))


def _language_salt(lang: Optional[str]) -> np.uint64:
    return np.uint64(zlib.crc32((lang or "und").encode()) * 0x9E3779B1 & 0xFFFFFFFFFFFFFFFF)


@register_stage("minhash_dedup")
class MinHashDedup(GlobalStage):
    name = "minhash_dedup"
    Params = MinHashParams
    adds = {BANDS_COLUMN: pa.list_(pa.int64()), SIGNATURE_COLUMN: pa.list_(pa.uint64()), SKETCH_COLUMN: pa.binary(),
            CLUSTER_SIZE: pa.int32()}
    internal_columns = (BANDS_COLUMN, SIGNATURE_COLUMN, SKETCH_COLUMN)
    default_resources = Resources(num_cpus=1, concurrency=2, batch_size=1000)

    @classmethod
    def path_params(cls, raw: dict) -> tuple[str, ...]:
        """The index folders (``index.read``, ``index.write``) are paths."""
        return ("index.write", "index.read")

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
            self._hashers[ngram] = MinHasher(num_perm=p.num_perm, seed=p.seed, hash=p.hash, ngram=ngram,
                                             normalize=p.normalize, fold_diacritics=p.fold_diacritics)
        return self._hashers[ngram]

    @classmethod
    def columns_needed(cls, params: MinHashParams) -> dict:
        """``keep: quality_score`` reads the score a quality stage before this one adds."""
        return {"quality_score": pa.float64()} if params.keep == "quality_score" else {}

    def shuffle_columns(self) -> list[str]:
        """The columns the global step reads back (never the text)."""
        extra = ["quality_score"] if self.params.keep == "quality_score" else []
        extra += [SIGNATURE_COLUMN] if self.params.verify else []
        extra += [SKETCH_COLUMN] if self.params.guard else []
        return ["row_key", "id", "source", "url", BANDS_COLUMN, *extra]

    # -- streamed -----------------------------------------------------------------------------------
    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        langs = batch["language"] if "language" in batch.column_names else pa.nulls(n, pa.string())
        langs = langs.combine_chunks() if isinstance(langs, pa.ChunkedArray) else langs
        uniq = pc.unique(langs)
        codes = pc.fill_null(pc.index_in(langs, uniq, skip_nulls=False), 0).to_numpy(zero_copy_only=False)
        keys = np.zeros((n, self.bands), np.uint64)
        keep_sigs = self.params.verify or self.params.guard
        sigs_all = np.zeros((n, self.params.num_perm), np.uint64) if keep_sigs else None
        empty = np.ones(n, bool)
        for (mode, tokenizer, ngram), members in self._by_shingling(uniq.to_pylist()).items():
            idx = np.flatnonzero(np.isin(codes, members))
            sigs, no_shingle = self._hasher(ngram).signatures(batch["text"].take(pa.array(idx)), mode=mode,
                                                              tokenizer=tokenizer)
            # a document without shingles gets no band at all (set to null below), so it never matches
            keys[idx] = band_keys(sigs, np.zeros(len(idx), bool), self.bands, self.rows)
            if sigs_all is not None:
                sigs_all[idx] = sigs
            empty[idx] = no_shingle
        if self.params.scope == "language":
            salts = np.array([_language_salt(lang) for lang in uniq.to_pylist()], np.uint64)
            keys ^= salts[codes][:, None]
        for name in ("source", "url"):            # what the loss tables read; a reader always sets them
            if name not in batch.column_names:
                batch = set_column(batch, name, pa.nulls(n, pa.string()))
        batch = set_column(batch, BANDS_COLUMN, self._band_lists(keys.view(np.int64), empty, pa.int64()))
        if self.params.verify:
            batch = set_column(batch, SIGNATURE_COLUMN, self._band_lists(sigs_all, empty, pa.uint64()))
        if self.params.guard:
            batch = set_column(batch, SKETCH_COLUMN, sketch_column(sigs_all, empty))
        return set_column(batch, CLUSTER_SIZE, pa.array(np.ones(n, np.int32), pa.int32()))

    def _by_shingling(self, languages: list) -> dict[tuple, list[int]]:
        """Positions in ``languages`` per (mode, tokenizer, n-gram length) of their shingles."""
        groups: dict[tuple, list[int]] = {}
        for i, lang in enumerate(languages):
            lp = self.languages.get(lang) if self.languages is not None else None
            tok = lp.word_tokenizer if lp is not None else "whitespace"
            key = ("word", tok, self.params.ngram) if tok == "whitespace" else ("char", tok, lp.minhash_char_ngram)
            groups.setdefault(key, []).append(i)
        return groups

    @staticmethod
    def _band_lists(values: np.ndarray, empty: np.ndarray, typ: pa.DataType) -> pa.Array:
        """An (n, k) array as a list column; null for documents without shingles."""
        n, k = values.shape
        flat = pa.array(values.reshape(-1), typ)
        offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32), pa.int32())
        return pc.if_else(pa.array(empty), pa.scalar(None, pa.list_(typ)), pa.ListArray.from_arrays(offsets, flat))

    @classmethod
    def incremental(cls, params: MinHashParams, folder: str) -> MinHashParams:
        return params.model_copy(update={"index": params.index.or_default(folder)})

    def external_state(self, run_id: str) -> list:
        """The band indexes this run reads (their committed runs, but for its own)."""
        return run_start_state(self.params.index, self.name, run_id)

    # -- global ----------------------------------------------------------------------------------
    def global_step(self, ops, keys) -> tuple[object, dict]:
        """Decisions (row_key, reject_reason, dup_cluster_size, chunk) for every document in a
        component of two or more, and the step's figures: rounds, candidate edges (from the band
        buckets), star edges at the fixpoint (one per document in a component but its center),
        indexed runs read, hubs spread over several calls and the most rows one of them had."""
        band_rows = ops.map(keys, explode_bands)
        merged = compact(ops, self.params.index.write, exclude=ops.run_id, nodes=True) if self.params.index.write else {}
        folders = index_folders(self.params.index.read, exclude=ops.run_id)
        indexed = [ops.map(ops.read_parquet(files), indexed_rows, run_no=i, own=own_position(f, ops.run_id))
                   for i, f in enumerate(folders) if (files := f.files())]
        owners = []
        if indexed:
            index = ops.materialize(ops.union(indexed))
            band_rows = ops.union([band_rows, ops.map(index, _select, columns=["node", "band"])])
            owners = [ops.map(index, _select, columns=["label", "indexed_id", "indexed_sketch"])]
        hubs = HubLog()
        edges = candidate_edges(ops, band_rows, self.params.hub_degree, hubs)
        if self.params.verify:
            edges = verified_edges(ops, edges, ops.map(keys, _select, columns=["node", SIGNATURE_COLUMN]),
                                   self.params.verify)
        counts: dict[int, int] = {}
        stars, rounds = connected_components(ops, edges, self.params.max_rounds, on_round=counts.__setitem__,
                                             hub_degree=self.params.hub_degree, log=hubs)
        members = ops.map(keys, member_rows, columns=self.shuffle_columns())
        labeled = ops.partition_map([ops.map(stars, star_labels), members], "node", attach_labels)
        decisions = ops.materialize(decide(ops, labeled, owners, self.params.keep, self.params.hub_degree, log=hubs,
                                           guard=self.params.guard, hops=self.params.guard_hops))
        reported = self._reported(ops, keys, decisions)      # fails here, before any index is written
        if self.params.index.write:
            self._write_index(ops, keys, decisions)
        return ops.map(decisions, _select, columns=DECISIONS.names), {
            "rounds": rounds, "candidate_edges": counts[0], "star_edges": counts[rounds],
            **index_figures(folders, ops.run_id), **merged, "hubs_spread": hubs.spread, "largest_hub": hubs.largest,
            **reported}

    def _reported(self, ops, keys, decisions) -> dict:
        """The largest clusters, the guard's checks and the sources that lost the largest share
        (``losses.py``); raises ``SourceRemovalAlarm`` when one lost more than max_source_removal."""
        p = self.params
        out = {"largest_clusters": largest_clusters(ops, decisions, p.report_top)}
        if p.guard:
            out["guard"] = guard_figures(ops, decisions, p.guard, p.guard_hops)
        losses = source_losses(ops, keys, decisions, p.report_top, p.source_min_docs, p.max_source_removal)
        out["source_losses"] = losses
        if p.max_source_removal is not None and losses["over"]:
            raise SourceRemovalAlarm(p.max_source_removal, p.source_min_docs, losses["over"])
        return out

    def _write_index(self, ops, keys, decisions) -> None:
        """This run's kept documents' band keys under index.write (committed by a marker)."""
        folder = run_folder(self.params.index.write, ops.run_id)
        store = Storage(folder)
        store.rm(store.root)
        columns = ["node", "id", BANDS_COLUMN] + ([SKETCH_COLUMN] if self.params.guard else [])
        rows = ops.partition_map([ops.map(keys, _select, columns=columns), decisions], "node", keep_rows)
        ops.write_parquet(rows, folder)
        commit_marker(store)


class SourceRemovalAlarm(GlobalStepError):
    """A source lost more of its documents to near-duplicate removal than max_source_removal allows."""

    def __init__(self, limit: float, min_docs: int, over: list[dict]):
        shown = "; ".join(f"{o['kind']} {o['name']}: {o['removed']:,} of {o['docs']:,} ({o['share']:.1%})"
                          for o in over[:10])
        more = f" and {len(over) - 10} more" if len(over) > 10 else ""
        super().__init__(f"minhash_dedup would remove more than max_source_removal={limit:g} of a source's documents "
                         f"(sources of >= {min_docs} documents): {shown}{more}. Nothing was committed; check the "
                         f"largest clusters (a template or a chain), raise the limit, or set guard higher")
        self.over = over


def _select(table: pa.Table, columns: list[str]) -> pa.Table:
    return table.select(columns)


def _rename(table: pa.Table, names: list[str]) -> pa.Table:
    return table.rename_columns(names)


def verified_edges(ops, edges, signatures, threshold: float):
    """Candidate edges whose two documents' signatures agree on at least ``threshold`` of their
    values: two shuffles, one to bring each edge's first signature, one for its second. An edge
    to an indexed document of an earlier run (no signature here) is kept."""
    first = ops.partition_map([edges, ops.map(signatures, _rename, names=["u", "sig_u"])], "u", _attach, side="u")
    return ops.partition_map([first, ops.map(signatures, _rename, names=["v", "sig_v"])], "v", _attach, side="v",
                             threshold=threshold)


def _attach(edges: Optional[pa.Table], sigs: Optional[pa.Table], side: str, threshold: float = 0.0) -> pa.Table:
    """Edges with the signature of their ``side`` node (null where none); on the second side, only
    the edges that pass ``threshold``."""
    from .components import EDGES

    if edges is None or edges.num_rows == 0:
        return EDGES.empty_table() if side == "v" else pa.table({"u": pa.array([], pa.int64()), "v": pa.array([], pa.int64()),
                                                                   "sig_u": pa.array([], pa.list_(pa.uint64()))})
    name = f"sig_{side}"
    if sigs is not None and sigs.num_rows:
        pos = pc.index_in(edges[side], sigs[side])  # a node has one signature (list columns cannot be joined)
        edges = edges.append_column(name, pc.take(sigs[name], pos))
    else:
        edges = edges.append_column(name, pa.nulls(edges.num_rows, pa.list_(pa.uint64())))
    if side == "u":
        return edges.select(["u", "v", "sig_u"])
    return edges.filter(_passes(edges["sig_u"], edges["sig_v"], threshold)).select(["u", "v"]).cast(EDGES)


def _passes(a: pa.ChunkedArray, b: pa.ChunkedArray, threshold: float) -> pa.Array:
    """True where the two signatures agree on >= threshold of their values, or one is missing."""
    a, b = a.combine_chunks(), b.combine_chunks()
    known = pc.and_(pc.is_valid(a), pc.is_valid(b)).to_numpy(zero_copy_only=False)
    ok = np.ones(len(a), bool)
    if known.any():
        idx = np.flatnonzero(known)
        sa = np.stack(a.take(pa.array(idx)).to_numpy(zero_copy_only=False))
        sb = np.stack(b.take(pa.array(idx)).to_numpy(zero_copy_only=False))
        ok[idx] = (sa == sb).mean(axis=1) >= threshold
    return pa.array(ok)


def explode_bands(keys: pa.Table) -> pa.Table:
    """Key rows -> one (node, band) row per band of each document that has bands."""
    return band_rows(keys, BANDS_COLUMN, ["node"]).cast(BAND_ROWS)


def member_rows(keys: pa.Table, columns: list[str]) -> pa.Table:
    """What choosing the kept document needs of each row: node, row_key, id (+ quality)."""
    return keys.select(["node"] + [c for c in columns if c not in (BANDS_COLUMN, SIGNATURE_COLUMN)])


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
