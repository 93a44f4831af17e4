"""The metadata pass and the mix plan: what each source has, and how many times each document goes in.

``source_stats`` runs on the executor over blocks of files and reads only the metadata columns
(``num_tokens``, the key, the filter and upsampling columns; never the text). It returns sums that
merge by addition: per source, upsampled tokens and documents per selection bucket, documents per
upsampling factor, tokens per language. ``solve`` turns those sums into the plan (per source: whole
epochs, the remainder's bucket threshold, the expected tokens) on the driver; the plan is a few KB
whatever the corpus size.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.worker import read_parquet_file
from tokenmill.mix.repeats import BUCKETS, repeats_of, row_hashes, solve_source, upsample_factors
from tokenmill.mix.sources import TOKENS, needed_columns

STATS_SCHEMA = pa.schema([("source", pa.int32()), ("kind", pa.string()), ("key", pa.string()),
                          ("docs", pa.int64()), ("tokens", pa.int64())])


def selected(table: pa.Table, src) -> pa.Table:
    """The rows a source's filters keep (a null language or score fails a filter)."""
    mask = None
    if src.languages:
        mask = pc.fill_null(pc.is_in(table["language"], pa.array(src.languages, pa.string())), False)
    if src.min_quality_score is not None:
        q = pc.fill_null(pc.greater_equal(table["quality_score"].cast(pa.float64()), src.min_quality_score), False)
        mask = q if mask is None else pc.and_(mask, q)
    return table if mask is None else table.filter(mask)


def doc_tokens(table: pa.Table, eos: bool) -> np.ndarray:
    n = np.asarray(pc.fill_null(table[TOKENS], 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return n + int(eos)


def read_selected(url: str, src, key_column: str, extra: list[str] = ()) -> pa.Table:
    columns = list(dict.fromkeys([key_column, *needed_columns(src), *extra]))
    return selected(read_parquet_file(url, columns), src)


def source_stats(items: pa.Table, *, sources: list, key_columns: list[str], languages: list[bool], seed: int,
                 eos: bool) -> pa.Table:
    """Sums for the files of one block of tasks (``urls``, ``sources``)."""
    out = []
    pairs = [(u, s) for us, ss in zip(items["urls"].to_pylist(), items["sources"].to_pylist()) for u, s in zip(us, ss)]
    for url, s in pairs:
        src = sources[s]
        try:
            table = read_selected(url, src, key_columns[s], ["language"] if languages[s] else [])
        except Exception as e:   # a cut or foreign file: the mix must not go on without its documents
            out.append(_rows(s, "bad_file", [f"{url}: {type(e).__name__}: {str(e)[:300]}"], [0], [0]))
            continue
        nulls = table[TOKENS].null_count
        if nulls:
            out.append(_rows(s, "null_tokens", [url], [nulls], [0]))
        factors = upsample_factors(table, src.upsample)
        buckets, _ = row_hashes(table[key_columns[s]], src.name, seed)
        tokens = doc_tokens(table, eos)
        per_bucket_tokens = np.bincount(buckets, weights=factors * tokens, minlength=BUCKETS)
        per_bucket_docs = np.bincount(buckets, weights=factors, minlength=BUCKETS)
        nz = np.flatnonzero(per_bucket_docs)
        out.append(_rows(s, "bucket", nz.tolist(), per_bucket_docs[nz], per_bucket_tokens[nz]))
        f_values, f_counts = np.unique(factors, return_counts=True)
        out.append(_rows(s, "factor", f_values.tolist(), f_counts, np.zeros(len(f_values))))
        if "language" in table.column_names:
            langs = table.select(["language"]).append_column("t", pa.array(tokens - int(eos)))
            agg = langs.group_by("language").aggregate([("t", "sum"), ("t", "count")])
            out.append(_rows(s, "language", agg["language"].to_pylist(), agg["t_count"].to_numpy(),
                             agg["t_sum"].to_numpy()))
        out.append(_rows(s, "rows", ["read"], [table.num_rows], [int((tokens - int(eos)).sum())]))
    return pa.concat_tables(out) if out else STATS_SCHEMA.empty_table()


def _rows(source: int, kind: str, keys, docs, tokens) -> pa.Table:
    n = len(keys)
    return pa.table({"source": pa.array([source] * n, pa.int32()), "kind": pa.array([kind] * n, pa.string()),
                     "key": pa.array([str(k) for k in keys], pa.string()),
                     "docs": pa.array(np.asarray(docs, dtype=np.int64)), "tokens": pa.array(np.asarray(tokens).astype(np.int64))},
                    schema=STATS_SCHEMA)


def source_targets(cfg, available: list[float]) -> list[float | None]:
    """Each source's token target: ``tokens``, or its weight's share of what ``target_tokens``
    leaves after the absolute budgets; None without a target (every selected document once)."""
    if cfg.target_tokens is None:
        return [s.tokens for s in cfg.sources]
    left = cfg.target_tokens - sum(s.tokens or 0 for s in cfg.sources)
    weights = sum(s.weight or 0 for s in cfg.sources)
    out = []
    for s in cfg.sources:
        out.append(float(s.tokens) if s.tokens else left * s.weight / weights if s.weight else None)
    return out


def solve(cfg, stats: pa.Table) -> dict:
    """The plan: per source its totals, epochs and remainder threshold, and the shard count."""
    by = {}
    for row in stats.to_pylist():
        by.setdefault((row["source"], row["kind"]), []).append(row)
    available = []
    for i in range(len(cfg.sources)):
        tok = np.zeros(BUCKETS)
        for r in by.get((i, "bucket"), []):
            tok[int(r["key"])] += r["tokens"]
        available.append(tok)
    targets = source_targets(cfg, [float(t.sum()) for t in available])
    plan_sources, total = [], 0.0
    for i, src in enumerate(cfg.sources):
        tok = available[i]
        docs = np.zeros(BUCKETS)
        for r in by.get((i, "bucket"), []):
            docs[int(r["key"])] += r["docs"]
        epochs, threshold, factor = solve_source(tok, targets[i])
        expected = epochs * tok.sum() + tok[:threshold].sum()
        total += expected
        read = by.get((i, "rows"), [])
        plan_sources.append({
            "name": src.name, "target_tokens": targets[i], "epochs": epochs, "threshold": threshold,
            "factor": factor, "selected_docs": sum(r["docs"] for r in read),
            "selected_tokens": sum(r["tokens"] for r in read),
            "upsampled_docs": int(docs.sum()), "upsampled_tokens": int(tok.sum()),
            "expected_tokens": int(expected), "expected_docs": int(epochs * docs.sum() + docs[:threshold].sum()),
            "null_tokens": _summed(by.get((i, "null_tokens"), []), "docs"),
            "bad_files": sorted(r["key"] for r in by.get((i, "bad_file"), [])),
            "factors": _summed(by.get((i, "factor"), []), "docs"),
            "languages": {k: [d, _summed(by.get((i, "language"), []), "tokens")[k]]
                          for k, d in _summed(by.get((i, "language"), []), "docs").items()},
        })
    ranges = max(1, math.ceil(total / (0.8 * cfg.output.max_tokens_per_file)))
    return {"sources": plan_sources, "ranges": ranges, "expected_tokens": int(total)}


def _summed(rows: list[dict], field: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["key"]] = out.get(r["key"], 0) + r[field]
    return out


def plan_errors(cfg, plan: dict) -> list[tuple[str, str]]:
    """What the metadata pass found that makes the mix impossible as configured (exit 2)."""
    errors = []
    for i, (src, p) in enumerate(zip(cfg.sources, plan["sources"])):
        for bad in p["bad_files"]:
            errors.append((f"sources[{i}].path", f"cannot read {bad} (repair or remove it)"))
        if p["null_tokens"]:
            files = ", ".join(list(p["null_tokens"])[:3])
            errors.append((f"sources[{i}].path", f"{sum(p['null_tokens'].values())} documents have no num_tokens "
                           f"(e.g. in {files}): curate with a tokenizer (tokenizer.kind none leaves it empty)"))
        if p["bad_files"]:
            continue
        if p["selected_docs"] == 0:
            at = ("languages" if src.languages else "min_quality_score" if src.min_quality_score is not None else "path")
            errors.append((f"sources[{i}].{at}", "selects no document"))
        elif p["upsampled_docs"] == 0:
            errors.append((f"sources[{i}].upsample", "gives every selected document 0 repeats"))
    return errors


def doc_repeats(table: pa.Table, src, key_column: str, seed: int, plan_source: dict) -> tuple[np.ndarray, np.ndarray]:
    """(repeats, order base) of each selected row, as the plan decides."""
    factors = upsample_factors(table, src.upsample)
    buckets, base = row_hashes(table[key_column], src.name, seed)
    return repeats_of(factors, buckets, plan_source["epochs"], plan_source["threshold"]), base
