"""Histograms of a stage's per-document measures (a struct column the stage names as its
``measures_column``, with bin edges per field in ``measure_bins``), per language, counted at write
time from every row that carries them: counts per (language, measure) that merge by addition."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def measure_counts(table: pa.Table, column: str, bins: dict[str, list[float]]) -> dict[tuple[str, str], list[int]]:
    """(language, measure) -> counts per bin of the rows of ``table`` with that measure."""
    if column not in table.column_names or table.num_rows == 0:
        return {}
    col = table[column].combine_chunks()
    lang = pc.fill_null(table["language"], "und") if "language" in table.column_names else \
        pa.array(["und"] * table.num_rows, pa.string())
    coded = pc.dictionary_encode(lang.combine_chunks() if isinstance(lang, pa.ChunkedArray) else lang)
    langs = coded.dictionary.to_pylist()
    idx = coded.indices.to_numpy(zero_copy_only=False)
    out: dict[tuple[str, str], list[int]] = {}
    for name, edges in bins.items():
        values = pc.struct_field(col, name)
        ok = pc.is_valid(values).to_numpy(zero_copy_only=False)
        if not ok.any():
            continue
        nb = len(edges) - 1
        v = values.to_numpy(zero_copy_only=False)[ok].astype(float)
        b = np.clip(np.searchsorted(np.asarray(edges, float), v, side="right") - 1, 0, nb - 1)
        grid = np.bincount(idx[ok] * nb + b, minlength=len(langs) * nb).reshape(len(langs), nb)
        for i in np.flatnonzero(grid.sum(axis=1)):
            out[(langs[i], name)] = grid[i].tolist()
    return out


def merge_counts(into: dict, other: dict) -> None:
    for key, counts in other.items():
        mine = into.get(key)
        into[key] = list(counts) if mine is None else [a + b for a, b in zip(mine, counts)]


def report_measures(pipeline, stats) -> dict:
    """report.json ``measures``: per language, per measure, the histogram's edges and counts and
    the thresholds that language's parameters set (``Stage.measure_thresholds``)."""
    if not stats.measures:
        return {}
    rs = next((rs for rs in pipeline.stages if rs.cls.measures_column), None)
    if rs is None:
        return {}
    out: dict = {"stage": rs.name, "column": rs.cls.measures_column, "bins": rs.cls.measure_bins, "languages": {}}
    for (lang, name), counts in sorted(stats.measures.items()):
        entry = out["languages"].setdefault(lang, {"docs": 0, "measures": {}, "thresholds": {}})
        entry["measures"][name] = counts
        entry["docs"] = max(entry["docs"], sum(counts))
    for lang, entry in out["languages"].items():
        marks = rs.cls.measure_thresholds(rs.params, pipeline.languages.get(None if lang == "und" else lang))
        entry["thresholds"] = {k: v for k, v in marks.items() if k in entry["measures"]}
    return out


def svg_bars(counts: list[int], width: int, height: int) -> list[str]:
    """One bar per bin, equal widths, scaled to the tallest (the report's histograms)."""
    top = max(counts) or 1
    bw = width / len(counts)
    return [f'<rect x="{i * bw:.1f}" y="{height - int(height * c / top)}" width="{max(bw - 1, 0.5):.1f}" '
            f'height="{int(height * c / top)}" fill="#2b7bb9"/>' for i, c in enumerate(counts)]


def _svg(edges: list[float], counts: list[int], marks: list[float], width: int = 220, height: int = 60) -> str:
    """Bars per bin (equal widths, whatever the edges) with each threshold as a red line, placed
    inside its bin by linear interpolation."""
    import html

    bw = width / len(counts)
    parts = [f'<svg width="{width}" height="{height + 12}" role="img">', *svg_bars(counts, width, height)]
    for t in marks:
        i = min(max(int(np.searchsorted(edges, t, side="right")) - 1, 0), len(counts) - 1)
        lo, hi = edges[i], edges[i + 1]
        x = (i + min(max((t - lo) / ((hi - lo) or 1), 0), 1)) * bw
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#d9534f" stroke-width="2"/>')
    parts.append(f'<text x="0" y="{height + 10}" font-size="9">{html.escape(f"{edges[0]:g}")}</text>'
                 f'<text x="{width - 30}" y="{height + 10}" font-size="9">{html.escape(f"{edges[-1]:g}")}</text></svg>')
    return "".join(parts)


def measures_html(section: dict, languages: int = 6) -> str:
    """report.html: the measures of the languages with the most documents, one small histogram each."""
    if not section:
        return ""
    import html

    rows = []
    for lang, entry in sorted(section["languages"].items(), key=lambda kv: -kv[1]["docs"])[:languages]:
        cells = "".join(
            f"<div style='display:inline-block;margin:0 1em 1em 0;font-size:12px'>{html.escape(name)} "
            f"({sum(counts):,}; {', '.join(f'{t:g}' for t in entry['thresholds'].get(name, [])) or '-'})<br>"
            f"{_svg(section['bins'][name], counts, entry['thresholds'].get(name, []))}</div>"
            for name, counts in entry["measures"].items())
        rows.append(f"<h3>{html.escape(lang)} ({entry['docs']:,} documents measured)</h3>{cells}")
    return (f"<h2>Heuristic measures per language (the red lines: the thresholds; each over the documents "
            f"that reached the check)</h2>{''.join(rows)}")
