"""``mix.json`` and ``mix.html``: what the mix asked for and what it wrote, per source.

Built on the driver from the plan (the metadata pass's sums) and the shard tasks' statistics; no
shard is read. Per source: the target and the actual tokens and documents (and how far apart),
the epoch factor (whole epochs and the deterministic remainder, or a subsample), the histogram of
upsampling factors, the languages; then the files written.
"""
from __future__ import annotations

import html as _html


def build(cfg, plan: dict, shard_stats: list[dict], tok, seconds: float) -> dict:
    actual = {}
    for s in shard_stats:
        for src, (docs, toks) in s["sources"].items():
            a = actual.setdefault(int(src), [0, 0])
            a[0] += docs
            a[1] += toks
    sources = []
    for i, (src, p) in enumerate(zip(cfg.sources, plan["sources"])):
        docs, toks = actual.get(i, [0, 0])
        target = p["target_tokens"]
        factor = p["factor"]
        sources.append({
            "name": src.name, "path": src.path, "folder": src.folder, "weight": src.weight,
            "target_tokens": int(target) if target is not None else None,
            "tokens": toks, "documents": docs,
            "off_target": round(toks / target - 1, 6) if target else None,
            "epoch_factor": round(factor, 6), "whole_epochs": p["epochs"],
            "mode": "all once" if target is None else "repeated" if factor > 1 else "subsampled" if factor < 1 else "once",
            "selected_documents": p["selected_docs"], "selected_tokens": p["selected_tokens"],
            "upsampled_documents": p["upsampled_docs"], "upsampled_tokens": p["upsampled_tokens"],
            "upsample": src.upsample.model_dump() if src.upsample else None,
            "upsample_factors": {k: v for k, v in sorted(p["factors"].items(), key=lambda kv: int(kv[0]))},
            "languages": [[k, d, t] for k, (d, t) in sorted(p["languages"].items(), key=lambda kv: -kv[1][1])],
        })
    files = [f for s in shard_stats for f in s["files"]]
    return {"name": cfg.name, "output": cfg.output.path, "format": cfg.output.format,
            "tokenizer": cfg.tokenizer.model_dump(), "vocab_size": tok.vocab_size, "dtype": str(tok.dtype),
            "eos": cfg.eos, "eos_id": tok.eos_id if cfg.eos else None, "seed": cfg.seed, "shuffle": cfg.shuffle,
            "target_tokens": cfg.target_tokens, "tokens": sum(s["tokens"] for s in shard_stats),
            "documents": sum(s["docs"] for s in shard_stats), "shards": len(shard_stats),
            "seconds": round(seconds, 2), "sources": sources, "files": files,
            "note": "budgets count num_tokens (+1 EOS) as the curation counted them; tokens and documents are "
                    "what the mix wrote with its tokenizer"}


def html(summary: dict) -> str:
    esc = _html.escape
    rows = []
    for s in summary["sources"]:
        factors = ", ".join(f"x{k}: {v:,}" for k, v in s["upsample_factors"].items())
        langs = ", ".join(f"{k} {t:,}" for k, _, t in s["languages"][:8])
        target = f"{s['target_tokens']:,}" if s["target_tokens"] is not None else "all"
        off = f"{100 * s['off_target']:+.2f}%" if s["off_target"] is not None else ""
        rows.append(f"<tr><td>{esc(s['name'])}</td><td>{target}</td><td>{s['tokens']:,} {off}</td>"
                    f"<td>{s['documents']:,}</td><td>{esc(s['mode'])} (x{s['epoch_factor']:.4f})</td>"
                    f"<td>{esc(factors)}</td><td>{esc(langs)}</td></tr>")
    files = "".join(f"<tr><td>{esc(f['path'])}</td><td>{f['bytes']:,}</td><td>{f['docs']:,}</td>"
                    f"<td>{f['tokens']:,}</td></tr>" for f in summary["files"])
    return f"""<!doctype html><meta charset="utf-8"><title>mix {esc(summary['name'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}</style>
<h1>mix {esc(summary['name'])}</h1>
<p>{summary['documents']:,} documents, {summary['tokens']:,} tokens ({esc(summary['format'])}, {esc(summary['dtype'])},
EOS {summary['eos_id']}) in {summary['shards']} shard(s), seed {summary['seed']}, {summary['seconds']} s.</p>
<h2>Sources</h2><table><tr><th>source</th><th>target tokens</th><th>tokens written</th><th>documents</th>
<th>budget</th><th>upsampling factors (documents)</th><th>languages (tokens)</th></tr>{''.join(rows)}</table>
<h2>Files</h2><table><tr><th>file</th><th>bytes</th><th>documents</th><th>tokens</th></tr>{files}</table>
<p>{esc(summary['note'])}</p>
"""
