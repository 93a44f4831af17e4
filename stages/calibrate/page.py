"""``calibration.html``: per language, what calibration changed and why, the heuristic measures of
the clean reference documents and of their corrupted copies as histograms with the calibrated
thresholds (red lines), and lid.176's scores of clean paragraphs and of the sample with the
shipped and calibrated LID thresholds."""
from __future__ import annotations

import html
import os

import numpy as np

LID_EDGES = [round(i * 0.05, 2) for i in range(21)]


def measure_counts(docs: list[str], lp) -> dict[str, list[int]]:
    """Counts per bin of every measure the heuristics took of ``docs`` (each over the documents
    that reached its check)."""
    from tokenmill.stages.heuristics.measures import BINS
    from tokenmill.stages.heuristics.stage import check_document

    from .derive import FAMILIES

    values: dict[str, list[float]] = {}
    for d in docs:
        taken: dict = {}
        check_document(d, lp, FAMILIES, frozenset(lp.stopwords), taken)
        for name, v in taken.items():
            values.setdefault(name, []).append(float(v))
    return {name: bin_counts(vs, BINS[name]) for name, vs in values.items() if name in BINS}


def bin_counts(values: list[float], edges: list[float]) -> list[int]:
    b = np.clip(np.searchsorted(np.asarray(edges, float), values, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(b, minlength=len(edges) - 1).tolist()


def language_section(iso: str, row: dict, clean: dict, bad: dict, lp, lid: dict[str, list[float]]) -> str:
    from tokenmill.engine.report.measures import _svg
    from tokenmill.stages.heuristics.measures import BINS, thresholds

    marks = thresholds(lp)
    changes = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>" for k, v in row["changes"].items())
    cells = []
    for name in BINS:
        if name not in clean and name not in bad:
            continue
        pair = "".join(f"{label}<br>{_svg(BINS[name], counts.get(name, [0] * (len(BINS[name]) - 1)), marks[name])}<br>"
                       for label, counts in (("clean", clean), ("corrupted", bad)))
        cells.append(f"<div class='cell'><b>{html.escape(name)}</b><br>{pair}</div>")
    lids = "".join(f"<div class='cell'><b>lid.176 score, {html.escape(label)}</b> ({len(s)})<br>"
                   f"{_svg(LID_EDGES, bin_counts(s, LID_EDGES), [row['lid_threshold']['calibrated']])}</div>"
                   for label, s in lid.items() if s)
    shares = "".join(f"<tr><td>{label}</td><td>{pct(row[key]['shipped'])}</td><td>{pct(row[key]['calibrated'])}</td></tr>"
                     for label, key in (("heuristics reject clean documents", "clean_rejected"),
                                        ("heuristics reject corrupted copies", "corrupted_rejected"),
                                        ("langid rejects clean paragraphs", "lid_rejects_clean")))
    return (f"<h2 id='{html.escape(iso)}'>{html.escape(iso)}</h2><p>{row['documents']} reference documents</p>"
            f"<table><tr><th></th><th>shipped</th><th>calibrated</th></tr>{shares}</table>"
            f"<ul>{changes or '<li>no change</li>'}</ul>{''.join(cells)}{lids}")


def pct(share) -> str:
    return "-" if share is None else f"{share:.1%}"


def write_page(out: str, sections: dict[str, str], summary: dict) -> None:
    index = " ".join(f"<a href='#{html.escape(k)}'>{html.escape(k)}</a>" for k in sections)
    skipped = "".join(f"<li>{html.escape(k)}: {html.escape(v['status'])}</li>"
                      for k, v in summary.items() if v["status"] != "calibrated")
    page = ("<!doctype html><meta charset='utf-8'><title>tokenmill calibrate</title><style>body{font-family:sans-serif}"
            ".cell{display:inline-block;margin:0 1em 1em 0;font-size:12px;vertical-align:top}td,th{padding:0 .6em;text-align:right}</style>"
            f"<h1>Calibration ({len(sections)} languages)</h1><p>Red lines: the calibrated thresholds.</p>"
            f"<p>{index}</p>{''.join(sections.values())}<h2>Not calibrated</h2><ul>{skipped}</ul>")
    tmp = os.path.join(out, ".calibration.html.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, os.path.join(out, "calibration.html"))
