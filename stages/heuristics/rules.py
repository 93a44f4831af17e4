"""The rules: each takes a DocView and one rule family's parameters and returns the name of the
first check that fails (the reject reason suffix), or None to keep the document.

Thresholds follow the papers and datatrove's defaults (Gopher: Rae et al. 2021; C4: Raffel et
al. 2020; FineWeb: Penedo et al. 2024); every one is a per-language parameter.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Optional

from tokenmill.engine.languages import C4, FineWeb, GopherQuality, GopherRepetition

from .words import DocView

BULLETS = ("•", "●", "○", "▪", "◦", "‣", "⁃", "-", "*", "·", "–")
ELLIPSES = ("...", "…")
_PARA_RE = re.compile(r"\n{2,}")
_LINE_RE = re.compile(r"\n+")
POLICY_WORDS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


def gopher_quality(doc: DocView, p: GopherQuality, stopwords: frozenset) -> Optional[str]:
    words = doc.words
    n = len(words)
    if n < p.min_doc_words or n == 0:
        return "min_doc_words"
    if n > p.max_doc_words:
        return "max_doc_words"
    avg = sum(len(w) for w in words) / n
    if avg < p.min_avg_word_length:
        return "min_avg_word_length"
    if avg > p.max_avg_word_length:
        return "max_avg_word_length"
    text = doc.text
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / n > p.max_symbol_word_ratio:
        return "max_symbol_word_ratio"
    lines = doc.lines
    if lines:
        if sum(1 for ln in lines if ln.startswith(BULLETS)) / len(lines) > p.max_bullet_lines_ratio:
            return "max_bullet_lines_ratio"
        if sum(1 for ln in lines if ln.endswith(ELLIPSES)) / len(lines) > p.max_ellipsis_lines_ratio:
            return "max_ellipsis_lines_ratio"
    alpha = sum(1 for w in words if any(ch.isalpha() for ch in w))
    if alpha / n < p.max_non_alpha_words_ratio:
        return "max_non_alpha_words_ratio"
    if stopwords and p.min_stop_words:
        found = 0
        for w in words:
            if w.lower() in stopwords:
                found += 1
                if found >= p.min_stop_words:
                    break
        if found < p.min_stop_words:
            return "min_stop_words"
    return None


def _duplicates(items: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for it in items:
        if it in seen:
            dup_items += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup_items, dup_chars


def _top_ngram_chars(words: list[str], n: int) -> int:
    grams = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return len(gram) * count


def _dup_ngram_chars(words: list[str], n: int) -> int:
    seen: set[str] = set()
    repeated, i, end = 0, 0, len(words) - n + 1
    while i < end:
        gram = "".join(words[i:i + n])
        if gram in seen:
            repeated += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


def gopher_repetition(doc: DocView, p: GopherRepetition) -> Optional[str]:
    text = doc.text
    total = len(text) or 1
    paras = _PARA_RE.split(text.strip())
    dup, chars = _duplicates(paras)
    if paras and dup / len(paras) > p.dup_para_frac:
        return "dup_para_frac"
    if chars / total > p.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = _LINE_RE.split(text)
    dup, chars = _duplicates(lines)
    if lines and dup / len(lines) > p.dup_line_frac:
        return "dup_line_frac"
    if chars / total > p.dup_line_char_frac:
        return "dup_line_char_frac"
    words = doc.words
    for n, frac in sorted(p.top_n_grams.items()):
        if _top_ngram_chars(words, n) / total > frac:
            return f"top_{n}_gram"
    for n, frac in sorted(p.dup_n_grams.items()):
        if _dup_ngram_chars(words, n) / total > frac:
            return f"duplicated_{n}_n_grams"
    return None


CLOSERS = ")\"'”’»）」』】〉》"


def _sentence_end(terminal: str):
    """A sentence ends with a terminal mark (. ! ? 。 ! ? । ؟ ...), optionally followed by closing
    quotes/brackets; half-width marks only before whitespace or the end of the line. Closing
    quotes or brackets alone (``(a) cheap (b)``) end no sentence."""
    marks = "".join(ch for ch in terminal if ch not in CLOSERS)
    if not marks:
        return None
    half = "".join(ch for ch in marks if ord(ch) < 0x3000)
    full = "".join(ch for ch in marks if ord(ch) >= 0x3000)
    closers = f"[{re.escape(CLOSERS)}]*"
    parts = []
    if half:
        parts.append(f"[{re.escape(half)}]+{closers}(?=\\s|$)")
    if full:
        parts.append(f"[{re.escape(full)}]+{closers}")
    return re.compile("|".join(parts))


def c4(doc: DocView, p: C4, terminal: str) -> Optional[str]:
    lower = doc.text.lower()
    if p.filter_lorem_ipsum and "lorem ipsum" in lower:
        return "lorem_ipsum"
    if p.filter_curly_bracket and "{" in doc.text:
        return "curly_bracket"
    if p.filter_javascript and "javascript" in lower:
        return "javascript"
    if p.filter_policy and any(w in lower for w in POLICY_WORDS):
        return "policy"
    sentence_end = _sentence_end(terminal)
    sentences = 0
    tokenizer = doc.tokenizer
    for line in doc.lines:
        if terminal and not line.endswith(tuple(terminal)):
            continue
        if len(DocView(line, tokenizer).words) < p.min_words_per_line:
            continue
        if any(len(w) > p.max_word_length for w in line.split()):
            continue
        sentences += len(sentence_end.findall(line)) if sentence_end else 1
        if sentences >= p.min_sentences:
            return None
    return "too_few_sentences" if sentences < p.min_sentences else None


def fineweb(doc: DocView, p: FineWeb, terminal: str) -> Optional[str]:
    lines = doc.lines
    if not lines:
        return "empty"
    ends = tuple(terminal) if terminal else ()
    if ends and sum(1 for ln in lines if ln.endswith(ends)) / len(lines) < p.line_punct_thr:
        return "line_punct_ratio"
    if sum(1 for ln in lines if len(ln) <= p.short_line_length) / len(lines) >= p.short_line_thr:
        return "short_line_ratio"
    _, dup_chars = _duplicates(lines)
    body = len(doc.text.replace("\n", "")) or 1
    if dup_chars / body >= p.char_duplicates_ratio:
        return "char_dup_ratio"
    n_words = len(doc.words) or 1
    if doc.text.count("\n") / n_words > p.new_line_ratio:
        return "list_ratio"
    return None
