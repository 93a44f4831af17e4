"""Word splitting that is right per script, and the document view the rules share.

- ``whitespace``: Unicode word runs (letters, combining marks, digits), plus punctuation runs as symbol tokens; right
  for space-delimited scripts (Latin, Cyrillic, Greek, Arabic, Devanagari, Hangul ...).
- ``cjk``: every Han ideograph / kana is a word, other runs as above (zh, ja).
- ``thai``: Thai runs (no spaces between words) are cut into 4-character pseudo-words, about
  the mean Thai word length, so counts and n-gram statistics stay meaningful without a
  dictionary segmenter.
- ``khmer``, ``lao``, ``myanmar``: runs of that script cut by a segmenter (``segmenters.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import regex as re  # Unicode properties: word runs must include combining marks (Indic vowel signs)

from . import segmenters

_W = r"[\p{L}\p{M}\p{N}_]"
_SYM = r"[^\p{L}\p{M}\p{N}_\s]+"
_WS_RE = re.compile(rf"{_W}+|{_SYM}")
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u31f0-\u31ff\uff66-\uff9f"
_CJK_RE = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}]){_W})+|{_SYM}")
_THAI = "\u0e00-\u0e7f"
_THAI_RE = re.compile(rf"[{_THAI}]{{1,4}}|(?:(?![{_THAI}]){_W})+|{_SYM}")
_TOKENIZERS = {"whitespace": _WS_RE, "cjk": _CJK_RE, "thai": _THAI_RE}
# the same splitters without the symbol-run alternative: words only, in one C-level pass
_WORDS = {
    "whitespace": re.compile(rf"{_W}+"),
    "cjk": re.compile(rf"[{_CJK}]|(?:(?![{_CJK}]){_W})+"),
    "thai": re.compile(rf"[{_THAI}]{{1,4}}|(?:(?![{_THAI}]){_W})+"),
}
_TOKENIZERS.update(segmenters.tokenizers(words_only=False))
_WORDS.update(segmenters.tokenizers(words_only=True))
#: a word run with no letter in it (digits, marks, underscores only)
NON_ALPHA_WORD = re.compile(r"(?<![\p{L}\p{M}\p{N}_])[\p{N}\p{M}_]+(?![\p{L}\p{M}\p{N}_])")


def split_words(text: str, tokenizer: str = "whitespace") -> list[str]:
    """All tokens, words and symbol runs, in order."""
    return _TOKENIZERS[tokenizer].findall(text)


def word_pattern(tokenizer: str = "whitespace"):
    """The compiled pattern of one word (symbol runs excluded) for a tokenizer."""
    return _WORDS[tokenizer]


def is_word(token: str) -> bool:
    """A token with at least one letter or digit (not a punctuation/symbol run)."""
    return bool(_IS_WORD.match(token))


_IS_WORD = re.compile(_W)


@dataclass
class DocView:
    """A document split once; every rule reads from here."""

    text: str
    tokenizer: str
    _tokens: list | None = field(default=None, repr=False)
    _words: list | None = field(default=None, repr=False)
    _lines: list | None = field(default=None, repr=False)

    @property
    def tokens(self) -> list[str]:
        if self._tokens is None:
            self._tokens = split_words(self.text, self.tokenizer)
        return self._tokens

    @property
    def words(self) -> list[str]:
        """Tokens that are words (symbol runs removed)."""
        if self._words is None:
            self._words = _WORDS[self.tokenizer].findall(self.text)
        return self._words

    @property
    def lines(self) -> list[str]:
        """Non-empty lines, stripped."""
        if self._lines is None:
            self._lines = [ln.strip() for ln in self.text.split("\n") if ln.strip()]
        return self._lines
