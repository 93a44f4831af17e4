"""The rephrase stage's two row steps around the model, pure Arrow/Python (no backend):

- ``requests``: the selected live documents -> one request row per (document, chunk): the
  document's row with the style drawn for it, the prompt version, the chunk, the chat messages
  (JSON) and the request's seed.
- ``documents``: request rows with their generations -> the synthetic documents, one per
  generation (one per pair for a ``split: qa`` style), with provenance (``source_id``, ``style``,
  ``model``, ``prompt_version``, ``chunk_index``) and the model's token counts; a failed or
  unusable generation becomes a row with a ``reject_reason``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .assign import chunks, styles_for
from .postprocess import qa_pairs, reject_reason, strip_preamble
from .styles import Style

REQUEST_FIELDS = {"rq_style": pa.string(), "rq_version": pa.int32(), "rq_chunk_index": pa.int32(),
                  "rq_piece": pa.large_string(), "rq_messages": pa.large_string(), "rq_seed": pa.int64()}
GENERATION_FIELDS = {"gen_text": pa.large_string(), "gen_input_tokens": pa.int64(), "gen_output_tokens": pa.int64(),
                     "gen_finish": pa.string(), "gen_error": pa.string()}
#: the columns a synthetic document carries besides the core ones
PROVENANCE = {"source_id": pa.string(), "style": pa.string(), "model": pa.string(), "prompt_version": pa.int32(),
              "chunk_index": pa.int32(), "gen_input_tokens": pa.int64(), "gen_output_tokens": pa.int64()}
#: a request that failed after its retries: the reason carries the error (reported as generation_failed)
FAILED = "generation_failed: "
#: the source's columns a synthetic document inherits (the rest describe the source, not it)
INHERITED = ("source", "url", "meta", "language")


def selected(live: pa.Table, select) -> np.ndarray:
    """Indices of the live rows to rephrase."""
    keep = pc.greater_equal(pc.fill_null(live["num_tokens"], 0), select.min_tokens)
    if select.min_quality_score is not None:
        score = live["quality_score"] if "quality_score" in live.column_names else pa.nulls(live.num_rows, pa.float64())
        keep = pc.and_(keep, pc.fill_null(pc.greater_equal(score, select.min_quality_score), False))
    if select.languages is not None:
        keep = pc.and_(keep, pc.is_in(pc.fill_null(live["language"], "und"), pa.array(select.languages, pa.string())))
    return np.flatnonzero(keep.to_numpy(zero_copy_only=False))


def request_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}|{key}".encode(), digest_size=4).digest(), "little")


def requests(live: pa.Table, p, styles: dict[str, Style], count: Callable[[str], int],
             language_name: Callable[[str], str], stage: str = "rephrase") -> pa.Table:
    """One request row per (selected document, chunk), in document order: the source's id, row key
    and inherited columns, and the request's own (``REQUEST_FIELDS``)."""
    idx = selected(live, p.select)
    own = [c for c in live.column_names if c in PROVENANCE or c in REQUEST_FIELDS or c in GENERATION_FIELDS]
    rows = live.drop_columns(own).take(pa.array(idx, pa.int64()))
    keys = rows["row_key"].to_pylist()
    scores = None
    if p.route_by:
        scores = pc.fill_null(rows[p.route_by], float("nan")).to_numpy(zero_copy_only=False).astype(np.float64) \
            if p.route_by in rows.column_names else np.full(rows.num_rows, np.nan)
    drawn = styles_for(keys, p.styles, p.sampling.seed, scores,
                       [(r.min, r.styles) for r in p.routes] if p.route_by else None)
    src, cols = [], {name: [] for name in REQUEST_FIELDS}
    for i, (key, text, lang, style) in enumerate(zip(keys, rows["text"].to_pylist(), rows["language"].to_pylist()
                                                     if "language" in rows.column_names else [None] * len(keys), drawn)):
        st = styles[style]
        for ci, piece in enumerate(chunks(text or "", p.max_input_tokens, count)):
            src.append(i)
            for name, value in zip(REQUEST_FIELDS, (style, st.version, ci, piece,
                                                    json.dumps(st.messages(piece, language_name(lang or "und"))),
                                                    request_seed(p.sampling.seed, f"{key}#{stage}#{ci}"))):
                cols[name].append(value)
    keep = ["id", "row_key", *(c for c in INHERITED if c in rows.column_names)]
    out = rows.select(keep).take(pa.array(src, pa.int64()))
    for name, typ in REQUEST_FIELDS.items():
        out = out.append_column(name, pa.array(cols[name], typ))
    return out


def with_generations(reqs: pa.Table, gens) -> pa.Table:
    """Request rows with their ``Generation`` s as columns."""
    values = {"gen_text": [g.text for g in gens], "gen_input_tokens": [g.input_tokens for g in gens],
              "gen_output_tokens": [g.output_tokens for g in gens], "gen_finish": [g.finish_reason for g in gens],
              "gen_error": [g.error for g in gens]}
    for name, typ in GENERATION_FIELDS.items():
        reqs = reqs.append_column(name, pa.array(values[name], typ))
    return reqs


def _outputs(row: dict, style: Style, p) -> list[tuple[str, str | None]]:
    """(text, reject reason) of each synthetic document one generation makes."""
    if row.get("gen_error"):
        return [(row.get("gen_text") or "", f"{FAILED}{row['gen_error'][:300]}")]
    text = strip_preamble(row.get("gen_text") or "")
    finish = row.get("gen_finish") if p.reject_truncated else None
    reason = reject_reason(text, row["rq_piece"], finish, p.min_chars, p.max_copy)
    if reason or style.split != "qa":
        return [(text, reason)]
    pairs = qa_pairs(text)
    return [(pair, None) for pair in pairs] if pairs else [(text, "no_qa_pairs")]


def documents(gen: pa.Table, p, styles: dict[str, Style], model_name: str, stage: str = "rephrase") -> pa.Table:
    """The synthetic documents of generated request rows (rejected ones with their reason). The
    row key names the stage too, so two rephrase stages never make the same key."""
    src, cols = [], {n: [] for n in ("id", "row_key", "text", "reject_reason", *PROVENANCE)}
    used = ["id", "row_key", *(c for c in (*REQUEST_FIELDS, *GENERATION_FIELDS) if c != "rq_messages")]
    for i, row in enumerate(gen.select(used).to_pylist()):
        style = styles[row["rq_style"]]
        outs = _outputs(row, style, p)
        for k, (text, reason) in enumerate(outs):
            suffix = f"#{row['rq_style']}-{row['rq_chunk_index']}" + (f"-{k}" if len(outs) > 1 else "")
            first = k == 0
            src.append(i)
            for name, value in (("id", f"{row['id']}{suffix}"), ("row_key", f"{row['row_key']}#{stage}{suffix}"),
                                ("text", text), ("reject_reason", reason), ("source_id", row["id"]),
                                ("style", row["rq_style"]), ("model", model_name), ("prompt_version", row["rq_version"]),
                                ("chunk_index", row["rq_chunk_index"]),
                                ("gen_input_tokens", row.get("gen_input_tokens") if first else 0),
                                ("gen_output_tokens", row.get("gen_output_tokens") if first else 0)):
                cols[name].append(value)
    base = gen.select([c for c in INHERITED if c in gen.column_names]).take(pa.array(src, pa.int64()))
    types = {"id": pa.string(), "row_key": pa.string(), "text": pa.large_string(), "reject_reason": pa.string(), **PROVENANCE}
    for name, values in cols.items():
        base = base.append_column(name, pa.array(values, types[name]))
    return base
