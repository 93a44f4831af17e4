"""The measures the heuristic rules take of a document (word count, mean word length, line
ratios ...), kept per row in the ``heuristic_measures`` struct column so the report can draw
their distribution per language with the thresholds that cut it.

A measure is recorded only when a rule takes it: the rules run in order and stop at the first
failing check, so each histogram is the distribution over the documents that reached that check
(which is what the threshold decides on). Counts that a rule stops counting once enough are found
(``stop_words``, ``sentences``) are recorded up to their threshold.
"""
from __future__ import annotations

import pyarrow as pa


def _lin(lo: float, hi: float, n: int) -> list[float]:
    return [round(lo + (hi - lo) * i / n, 6) for i in range(n + 1)]


#: bin edges per measure (a value below the first edge counts in the first bin, above the last in the last)
BINS: dict[str, list[float]] = {
    "words": [0, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 20000, 50000,
              100000, 200000],
    "mean_word_length": _lin(0, 15, 30),
    "alpha_words_ratio": _lin(0, 1, 20),
    "stop_words": _lin(0, 10, 10),
    "dup_line_frac": _lin(0, 1, 20),
    "top_2_gram": _lin(0, 0.5, 25),
    "sentences": _lin(0, 20, 20),
    "line_punct_ratio": _lin(0, 1, 20),
    "short_line_ratio": _lin(0, 1, 20),
    "char_dup_ratio": _lin(0, 0.2, 20),
    "list_ratio": _lin(0, 1, 20),
}
MEASURES = "heuristic_measures"
MEASURES_TYPE = pa.struct([pa.field(name, pa.float64()) for name in BINS])


def thresholds(lp) -> dict[str, list[float]]:
    """The thresholds of one language's parameters, per measure (the report's red lines)."""
    gq, gr, c4, fw = lp.gopher_quality, lp.gopher_repetition, lp.c4, lp.fineweb
    out = {
        "words": [gq.min_doc_words, gq.max_doc_words],
        "mean_word_length": [gq.min_avg_word_length, gq.max_avg_word_length],
        "alpha_words_ratio": [gq.max_non_alpha_words_ratio],
        "stop_words": [gq.min_stop_words],
        "dup_line_frac": [gr.dup_line_frac],
        "top_2_gram": [gr.top_n_grams[2]] if 2 in gr.top_n_grams else [],
        "sentences": [c4.min_sentences],
        "line_punct_ratio": [fw.line_punct_thr],
        "short_line_ratio": [fw.short_line_thr],
        "char_dup_ratio": [fw.char_duplicates_ratio],
        "list_ratio": [fw.new_line_ratio],
    }
    return {k: [float(v) for v in vs] for k, vs in out.items()}
