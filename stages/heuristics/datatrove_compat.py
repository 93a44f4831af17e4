"""``compat: datatrove``: the Gopher, C4 and FineWeb rules exactly as datatrove 0.10.1's
``GopherQualityFilter``, ``GopherRepetitionFilter``, ``C4QualityFilter`` and
``FineWebQualityFilter`` decide them (the code FineWeb was made with), for reruns of FineWeb's
recipe. tokenmill's own rules (rules.py) stay the default; README "Heuristics" lists where and why
they differ.

What makes datatrove decide differently, reproduced here:

- words are spaCy tokens (``spacy.blank(lang)``, with jieba for Chinese as datatrove sets it),
  stripped, empty ones dropped: punctuation marks are words; a "symbol word" is made only of
  PUNCTUATION. Where datatrove uses another tokenizer (hi, bn: IndicNLP; ko: Kiwi; th, ja, my, km,
  lo, bo: its own) or spaCy cannot load the language (a missing segmenter such as pyvi for vi),
  spaCy's multi-language "xx" tokenizer is used and a warning names the language: decisions are
  exact only where datatrove itself uses spaCy (en, de, fr, es, it, pt, nl, pl, ru, uk, tr, ar,
  fa, id, sv, cs, el among the shipped languages);
- Gopher quality counts words without symbol words for length limits and the average, all tokens
  for the hash/ellipsis and alphabetic ratios; stop words are distinct, case-sensitive, and for
  English datatrove's eight (the, be, to, of, and, that, have, with);
- Gopher repetition's n-grams are of spaCy tokens (top: joined by spaces, the first most common;
  duplicated: joined without spaces);
- C4 counts spaCy sentences (the sentencizer) of each kept line, drops lines ending in an ellipsis
  or without ``. ? ! " '``, with a 1000+ character word, with "javascript" or a policy phrase, and
  removes citations; "lorem ipsum" and "{" drop the page only on a line that passed those; the
  kept lines are the text the next family sees (as in datatrove's pipeline) -- the document
  written out keeps its text: tokenmill filters, it does not edit;
- FineWeb's lines are unstripped, its terminal marks datatrove's TERMINAL_PUNCTUATION, its list
  ratio newlines per spaCy token.

A threshold of 0 switches its check off (datatrove: a falsy threshold). A text spaCy fails on
(besides datatrove's ``IS_ALPHA`` retry) is rejected as ``<family>:spacy_error`` (datatrove stops). Reasons use tokenmill's
check names (DATATROVE_REASONS maps datatrove's). Constants below are copied from datatrove
(Apache-2.0, https://github.com/huggingface/datatrove, src/datatrove/utils/text.py and the filters).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Optional

import numpy as np

from .params import C4, FineWeb, GopherQuality, GopherRepetition
from .rules import CITATION, _duplicates, _lines, _paragraphs  # the same splits and counts
from .rules import POLICY_WORDS as POLICY

log = logging.getLogger(__name__)

#: datatrove.utils.text.PUNCTUATION (the characters a 'symbol word' is made of)
PUNCTUATION = (
    '!/\u2014\u201d:\uff05\uff11\u3008&(\u3001\u2501\\\u3010#%\u300c\u300d\uff0c\u3011\uff1b+^]'
    "~\u201c\u300a\u201e';\u2019{|\u2236\xb4[=-`*\uff0e\uff08\u2013\uff1f\uff01\uff1a$\uff5e"
    '\xab\u3009,><\u300b)?\uff09\u3002\u2026@_."}\u25ba\xbb\x00\x01\x02\x03\x04\x05'
    '\x06\x07\x08\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f'
    '\x7f\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96'
    '\x97\x98\x99\x9a\x9b\x9c\x9d\x9e\x9f'
)
#: datatrove.utils.text.TERMINAL_PUNCTUATION (FineWeb's line-end marks), as one string
TERMINAL_PUNCTUATION = (
    '!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a\u104b\u1362\u1367\u1368\u166e'
    '\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e'
    '\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d'
    '\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047'
    '\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca'
    '\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c'
    '\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88'
)
PUNCTUATION_SET = frozenset(PUNCTUATION) | frozenset(TERMINAL_PUNCTUATION)
TERMINAL_MARKS = tuple(TERMINAL_PUNCTUATION)
#: GopherQualityFilter's STOP_WORDS (its default, used for English)
STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
END_PUNCTUATION = (".", "?", "!", '"', "'")

#: datatrove's spaCy settings per language (src/datatrove/utils/word_tokenizers.py)
SPACY_CONFIG = {"zh": {"nlp": {"tokenizer": {"segmenter": "jieba"}}}}
#: languages datatrove splits with something other than spaCy (its tokenizer_assignment.csv)
NOT_SPACY = {"hi": "datatrove uses IndicNLP", "bn": "datatrove uses IndicNLP", "ko": "datatrove uses Kiwi",
             "th": "datatrove uses its Thai tokenizer", "ja": "datatrove uses its own SudachiPy tokenizer config",
             "my": "datatrove uses its Burmese tokenizer", "km": "datatrove uses its Khmer tokenizer",
             "lo": "datatrove uses its Lao tokenizer", "bo": "datatrove uses its Tibetan tokenizer"}

#: datatrove's reason -> tokenmill's check name
DATATROVE_REASONS = {
    "gopher_short_doc": "min_doc_words", "gopher_long_doc": "max_doc_words",
    "gopher_below_avg_threshold": "min_avg_word_length", "gopher_above_avg_threshold": "max_avg_word_length",
    "gopher_too_many_hashes": "max_symbol_word_ratio", "gopher_too_many_ellipsis": "max_symbol_word_ratio",
    "gopher_too_many_bullets": "max_bullet_lines_ratio", "gopher_too_many_end_ellipsis": "max_ellipsis_lines_ratio",
    "gopher_below_alpha_threshold": "max_non_alpha_words_ratio", "gopher_enough_stop_words": "min_stop_words",
}


class SpacyText:
    """spaCy's blank pipeline (tokenizer + sentencizer) per language, loaded once and kept."""

    def __init__(self):
        import spacy  # the compat extra

        self._spacy = spacy
        self._nlp: dict[str, object] = {}
        self._last: tuple = (None, None, None)  # (text, lang, words): families of one document share a split

    def nlp(self, lang: Optional[str]):
        code = lang or "en"
        if code not in self._nlp:
            try:
                nlp = self._spacy.blank(code, config=SPACY_CONFIG.get(code, {}))
                why = NOT_SPACY.get(code)
            except Exception as exc:  # spaCy lacks the language or its segmenter: the multi-language tokenizer
                nlp = self._spacy.blank("xx")
                why = NOT_SPACY.get(code) or f"spaCy's '{code}' tokenizer could not load ({exc})"
            if why:
                log.warning("heuristics compat: datatrove: language %r: %s; its words and sentences "
                            "(and so some decisions) can differ from datatrove's", code, why)
            nlp.add_pipe("sentencizer")
            self._nlp[code] = nlp
        return self._nlp[code]

    def _run(self, nlp, text: str, fn):
        nlp.max_length = max(nlp.max_length, len(text) + 10)
        with nlp.memory_zone():
            try:
                return fn(nlp(text))
            except Exception:
                if "IS_ALPHA" not in text:  # the one string datatrove knows breaks spaCy
                    raise
                return fn(nlp(text.replace("IS_ALPHA", "")))

    def words(self, text: str, lang: Optional[str]) -> list[str]:
        """datatrove's ``split_into_words``: spaCy tokens, stripped, empty ones dropped."""
        if self._last[0] is text and self._last[1] == lang:
            return self._last[2]
        words = self._run(self.nlp(lang), text, lambda doc: [s for t in doc if (s := t.text.strip())])
        self._last = (text, lang, words)
        return words

    def sentences(self, text: str, lang: Optional[str]) -> int:
        """How many parts datatrove's ``split_into_sentences`` cuts a text into."""
        return self._run(self.nlp(lang), text, lambda doc: max(1, sum(1 for _ in doc.sents)))


Words = Callable[[], list[str]]  # the text's spaCy words, split on first use


def gopher_quality(text: str, words: Words, p: GopherQuality, stop_words: frozenset) -> Optional[str]:
    words = words()
    n_words = len(words) or 1
    kept = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    n = len(kept)
    if p.min_doc_words and n < p.min_doc_words:
        return "min_doc_words"
    if p.max_doc_words and n > p.max_doc_words:
        return "max_doc_words"
    avg = float(np.mean([len(w) for w in kept])) if kept else float("nan")
    if p.min_avg_word_length and avg < p.min_avg_word_length:
        return "min_avg_word_length"
    if p.max_avg_word_length and avg > p.max_avg_word_length:
        return "max_avg_word_length"
    if p.max_symbol_word_ratio and text.count("#") / n_words > p.max_symbol_word_ratio:
        return "max_symbol_word_ratio"
    if p.max_symbol_word_ratio and (text.count("...") + text.count("\u2026")) / n_words > p.max_symbol_word_ratio:
        return "max_symbol_word_ratio"
    lines = text.splitlines() or [""]
    if p.max_bullet_lines_ratio and sum(
            s.lstrip().startswith(("\u2022", "-")) for s in lines) / len(lines) > p.max_bullet_lines_ratio:
        return "max_bullet_lines_ratio"
    if p.max_ellipsis_lines_ratio and sum(
            s.rstrip().endswith(("...", "\u2026")) for s in lines) / len(lines) > p.max_ellipsis_lines_ratio:
        return "max_ellipsis_lines_ratio"
    if p.max_non_alpha_words_ratio and sum(
            any(c.isalpha() for c in w) for w in words) / n_words < p.max_non_alpha_words_ratio:
        return "max_non_alpha_words_ratio"
    if p.min_stop_words and len(stop_words.intersection(words)) < p.min_stop_words:
        return "min_stop_words"
    return None


def _all_duplicate_chars(words: list[str], n: int) -> int:
    seen: set[str] = set()
    repeated, i = 0, 0
    while i < len(words) - n + 1:
        gram = "".join(words[i:i + n])
        if gram in seen:
            repeated += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


def gopher_repetition(text: str, words: Words, p: GopherRepetition) -> Optional[str]:
    if not text:
        return "empty"
    total = len(text)
    paras = _paragraphs(text.strip())
    dup, chars = _duplicates(paras)
    if p.dup_para_frac and dup / len(paras) > p.dup_para_frac:
        return "dup_para_frac"
    if p.dup_para_char_frac and chars / total > p.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = _lines(text)
    dup, chars = _duplicates(lines)
    if p.dup_line_frac and dup / len(lines) > p.dup_line_frac:
        return "dup_line_frac"
    if p.dup_line_char_frac and chars / total > p.dup_line_char_frac:
        return "dup_line_char_frac"
    words = words()
    for n, frac in p.top_n_grams.items():
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        if not grams:
            continue
        top, count = Counter(grams).most_common(1)[0]
        if len(top) * count / total > frac:
            return f"top_{n}_gram"
    for n, frac in p.dup_n_grams.items():
        if _all_duplicate_chars(words, n) / total > frac:
            return f"duplicated_{n}_n_grams"
    return None


def c4(text: str, p: C4, sentences) -> tuple[Optional[str], str]:
    """(reason or None, the kept lines joined: the text datatrove passes on)."""
    kept, n_sentences = [], 0
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        if any(len(w) > p.max_word_length for w in words):
            continue
        line = CITATION.sub("", line)
        if p.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
            continue
        if len(words) < p.min_words_per_line:
            continue
        lower = line.lower()
        if p.filter_lorem_ipsum and "lorem ipsum" in lower:
            return "lorem_ipsum", text
        if p.filter_javascript and "javascript" in lower:
            continue
        if p.filter_curly_bracket and "{" in line:
            return "curly_bracket", text
        if p.filter_policy and any(w in lower for w in POLICY):
            continue
        if p.min_sentences:
            n_sentences += sentences(line)
        kept.append(line)
    if n_sentences < p.min_sentences:
        return "too_few_sentences", text
    return None, "\n".join(kept).strip()


def fineweb(text: str, words: Words, p: FineWeb) -> Optional[str]:
    lines = [ln for ln in text.split("\n") if ln.strip() != ""]
    if not lines:
        return "empty"
    if sum(1 for ln in lines if ln.endswith(TERMINAL_MARKS)) / len(lines) < p.line_punct_thr:
        return "line_punct_ratio"
    if sum(1 for ln in lines if len(ln) <= p.short_line_length) / len(lines) > p.short_line_thr:
        return "short_line_ratio"
    if _duplicates(lines)[1] / len(text.replace("\n", "")) > p.char_duplicates_ratio:
        return "char_dup_ratio"
    if text.count("\n") / (len(words()) or 1) > p.new_line_ratio:
        return "list_ratio"
    return None


def check_document(text: str, lang: Optional[str], lp, families: list[str], spacy_text: SpacyText) -> Optional[str]:
    """The first family (in order) whose datatrove filter drops the document, as
    ``family:check``; after C4 keeps it, the later families see C4's kept lines, as in datatrove."""
    def words() -> list[str]:
        return spacy_text.words(text, lang)

    for fam in families:
        try:
            if fam == "gopher_quality":
                stop = STOP_WORDS if lang in (None, "en") else frozenset(lp.stopwords)
                why = gopher_quality(text, words, lp.gopher_quality, stop)
            elif fam == "gopher_repetition":
                why = gopher_repetition(text, words, lp.gopher_repetition)
            elif fam == "c4":
                why, text = c4(text, lp.c4, lambda line: spacy_text.sentences(line, lang))
            else:
                why = fineweb(text, words, lp.fineweb)
        except Exception:   # a text spaCy cannot split is a bad record, not the end of the run
            why = "spacy_error"
        if why:
            return f"{fam}:{why}"
    return None
