"""Word splitting for scripts written without spaces between words, past CJK and Thai (``words.py``):
the ``khmer``, ``lao`` and ``myanmar`` word tokenizers of the language files.

A run of the script's letters, marks and digits is cut into words by a segmenter; everything
else is split as ``whitespace`` splits it. The objects here have the two methods of the compiled
patterns in ``words.py`` (``findall``, ``finditer``), so the rules, MinHash and calibration use
them unchanged.

- ``khmer``: khmer-nltk's CRF word segmenter (``pip install 'tokenmill[scripts]'``);
- ``lao``: LaoNLP's dictionary segmenter (the same extra);
- ``myanmar``: syllables by rule (Ye Kyaw Thu's sylbreak: a syllable starts at a consonant that is
  neither stacked under a virama nor killed by an asat, or at an independent vowel). Myanmar
  writes spaces between phrases, not words, so the whitespace split gave whole phrases; the
  PyPI segmenter (pyidaungsu) needs the fasttext package, which clashes with the one tokenmill
  uses.

Without the extra, Khmer and Lao runs are cut by rule too (one warning per process says so), into
orthographic clusters (a consonant with the marks written with it), which are shorter than
syllables: a final consonant stands alone. A language file's thresholds calibrated with the
segmenter then see more, shorter words. A run the segmenter fails on is cut by rule as well. Tibetan needs nothing here: its syllables are separated by the tsheg, a
punctuation mark, so ``whitespace`` already splits it into syllables (botok, the word segmenter,
downloads its dictionary on first use, which a worker without network cannot do).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from functools import cache

import regex as re

_LETTER = r"[\p{L}\p{M}\p{N}]"
_REST_TOKENS = re.compile(r"[\p{L}\p{M}\p{N}_]+|[^\p{L}\p{M}\p{N}_\s]+")
_REST_WORDS = re.compile(r"[\p{L}\p{M}\p{N}_]+")

# syllable starts (zero-width) by script
_SYLLABLE_START = {
    # a consonant or independent vowel not stacked under COENG (U+17D2)
    "Khmer": re.compile(r"(?<!\u17D2)[\u1780-\u17B3]"),
    # a leading vowel, or a consonant not right after a leading vowel (which belongs to it)
    "Lao": re.compile(r"[\u0EC0-\u0EC4]|(?<![\u0EC0-\u0EC4])[\u0E81-\u0EAE\u0EDC-\u0EDF]"),
    # sylbreak: a consonant not after a virama and not before an asat or virama (dot below and
    # anusvara may come between); independent vowels
    "Myanmar": re.compile(r"(?<!\u1039)[\u1000-\u1021](?![\u1036\u1037]*[\u103A\u1039])"
                          r"|[\u1023-\u102A\u103F\u104C-\u104F]"),
}


def syllables(run: str, script: str) -> list[str]:
    """``run`` cut before every syllable start of ``script`` (Myanmar: syllables; Khmer, Lao:
    orthographic clusters)."""
    starts = [m.start() for m in _SYLLABLE_START[script].finditer(run) if m.start() > 0]
    return [run[a:b] for a, b in zip([0] + starts, starts + [len(run)])]


@cache
def _package_segmenter(script: str) -> Callable[[str], list[str]]:
    """The PyPI segmenter of ``script``, or syllables by rule when its package is missing."""
    try:
        if script == "Khmer":
            import logging

            from khmernltk import word_tokenize
            logging.getLogger("khmer-nltk").setLevel(logging.WARNING)   # it logs each model load at INFO
            return word_tokenize
        if script == "Lao":
            from laonlp.tokenize import word_tokenize
            return word_tokenize
    except ImportError:
        package = {"Khmer": "khmer-nltk", "Lao": "laonlp"}[script]
        warnings.warn(f"{package} is not installed: {script} text is split into syllables instead of words "
                      "(pip install 'tokenmill[scripts]')", stacklevel=2)
    return lambda run: syllables(run, script)


class Segmented:
    """A word splitter for one script: its runs cut by ``segment``, other text split by ``rest``."""

    def __init__(self, script: str, segment: Callable[[str], list[str]], words_only: bool):
        self.script = script
        self.run = re.compile(rf"(?:(?=\p{{Script={script}}}){_LETTER})+")
        self.segment = segment
        self.rest = _REST_WORDS if words_only else _REST_TOKENS

    def findall(self, text: str) -> list[str]:
        out, pos = [], 0
        for m in self.run.finditer(text):
            out += self.rest.findall(text, pos, m.start())
            out += [w for w in (s.strip() for s in self._segment(m.group())) if w]
            pos = m.end()
        out += self.rest.findall(text, pos)
        return out

    def finditer(self, text: str) -> Iterator[str]:
        """The words, one at a time (strings, not match objects: callers count them)."""
        return iter(self.findall(text))

    def _segment(self, run: str) -> list[str]:
        try:
            return self.segment(run)
        except Exception:   # a segmenter's failure on one odd run must not fail the batch
            return syllables(run, self.script)


def tokenizers(words_only: bool) -> dict[str, Segmented]:
    """{tokenizer name: splitter} of this module (``words_only``: symbol runs left out)."""
    return {
        "khmer": Segmented("Khmer", lambda run: _package_segmenter("Khmer")(run), words_only),
        "lao": Segmented("Lao", lambda run: _package_segmenter("Lao")(run), words_only),
        "myanmar": Segmented("Myanmar", lambda run: syllables(run, "Myanmar"), words_only),
    }
