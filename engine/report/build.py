"""The run report: report.json (funnel per stage, reject reasons, languages, files, timings),
report.html (the same at a glance, as inline SVG charts) and the end-of-run summary.

Counts come from the write-time statistics of the final write (``engine/stats.py``), kept in the
manifest with the files they describe, so the report agrees with what is on disk without
re-reading it; stage timings come from the executor's metrics.
"""
from __future__ import annotations

import html
import sys

from tokenmill.engine.counts import CHARS_REMOVED, DOCS_MODIFIED, TOKENS_REMOVED
from tokenmill.engine.durable.manifest import file_counts
from tokenmill.engine.io.readers import READ_STAGE
from tokenmill.engine.report.generated import generated_html, generated_report
from tokenmill.engine.report.measures import measures_html, report_measures, svg_bars
from tokenmill.engine.report.stats import WriteStats


def _zero() -> dict:
    return {"docs": 0, "chars": 0, "tokens": 0}


def build_report(pipeline, manifest: dict, stats: WriteStats, problems, metrics: dict, wall_seconds: float,
                 phase_seconds: dict) -> dict:
    stage_names = [READ_STAGE] + [rs.name for rs in pipeline.stages]
    rejected = {s: _zero() for s in stage_names}
    reasons: dict[str, dict] = {}
    lang_rejected: dict[str, int] = {}
    for (stage, reason, lang), (docs, chars, tokens) in stats.rejected.items():
        d = rejected.setdefault(stage, _zero())
        d["docs"] += docs
        d["chars"] += chars
        d["tokens"] += tokens
        rr = reasons.setdefault(f"{stage}:{reason}", {"stage": stage, "reason": reason, "docs": 0, "tokens": 0})
        rr["docs"] += docs
        rr["tokens"] += tokens
        if lang:
            lang_rejected[lang] = lang_rejected.get(lang, 0) + docs
    kept = {u: sum(v[i] for v in stats.kept.values()) for i, u in enumerate(("docs", "chars", "tokens"))}
    modified = _modified(stats)
    total = {k: kept[k] + sum(v[k] for v in rejected.values()) + sum(m[k] for m in modified.values()) for k in kept}
    return {
        "name": pipeline.config.name,
        "size_unit": "chars" if pipeline.config.tokenizer.kind == "none" else "tokens",
        "fingerprint": manifest["fingerprint"],
        "language_files": {"folder": pipeline.languages.folder,
                           "languages": len(pipeline.languages.languages_with_files())},
        "extractor": pipeline.config.input.extractor,   # HTML to text of WARC responses
        "wall_seconds": round(wall_seconds, 2),
        "phase_seconds": {k: round(v, 2) for k, v in phase_seconds.items()},
        "shuffle_bytes": (metrics or {}).get("shuffle_bytes"),
        "global_steps": (metrics or {}).get("global_steps", {}),
        "input": total,
        "output": kept,
        "stages": _funnel(stage_names, total, rejected, modified, (metrics or {}).get("stages", {})),
        "stage_counts": _stage_counts(pipeline, stats),
        "reject_reasons": sorted(reasons.values(), key=lambda x: (-x["docs"], x["stage"], x["reason"])),
        "languages": sorted(({"language": lang, "docs": v[0], "chars": v[1], "tokens": v[2],
                              "rejected_docs": lang_rejected.get(lang, 0)} for lang, v in stats.kept.items()),
                            key=lambda x: (-x["tokens"], -x["chars"], x["language"])),
        "file_errors": stats.file_errors + [{"path": p, "kind": "input", "error": e} for p, e in problems],
        "quality_scores": _quality_scores(pipeline, stats, (metrics or {}).get("global_steps", {})),
        "generated": generated_report(pipeline, stats, phase_seconds),
        "files": _file_counts(manifest),
        "examples": _examples(stats),
        "measures": report_measures(pipeline, stats),
    }


def _examples(stats: WriteStats) -> dict:
    """Up to 5 documents per reject reason and per kept language (the smallest ids; id, url,
    language, the first 300 characters, the raw reason): ``tokenmill inspect`` prints more."""
    return {"rejected": [{"stage": k[0], "reason": k[1], "examples": v} for k, v in sorted(stats.rejected_examples.items())],
            "kept": [{"language": k[0], "examples": v} for k, v in sorted(stats.kept_examples.items())]}


def _file_counts(manifest: dict) -> dict[str, int]:
    """Files per output folder: over every run of a sharded (incremental) manifest."""
    counts = manifest.get("file_counts") or file_counts(manifest.get("files", []))
    return {folder: counts.get(folder, 0) for folder in sorted(set(counts) | {"data", "rejects"})}


def _quality_scores(pipeline, stats: WriteStats, global_steps: dict) -> dict:
    """Histograms of the score column per language, with each language's threshold as the stages
    say (``Stage.score_thresholds``: a fixed threshold, or the cut a global step chose; ``*``: every
    language)."""
    if not stats.scores:
        return {}
    thresholds: dict = {}
    for rs in pipeline.stages:
        marks = rs.cls.score_thresholds(rs.params, global_steps.get(rs.name, {}))
        for lang in stats.scores:
            t = marks.get(lang, marks.get("*"))
            if t is not None:
                thresholds[lang] = t
    return {"bins": len(next(iter(stats.scores.values()))), "languages": dict(sorted(stats.scores.items())),
            "thresholds": thresholds}


def _histogram(counts: list[int], threshold, width: int = 300, height: int = 80) -> str:
    """An SVG histogram over [0, 1] with the threshold as a red line."""
    parts = [f'<svg width="{width}" height="{height + 14}" role="img">', *svg_bars(counts, width, height)]
    if threshold is not None:
        x = min(width, threshold * width)
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#d9534f" stroke-width="2"/>')
    parts.append(f'<text x="0" y="{height + 12}" font-size="10">0</text>'
                 f'<text x="{width - 8}" y="{height + 12}" font-size="10">1</text></svg>')
    return "".join(parts)


def _quality_section(q: dict) -> str:
    if not q:
        return ""
    langs = sorted(q["languages"].items(), key=lambda kv: -sum(kv[1]))[:12]
    cells = "".join(f"<div style='display:inline-block;margin:0 1em 1em 0'><b>{html.escape(lang)}</b> "
                    f"({sum(c):,} docs; threshold {q['thresholds'].get(lang, '-')})<br>"
                    f"{_histogram(c, q['thresholds'].get(lang))}</div>" for lang, c in langs)
    return f"<h2>Quality scores per language (the red line: the threshold)</h2>{cells}"


def _modified(stats: WriteStats) -> dict[str, dict]:
    """Per modifier: the documents it changed (they stay in the funnel), and the characters and
    tokens it removed (net), from the counters the engine keeps for it."""
    out: dict[str, dict] = {}
    for (stage, key), n in stats.counts.items():
        unit = {DOCS_MODIFIED: "docs_modified", CHARS_REMOVED: "chars", TOKENS_REMOVED: "tokens"}.get(key)
        if unit is not None:
            out.setdefault(stage, {"docs": 0, "chars": 0, "tokens": 0, "docs_modified": 0})[unit] += n
    return out


def _stage_counts(pipeline, stats: WriteStats) -> dict:
    """Each stage's summed counters as the stage presents them (``Stage.report_counts``)."""
    out = {}
    for rs in pipeline.stages:
        mine = {key: n for (stage, key), n in stats.counts.items() if stage == rs.name}
        if mine:
            out[rs.name] = rs.cls.report_counts(rs.params, mine)
    return out


def _funnel(stage_names: list[str], total: dict, rejected: dict, modified: dict, metrics: dict) -> list[dict]:
    """Per stage, what went in and came out; a modifier's out is its in less the characters and
    tokens it removed (its documents stay)."""
    funnel, cur = [], dict(total)
    for s in stage_names:
        rj = rejected.get(s, _zero())
        mod = modified.get(s, {"docs": 0, "chars": 0, "tokens": 0, "docs_modified": 0})
        out = {k: cur[k] - rj[k] - mod[k] for k in cur}
        m = metrics.get(s, {})
        busy = m.get("busy_seconds")
        funnel.append({
            "stage": s,
            "docs_in": cur["docs"], "docs_out": out["docs"], "docs_rejected": rj["docs"],
            "chars_in": cur["chars"], "chars_out": out["chars"], "chars_rejected": rj["chars"],
            "tokens_in": cur["tokens"], "tokens_out": out["tokens"], "tokens_rejected": rj["tokens"],
            "docs_modified": mod["docs_modified"], "chars_removed": mod["chars"], "tokens_removed": mod["tokens"],
            "busy_seconds": round(busy, 3) if busy is not None else None,
            "docs_per_second": round(m["rows"] / busy, 1) if busy else None,
        })
        cur = out
    return funnel


def write_report(store, report: dict) -> None:
    store.write_json_atomic(store.path("report.json"), report)
    store.write_text_atomic(store.path("report.html"), render_html(report))


def _bars(rows: list[tuple[str, float, str]], width: int = 640, unit: str = "") -> str:
    if not rows:
        return "<p>none</p>"
    top = max(v for _, v, _ in rows) or 1
    h = 22
    label_w = max(80, 7 * max(len(label) for label, _, _ in rows) + 12)
    parts = [f'<svg width="{width + label_w + 120}" height="{h * len(rows) + 4}" role="img">']
    for i, (label, value, color) in enumerate(rows):
        w = max(1, int(width * value / top)) if value else 0
        y = i * h
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">{html.escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{h - 6}" fill="{color}"/>')
        parts.append(f'<text x="{label_w + w + 6}" y="{y + 15}" font-size="12">{value:,.0f}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _rate(v) -> str:
    return "" if v is None else f"{v:,.0f}"


def render_html(report: dict) -> str:
    unit = report.get("size_unit", "tokens")
    funnel = _bars([(f"{s['stage']} (out)", s[f"{unit}_out"], "#2b7bb9") for s in report["stages"]])
    funnel_docs = _bars([(f"{s['stage']} (out)", s["docs_out"], "#5aa469") for s in report["stages"]])
    reasons = _bars([(f"{r['stage']}: {r['reason']}", r["docs"], "#d9534f") for r in report["reject_reasons"][:25]])
    langs = _bars([(item["language"], item[unit], "#8e6bbf") for item in report["languages"][:30]])
    rows = "".join(
        f"<tr><td>{html.escape(s['stage'])}</td><td>{s['docs_in']:,}</td><td>{s['docs_out']:,}</td>"
        f"<td>{s['docs_rejected']:,}</td><td>{s.get('docs_modified', 0):,}</td><td>{s[f'{unit}_in']:,}</td><td>{s[f'{unit}_out']:,}</td>"
        f"<td>{s.get(f'{unit}_removed', 0):,}</td>"
        f"<td>{_rate(s['docs_per_second'])}</td></tr>"
        for s in report["stages"])
    errs = "".join(f"<li><code>{html.escape(str(e['path']))}</code> ({html.escape(e['kind'])}): {html.escape(str(e['error']))}</li>"
                   for e in report["file_errors"]) or "<li>none</li>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tokenmill report: {html.escape(report['name'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>tokenmill run: {html.escape(report['name'])}</h1>
<p>{report['input']['docs']:,} documents ({report['input'][unit]:,} {unit}) in,
<b>{report['output']['docs']:,} documents ({report['output'][unit]:,} {unit}) kept</b>,
in {report['wall_seconds']:.1f} s. Fingerprint <code>{report['fingerprint'][:12]}</code>.</p>
{"" if unit == "tokens" else "<p>Tokens were not counted (<code>tokenizer.kind: none</code>): sizes are in characters.</p>"}
<h2>Funnel: {unit} after each stage</h2>{funnel}
<h2>Funnel: documents after each stage</h2>{funnel_docs}
<table><tr><th>stage</th><th>docs in</th><th>docs out</th><th>rejected</th><th>changed</th><th>{unit} in</th><th>{unit} out</th><th>{unit} removed by changes</th><th>docs/s per actor</th></tr>{rows}</table>
<h2>Reject reasons (documents)</h2>{reasons}
<h2>Languages kept ({unit})</h2>{langs}
{_quality_section(report.get("quality_scores", {}))}
{_counts_html(report.get("stage_counts", {}))}
{_global_html(report.get("global_steps", {}))}
{measures_html(report.get("measures", {}))}
{generated_html(report.get("generated", {}))}
{_incremental_html(report.get("incremental"), unit)}
<h2>Files that could not be read fully</h2><ul>{errs}</ul>
</body></html>"""


def _counts_html(stage_counts: dict) -> str:
    """What each stage counted (a modifier's changes, PII kinds, eval sets matched), as tables."""
    if not stage_counts:
        return ""
    parts = ["<h2>What stages changed and counted</h2>"]
    for stage, view in stage_counts.items():
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_cell(v))}</td></tr>" for k, v in view.items())
        parts.append(f"<h3>{html.escape(stage)}</h3><table>{rows}</table>")
    return "".join(parts)


def _global_html(steps: dict) -> str:
    """What each global step reported (clusters, removal shares at other thresholds, the largest
    clusters with example documents), a table per step; a table of tables for nested figures."""
    shown = {name: figures for name, figures in steps.items() if figures}
    if not shown:
        return ""
    parts = ["<h2>Global steps</h2>"]
    for name, figures in shown.items():
        parts.append(f"<h3>{html.escape(name)}</h3>{_figures_table(figures)}")
    return "".join(parts)


def _figures_table(figures: dict) -> str:
    rows = []
    for key, value in figures.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            cell = _figures_table(value)          # e.g. removal share at each eps, per language
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            cell = "<ol>" + "".join(f"<li>{html.escape(_cell(v))}</li>" for v in value[:20]) + "</ol>"
        else:
            cell = html.escape(_cell(value))
        rows.append(f"<tr><td>{html.escape(str(key))}</td><td style='text-align:left'>{cell}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _cell(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in list(value.items())[:20])
    if isinstance(value, list):
        return "; ".join(_cell(v) for v in value[:20])
    return f"{value:,}" if isinstance(value, int) else str(value)


def _incremental_html(inc: dict | None, unit: str) -> str:
    """An incremental run's number, the last runs' counts and totals over every run."""
    if not inc:
        return ""
    count = inc.get("run_count", len(inc["runs"]))
    shown = f" (the last {len(inc['runs'])})" if count > len(inc["runs"]) else ""
    rows = "".join(f"<tr><td>{r['run']}</td><td>{r['input_files']:,}</td><td>{r['input_docs']:,}</td>"
                   f"<td>{r['output_docs']:,}</td><td>{r['files_added']:,}</td></tr>" for r in inc["runs"])
    t = inc["totals"]
    return (f"<h2>Incremental: run {inc['run']}{' (finishing a killed run)' if inc['resumed'] else ''}</h2>"
            f"<p>This run took {inc['input_files']:,} input file(s). Over all {count:,} run(s): "
            f"{t['input']['docs']:,} documents ({t['input'][unit]:,} {unit}) in, {t['output']['docs']:,} "
            f"({t['output'][unit]:,} {unit}) kept.</p><h3>Runs{shown}</h3><table><tr><th>run</th><th>input files</th><th>docs in</th>"
            f"<th>docs kept</th><th>files added</th></tr>{rows}</table>")


def print_summary(report: dict, out: str, stream=None, logs: str | None = None) -> None:
    stream = stream or sys.stdout
    w = stream.write
    w(f"\ntokenmill: {report['name']} finished in {report['wall_seconds']:.1f}s\n")
    unit = report.get("size_unit", "tokens")
    w(f"{'stage':<20}{'docs in':>12}{'docs out':>12}{unit + ' in':>14}{unit + ' out':>14}\n")
    for s in report["stages"]:
        w(f"{s['stage']:<20}{s['docs_in']:>12,}{s['docs_out']:>12,}{s[f'{unit}_in']:>14,}{s[f'{unit}_out']:>14,}\n")
    for s in report["stages"]:
        if s.get("docs_modified"):
            w(f"{s['stage']}: changed {s['docs_modified']:,} documents, removed {s['chars_removed']:,} chars / "
              f"{s['tokens_removed']:,} tokens (report.json stage_counts)\n")
    top = ", ".join(f"{item['language']} {item['docs']:,} docs/{item[unit]:,} {unit[:-1]}" for item in report["languages"][:8])
    w(f"top languages: {top or 'none'}\n")
    if report["file_errors"]:
        w(f"files with errors: {len(report['file_errors'])} (see report.json file_errors)\n")
    for name, g in report.get("generated", {}).items():
        w(f"{name}: {g['kept']['docs']:,} new documents ({g['kept']['tokens']:,} tokens) in {out}/{g['folder']}/, "
          f"{g['output_tokens']:,} model output tokens\n")
    inc = report.get("incremental")
    if inc:
        t = inc["totals"]
        w(f"incremental run {inc['run']}: {inc['input_files']:,} input file(s); over {inc.get('run_count', len(inc['runs'])):,} runs "
          f"{t['input']['docs']:,} docs in, {t['output']['docs']:,} kept\n")
    w(f"output: {out}/data/language=*/  rejects: {out}/rejects/  report: {out}/report.html\n")
    if logs:
        w(f"engine logs: {logs}\n")
