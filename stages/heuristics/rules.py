"""The rules: each takes a DocView and one rule family's parameters and returns the name of the
first check that fails (the reject reason suffix), or None to keep the document.

Thresholds follow the papers and datatrove's defaults (Gopher: Rae et al. 2021; C4: Raffel et
al. 2020; FineWeb: Penedo et al. 2024); every one is a per-language parameter.
"""
from __future__ import annotations

import re
from functools import lru_cache
from itertools import islice
from typing import Optional

import numpy as np

from .params import C4, FineWeb, GopherQuality, GopherRepetition
from .words import NON_ALPHA_WORD, DocView, word_pattern

BULLETS = ("•", "●", "○", "▪", "◦", "‣", "⁃", "-", "*", "·", "–")
ELLIPSES = ("...", "…")
_PARA_RE = re.compile(r"\n{2,}")
CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
POLICY_WORDS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class Fail(str):
    """A failed check: its name (the reason suffix), with the value measured and the threshold it
    crossed (None for a rule without one, e.g. ``lorem_ipsum``), for the report's examples."""

    value: Optional[float]
    threshold: Optional[float]

    def __new__(cls, check: str, value: Optional[float] = None, threshold: Optional[float] = None):
        out = super().__new__(cls, check)
        out.value = None if value is None else float(value)
        out.threshold = None if threshold is None else float(threshold)
        return out


def gopher_quality(doc: DocView, p: GopherQuality, stopwords: frozenset, m: Optional[dict] = None) -> Optional[str]:
    """``m``: where the measures taken go (``measures.py``), when given."""
    words = doc.words
    n = len(words)
    if m is not None:
        m["words"] = n
    if n < p.min_doc_words or n == 0:
        return Fail("min_doc_words", n, p.min_doc_words)
    if n > p.max_doc_words:
        return Fail("max_doc_words", n, p.max_doc_words)
    avg = sum(map(len, words)) / n
    if m is not None:
        m["mean_word_length"] = avg
    if avg < p.min_avg_word_length:
        return Fail("min_avg_word_length", avg, p.min_avg_word_length)
    if avg > p.max_avg_word_length:
        return Fail("max_avg_word_length", avg, p.max_avg_word_length)
    text = doc.text
    # "for either the hash symbol or the ellipsis" (Gopher): each on its own against the threshold
    symbols = max(text.count("#"), text.count("...") + text.count("…")) / n
    if symbols > p.max_symbol_word_ratio:
        return Fail("max_symbol_word_ratio", symbols, p.max_symbol_word_ratio)
    lines = doc.lines
    if lines:
        bullets = sum(1 for ln in lines if ln.startswith(BULLETS)) / len(lines)
        if bullets > p.max_bullet_lines_ratio:
            return Fail("max_bullet_lines_ratio", bullets, p.max_bullet_lines_ratio)
        ellipses = sum(1 for ln in lines if ln.endswith(ELLIPSES)) / len(lines)
        if ellipses > p.max_ellipsis_lines_ratio:
            return Fail("max_ellipsis_lines_ratio", ellipses, p.max_ellipsis_lines_ratio)
    alpha = (n - len(NON_ALPHA_WORD.findall(doc.text))) / n
    if m is not None:
        m["alpha_words_ratio"] = alpha
    if alpha < p.max_non_alpha_words_ratio:
        return Fail("max_non_alpha_words_ratio", alpha, p.max_non_alpha_words_ratio)
    if stopwords and p.min_stop_words:
        # "at least two of the following words" (Gopher): distinct stop words, any case
        found: set[str] = set()
        for w in words:
            lw = w.lower()
            if lw in stopwords:
                found.add(lw)
                if len(found) >= p.min_stop_words:
                    break
        if m is not None:
            m["stop_words"] = len(found)
        if len(found) < p.min_stop_words:
            return Fail("min_stop_words", len(found), p.min_stop_words)
    return None


def _lines(text: str) -> list[str]:
    """``re.split(r"\\n+", text)``: runs of newlines cut; an empty first or last part stays."""
    parts = text.split("\n")
    if len(parts) < 3:
        return parts
    return [parts[0], *filter(None, parts[1:-1]), parts[-1]]


def _paragraphs(stripped: str) -> list[str]:
    """``re.split(r"\\n{2,}", stripped)`` for a stripped text."""
    if "\n\n" not in stripped:
        return [stripped]
    return _PARA_RE.split(stripped)


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
    """A document's word n-grams as uint64 rolling hashes, for the n-gram rules asked in
    increasing n (top 2-, 3-, 4-grams, then duplicated 5- to 10-grams).

    Only n-grams that occur more than once can be a top n-gram of count > 1 or add repeated
    characters, and an n-gram occurs twice only where its first n-1 words do: so after each n,
    only the positions whose n-gram repeats stay candidates for n+1, and their hashes are
    extended by one word. The first sort is over every position; later ones over the few that
    repeat. Characters of an n-gram come from prefix sums of word lengths.
    """

    def __init__(self, words: list[str]):
        n = len(words)
        # a word's id is its (64-bit) string hash: equal words, equal ids, no vocabulary to build
        self.ids = np.fromiter(map(hash, words), dtype=np.int64, count=n).view(np.uint64)
        self.cs = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=n), out=self.cs[1:])
        self._reset()

    def _reset(self) -> None:
        self.n, self.pos, self.h = 1, np.arange(len(self.ids)), self.ids

    def _at(self, n: int) -> None:
        """Hashes of the n-grams at the candidate positions."""
        if n < self.n:
            self._reset()
        with np.errstate(over="ignore"):
            while self.n < n:
                keep = self.pos < len(self.ids) - self.n
                self.pos = self.pos[keep]
                self.h = self.h[keep] * _P + self.ids[self.pos + self.n]
                self.n += 1

    def _groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates grouped by hash: (order, group starts, group sizes); with a stable sort of
        positions in increasing order, a group's first member is its first occurrence."""
        order = np.argsort(self.h, kind="stable")
        hs = self.h[order]
        starts = np.concatenate([[0], np.flatnonzero(hs[1:] != hs[:-1]) + 1])
        return order, starts, np.diff(np.append(starts, len(hs)))

    def _keep_repeated(self, order: np.ndarray, counts: np.ndarray) -> None:
        idx = np.sort(order[np.repeat(counts >= 2, counts)])
        self.pos, self.h = self.pos[idx], self.h[idx]

    def top_chars(self, n: int) -> int:
        """Characters covered by the most frequent n-gram (words joined by spaces), as Gopher;
        ties go to the n-gram seen first."""
        if len(self.ids) < n:
            return 0
        self._at(n)
        best, first = 1, 0  # every n-gram once: the first one
        if len(self.h) > 1:
            order, starts, counts = self._groups()
            if counts.max() >= 2:
                best = int(counts.max())
                first = int(self.pos[order[starts[counts == best]]].min())
            self._keep_repeated(order, counts)
        else:
            self.pos, self.h = self.pos[:0], self.h[:0]
        return int(self.cs[first + n] - self.cs[first] + (n - 1)) * best

    def dup_chars(self, n: int) -> int:
        """Characters in repeated n-grams, counting overlapping repeats once (Gopher/datatrove):
        left to right, an n-gram seen before adds its characters and the scan jumps past it
        (the n-grams jumped over are not remembered). Only repeated n-grams can add, so only
        their positions are scanned."""
        if len(self.ids) < n:
            return 0
        self._at(n)
        if len(self.h) < 2:
            return 0
        order, _, counts = self._groups()
        self._keep_repeated(order, counts)
        cs = self.cs
        seen: set[int] = set()
        repeated, skip = 0, 0
        for p, x in zip(self.pos.tolist(), self.h.tolist()):
            if p < skip:
                continue
            if x in seen:
                repeated += int(cs[p + n] - cs[p])
                skip = p + n
            else:
                seen.add(x)
        return repeated


def gopher_repetition(doc: DocView, p: GopherRepetition, m: Optional[dict] = None) -> Optional[str]:
    text = doc.text
    total = len(text) or 1
    paras = _paragraphs(text.strip())
    dup, chars = _duplicates(paras)
    if paras and dup / len(paras) > p.dup_para_frac:
        return Fail("dup_para_frac", dup / len(paras), p.dup_para_frac)
    if chars / total > p.dup_para_char_frac:
        return Fail("dup_para_char_frac", chars / total, p.dup_para_char_frac)
    lines = _lines(text)
    dup, chars = _duplicates(lines)
    if m is not None and lines:
        m["dup_line_frac"] = dup / len(lines)
    if lines and dup / len(lines) > p.dup_line_frac:
        return Fail("dup_line_frac", dup / len(lines), p.dup_line_frac)
    if chars / total > p.dup_line_char_frac:
        return Fail("dup_line_char_frac", chars / total, p.dup_line_char_frac)
    grams = _Grams(doc.words)
    for n, frac in sorted(p.top_n_grams.items()):
        share = grams.top_chars(n) / total
        if n == 2 and m is not None:
            m["top_2_gram"] = share
        if share > frac:
            return Fail(f"top_{n}_gram", share, frac)
    for n, frac in sorted(p.dup_n_grams.items()):
        share = grams.dup_chars(n) / total
        if share > frac:
            return Fail(f"duplicated_{n}_n_grams", share, frac)
    return None


CLOSERS = ")\"'”’»）」』】〉》"


@lru_cache(maxsize=256)
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


def c4(doc: DocView, p: C4, terminal: str, m: Optional[dict] = None) -> Optional[str]:
    """C4's page rules (lorem ipsum, curly bracket) on the whole page; its line rules (citations
    removed; terminal punctuation, not an ellipsis; enough words; no over-long word; no
    "javascript"; no policy phrase) decide which lines count towards ``min_sentences``."""
    if p.filter_lorem_ipsum and "lorem ipsum" in doc.text.lower():
        return Fail("lorem_ipsum")
    if p.filter_curly_bracket and "{" in doc.text:
        return Fail("curly_bracket")
    sentence_end = _sentence_end(terminal)
    marks = _marks(terminal) if p.filter_no_terminal_punct else ()
    sentences = 0
    tokenizer = doc.tokenizer
    for line in doc.lines:
        if "[" in line:
            line = CITATION.sub("", line).strip()
        if marks and (not _ends_sentence(line, marks) or line.endswith(ELLIPSES)):
            continue
        if p.min_words_per_line and not _has_words(line, tokenizer, p.min_words_per_line):
            continue
        if len(line) > p.max_word_length and max(map(len, line.split())) > p.max_word_length:
            continue
        if p.filter_javascript or p.filter_policy:
            lower = line.lower()
            if p.filter_javascript and "javascript" in lower:
                continue
            if p.filter_policy and any(w in lower for w in POLICY_WORDS):
                continue
        sentences += max(1, len(sentence_end.findall(line))) if sentence_end else 1
        if sentences >= p.min_sentences:
            break
    if m is not None:
        m["sentences"] = sentences
    return Fail("too_few_sentences", sentences, p.min_sentences) if sentences < p.min_sentences else None


def _has_words(line: str, tokenizer: str, k: int) -> bool:
    """At least k words (the tokenizer's), without splitting the rest of the line."""
    return sum(1 for _ in islice(word_pattern(tokenizer).finditer(line), k)) >= k


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


def fineweb(doc: DocView, p: FineWeb, terminal: str, m: Optional[dict] = None) -> Optional[str]:
    lines = doc.lines
    if not lines:
        return Fail("empty")
    punctuated = _punctuated(lines, terminal) / len(lines) if terminal else 1.0
    if m is not None and terminal:
        m["line_punct_ratio"] = punctuated
    if punctuated < p.line_punct_thr:
        return Fail("line_punct_ratio", punctuated, p.line_punct_thr)
    short = sum(1 for ln in lines if len(ln) <= p.short_line_length) / len(lines)
    if m is not None:
        m["short_line_ratio"] = short
    if short > p.short_line_thr:
        return Fail("short_line_ratio", short, p.short_line_thr)
    _, dup_chars = _duplicates(lines)
    dup_share = dup_chars / (len(doc.text.replace("\n", "")) or 1)
    if m is not None:
        m["char_dup_ratio"] = dup_share
    if dup_share > p.char_duplicates_ratio:
        return Fail("char_dup_ratio", dup_share, p.char_duplicates_ratio)
    per_word = doc.text.count("\n") / (len(doc.words) or 1)
    if m is not None:
        m["list_ratio"] = per_word
    if per_word > p.new_line_ratio:
        return Fail("list_ratio", per_word, p.new_line_ratio)
    return None
