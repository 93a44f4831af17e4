"""The rules: each takes a DocView and one rule family's parameters and returns the name of the
first check that fails (the reject reason suffix), or None to keep the document.

Thresholds follow the papers and datatrove's defaults (Gopher: Rae et al. 2021; C4: Raffel et
al. 2020; FineWeb: Penedo et al. 2024); every one is a per-language parameter.
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np

from .params import C4, FineWeb, GopherQuality, GopherRepetition
from .words import NON_ALPHA_WORD, DocView

BULLETS = ("•", "●", "○", "▪", "◦", "‣", "⁃", "-", "*", "·", "–")
ELLIPSES = ("...", "…")
_PARA_RE = re.compile(r"\n{2,}")
_LINE_RE = re.compile(r"\n+")
CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
POLICY_WORDS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


def gopher_quality(doc: DocView, p: GopherQuality, stopwords: frozenset) -> Optional[str]:
    words = doc.words
    n = len(words)
    if n < p.min_doc_words or n == 0:
        return "min_doc_words"
    if n > p.max_doc_words:
        return "max_doc_words"
    avg = sum(map(len, words)) / n
    if avg < p.min_avg_word_length:
        return "min_avg_word_length"
    if avg > p.max_avg_word_length:
        return "max_avg_word_length"
    text = doc.text
    # "for either the hash symbol or the ellipsis" (Gopher): each on its own against the threshold
    if max(text.count("#"), text.count("...") + text.count("…")) / n > p.max_symbol_word_ratio:
        return "max_symbol_word_ratio"
    lines = doc.lines
    if lines:
        if sum(1 for ln in lines if ln.startswith(BULLETS)) / len(lines) > p.max_bullet_lines_ratio:
            return "max_bullet_lines_ratio"
        if sum(1 for ln in lines if ln.endswith(ELLIPSES)) / len(lines) > p.max_ellipsis_lines_ratio:
            return "max_ellipsis_lines_ratio"
    alpha = n - len(NON_ALPHA_WORD.findall(doc.text))
    if alpha / n < p.max_non_alpha_words_ratio:
        return "max_non_alpha_words_ratio"
    if stopwords and p.min_stop_words:
        # "at least two of the following words" (Gopher): distinct stop words, any case
        found: set[str] = set()
        for w in words:
            lw = w.lower()
            if lw in stopwords:
                found.add(lw)
                if len(found) >= p.min_stop_words:
                    break
        if len(found) < p.min_stop_words:
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


_P = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for polynomial n-gram hashes


class _Grams:
    """A document's words as integer ids with prefix sums of their lengths, so every n-gram is
    one uint64 (vectorized rolling hash) and its character length is a subtraction."""

    def __init__(self, words: list[str]):
        vocab: dict[str, int] = {}
        self.ids = np.fromiter((vocab.setdefault(w, len(vocab) + 1) for w in words), dtype=np.uint64, count=len(words))
        self.cs = np.concatenate([[0], np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)))])

    def hashes(self, n: int) -> np.ndarray:
        m = len(self.ids) - n + 1
        if m <= 0:
            return np.empty(0, dtype=np.uint64)
        h = np.zeros(m, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                h = h * _P + self.ids[k:k + m]
        return h

    def top_chars(self, n: int) -> int:
        """Characters covered by the most frequent n-gram (words joined by spaces), as Gopher."""
        h = self.hashes(n)
        if not len(h):
            return 0
        _, first, counts = np.unique(h, return_index=True, return_counts=True)
        best = counts.max()
        i = int(first[counts == best].min())  # ties: the n-gram seen first
        return int(self.cs[i + n] - self.cs[i] + (n - 1)) * int(best)

    def dup_chars(self, n: int) -> int:
        """Characters in repeated n-grams, counting overlapping repeats once (Gopher/datatrove)."""
        h = self.hashes(n).tolist()
        cs = self.cs
        seen: set[int] = set()
        repeated, i, end = 0, 0, len(h)
        while i < end:
            x = h[i]
            if x in seen:
                repeated += int(cs[i + n] - cs[i])
                i += n
            else:
                seen.add(x)
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
    grams = _Grams(doc.words)
    for n, frac in sorted(p.top_n_grams.items()):
        if grams.top_chars(n) / total > frac:
            return f"top_{n}_gram"
    for n, frac in sorted(p.dup_n_grams.items()):
        if grams.dup_chars(n) / total > frac:
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
    """C4's page rules (lorem ipsum, curly bracket) on the whole page; its line rules (citations
    removed; terminal punctuation, not an ellipsis; enough words; no over-long word; no
    "javascript"; no policy phrase) decide which lines count towards ``min_sentences``."""
    if p.filter_lorem_ipsum and "lorem ipsum" in doc.text.lower():
        return "lorem_ipsum"
    if p.filter_curly_bracket and "{" in doc.text:
        return "curly_bracket"
    sentence_end = _sentence_end(terminal)
    marks = _marks(terminal) if p.filter_no_terminal_punct else ()
    sentences = 0
    tokenizer = doc.tokenizer
    for line in doc.lines:
        if "[" in line:
            line = CITATION.sub("", line).strip()
        if marks and (not _ends_sentence(line, marks) or line.endswith(ELLIPSES)):
            continue
        if len(DocView(line, tokenizer).words) < p.min_words_per_line:
            continue
        if any(len(w) > p.max_word_length for w in line.split()):
            continue
        if p.filter_javascript or p.filter_policy:
            lower = line.lower()
            if p.filter_javascript and "javascript" in lower:
                continue
            if p.filter_policy and any(w in lower for w in POLICY_WORDS):
                continue
        sentences += max(1, len(sentence_end.findall(line))) if sentence_end else 1
        if sentences >= p.min_sentences:
            return None
    return "too_few_sentences" if sentences < p.min_sentences else None


def _marks(terminal: str) -> tuple[str, ...]:
    return tuple(ch for ch in terminal if ch not in CLOSERS)


_CLOSERS = tuple(CLOSERS)


def _ends_sentence(line: str, marks: tuple[str, ...]) -> bool:
    """A terminal mark at the end, optionally followed by closing quotes or brackets (``end."``
    ends a sentence, ``(b)`` does not)."""
    return line.endswith(marks) or (line.endswith(_CLOSERS) and line.rstrip(CLOSERS).endswith(marks))


def _punctuated(lines: list[str], terminal: str) -> int:
    marks = _marks(terminal)
    return sum(1 for ln in lines if _ends_sentence(ln, marks))


def fineweb(doc: DocView, p: FineWeb, terminal: str) -> Optional[str]:
    lines = doc.lines
    if not lines:
        return "empty"
    if terminal and _punctuated(lines, terminal) / len(lines) < p.line_punct_thr:
        return "line_punct_ratio"
    if sum(1 for ln in lines if len(ln) <= p.short_line_length) / len(lines) > p.short_line_thr:
        return "short_line_ratio"
    _, dup_chars = _duplicates(lines)
    body = len(doc.text.replace("\n", "")) or 1
    if dup_chars / body > p.char_duplicates_ratio:
        return "char_dup_ratio"
    n_words = len(doc.words) or 1
    if doc.text.count("\n") / n_words > p.new_line_ratio:
        return "list_ratio"
    return None
