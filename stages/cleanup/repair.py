"""``text_repair``: a modifier that repairs text before it is judged, each step switchable.

1. **ftfy** (``ftfy: true``): mojibake (UTF-8 read as Windows-1252/1250/Latin-1: ``doesnâ€™t`` ->
   ``doesn’t``), HTML entities left by extractors (``&rsquo;``, ``&#8217;``), C1 control
   characters that stand for Windows-1252 punctuation, other control characters. ftfy runs only on
   documents a vectorised check finds a sign of these in (~1/5 of web pages; ftfy costs ~6 MB/s);
   quotes, ligatures, character widths and line breaks are left as they are.
2. **Unicode normalisation** (``normalization: NFC``; NFKC or none), Arrow's ``utf8_normalize``.
3. **Line removal**, over every line of the batch at once (Arrow), a line removed when it is
   - boilerplate (``boilerplate: true``): it holds a phrase of its language's list
     (``text_repair.boilerplate`` in ``configs/languages/<iso>.yaml``: cookie banners,
     "subscribe to our newsletter", "all rights reserved", ...; a row without a language uses
     English's) and has at most ``boilerplate_max_words`` words;
   - C4's rules (Raffel et al. 2020): it mentions ``javascript``; it holds ``lorem ipsum``; it
     holds a policy phrase (``terms of use``, ``privacy policy``, ``cookie policy``, ``uses
     cookies``, ``use of cookies``, ``use cookies``); the javascript and policy rules only on
     lines of at most ``c4_max_words`` (60) words: a longer line is a paragraph of prose (a
     speech printed as one line mentions a privacy policy), which C4 would drop whole; with ``no_terminal_punctuation: true`` (off by
     default, as in FineWeb: it removes headings, lists and most of some languages) it does not
     end in its language's ``terminal_punctuation``; with ``min_words_per_line`` > 0 it has fewer
     words.
   Blank lines are never removed; a document whose lines are untouched keeps its exact bytes.

A document left without any text is rejected as ``empty_after_repair``. Counters per document
(report ``stage_counts.text_repair``): ``ftfy_fixed``, ``normalized``, ``lines:<rule>``.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from tokenmill.engine.counts import STAGE_COUNTS, counts_column
from tokenmill.engine.languages import register_language_params
from tokenmill.engine.schema import mark_rejects, set_column
from tokenmill.engine.stage import Modifier, register_stage

#: a sign ftfy may have work: C1/C0 controls, a replacement character, an HTML entity, or a
#: Latin-1/Latin Extended-A letter followed by a character UTF-8 continuation bytes decode to
MAYBE_BROKEN = (r"[\x{80}-\x{9f}\x{0}-\x{8}\x{b}\x{c}\x{e}-\x{1f}\x{7f}\x{fffd}]"
                r"|&(?:[a-zA-Z]{2,8}|#[0-9]{2,7}|#[xX][0-9a-fA-F]{2,6});"
                r"|[\x{c0}-\x{17f}][\x{80}-\x{bf}\x{152}-\x{161}\x{178}-\x{17e}\x{192}\x{2c6}-\x{2dd}\x{2013}-\x{2122}]")
POLICY = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]
WORDS = r"[^\s]+"


class RepairLanguage(BaseModel):
    """Per-language parameters of ``text_repair`` (section ``text_repair:`` of a language file)."""

    model_config = ConfigDict(extra="forbid")
    boilerplate: list[str] = Field(default_factory=list, description="phrases (case-insensitive) that mark a boilerplate line")


register_language_params(text_repair=(RepairLanguage, Field(default_factory=RepairLanguage)))


class RepairParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ftfy: bool = Field(True, description="fix mojibake, HTML entities and control characters with ftfy")
    normalization: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normal form")
    boilerplate: bool = Field(True, description="remove lines holding a boilerplate phrase of the row's language")
    boilerplate_max_words: int = Field(40, ge=1, description="longer lines are kept even with a boilerplate phrase")
    javascript: bool = Field(True, description="C4: remove lines that mention javascript")
    lorem_ipsum: bool = Field(True, description="C4: remove lines holding 'lorem ipsum'")
    policy: bool = Field(True, description="C4: remove lines holding a terms-of-use/privacy/cookie phrase")
    c4_max_words: int = Field(60, ge=1, description="javascript/policy lines longer than this are prose, not page "
                                                    "furniture, and stay (C4 had no cap: a one-line document went whole)")
    no_terminal_punctuation: bool = Field(False, description="C4: remove lines not ending in terminal punctuation")
    min_words_per_line: int = Field(0, ge=0, description="C4 (3 there): remove lines with fewer words; 0: off")
    fallback_language: str = Field("en", description="whose lists a row without a language uses")


@lru_cache(maxsize=256)
def _phrases_regex(phrases: tuple[str, ...]) -> str:
    return "|".join(re.escape(p.lower()) for p in phrases) if phrases else ""


@lru_cache(maxsize=256)
def _ends_regex(punctuation: str) -> str:
    return "[" + "".join(re.escape(c) for c in punctuation) + r"]\s*$"


def _blank(text: pa.Array) -> pa.Array:
    return pc.equal(pc.utf8_trim_whitespace(pc.fill_null(text, "")), "")


@register_stage("text_repair")
class TextRepair(Modifier):
    name = "text_repair"
    Params = RepairParams

    def setup(self) -> None:
        if self.languages is None:   # built outside a run: the shipped language files
            from tokenmill.engine.config import shipped_languages_dir
            from tokenmill.engine.languages import LanguageTable, load_language_files

            self.languages = LanguageTable(files=load_language_files(shipped_languages_dir()))
        self._ftfy = None
        if self.params.ftfy:
            import ftfy

            config = ftfy.TextFixerConfig(uncurl_quotes=False, fix_character_width=False, fix_latin_ligatures=False,
                                          fix_line_breaks=False, normalization=None, explain=False)
            self._ftfy = lambda text: ftfy.fix_text(text, config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        text = batch["text"].combine_chunks() if isinstance(batch["text"], pa.ChunkedArray) else batch["text"]
        counts: dict[str, np.ndarray] = {}
        if self._ftfy is not None:
            text, counts["ftfy_fixed"] = self._fix(text)
        if self.params.normalization != "none":
            normal = pc.utf8_normalize(pc.fill_null(text, ""), self.params.normalization)
            changed = pc.fill_null(pc.not_equal(normal, text), False)
            counts["normalized"] = np.asarray(changed, dtype=np.int64)
            text = pc.if_else(changed, normal, text)
        was_empty = _blank(text)
        text = self._remove_lines(text, self._languages(batch), counts)
        batch = set_column(batch, "text", text)
        empty = pc.and_(_blank(text), pc.invert(was_empty))   # emptied here (an empty input is the reader's)
        batch = mark_rejects(batch, self.name, pc.if_else(empty, pa.scalar("empty_after_repair"), pa.scalar(None, pa.string())))
        return set_column(batch, STAGE_COUNTS, counts_column(counts, batch.num_rows))

    def _fix(self, text: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """ftfy on the documents that show a sign of breakage; the others untouched."""
        suspect = np.asarray(pc.fill_null(pc.match_substring_regex(text, MAYBE_BROKEN), False), dtype=bool)
        fixed = np.zeros(len(text), dtype=np.int64)
        if not suspect.any():
            return text, fixed
        idx = np.flatnonzero(suspect)
        before = text.take(pa.array(idx)).to_pylist()
        after = [self._ftfy(t) for t in before]
        fixed[idx] = [a != b for a, b in zip(after, before)]
        mask = np.zeros(len(text), dtype=bool)
        mask[idx[fixed[idx] == 1]] = True
        if not mask.any():
            return text, fixed
        return pc.replace_with_mask(text, pa.array(mask), pa.array([a for a, f in zip(after, fixed[idx]) if f],
                                                                    text.type)), fixed

    def _languages(self, batch: pa.Table) -> pa.Array:
        """Each row's language, ``fallback_language`` where it has none (or ``und``)."""
        fallback = pa.scalar(self.params.fallback_language)
        if "language" not in batch.column_names:
            return pa.repeat(fallback, batch.num_rows)
        lang = pc.fill_null(batch["language"], fallback)
        lang = lang.combine_chunks() if isinstance(lang, pa.ChunkedArray) else lang
        return pc.if_else(pc.equal(lang, "und"), fallback, lang)

    def _remove_lines(self, text: pa.Array, langs: pa.Array, counts: dict) -> pa.Array:
        """Every rule over every line of the batch; rows that lost a line are joined again."""
        lines = pc.split_pattern(pc.fill_null(text, ""), "\n")
        flat = lines.flatten()
        parent = np.asarray(pc.list_parent_indices(lines).to_numpy(zero_copy_only=False), dtype=np.int64)
        line_lang = langs.take(pa.array(parent)) if len(parent) else pa.array([], pa.string())
        lower = pc.utf8_lower(flat)
        blank = np.asarray(pc.equal(pc.utf8_trim_whitespace(flat), ""), dtype=bool)
        words = np.asarray(pc.count_substring_regex(flat, WORDS), dtype=np.int64)
        removed = blank.copy()        # blank lines are never removed; they stand for "already decided"
        for rule, hit in self._rules(flat, lower, line_lang, words):
            hit = hit & ~removed
            if hit.any():
                counts[f"lines:{rule}"] = np.bincount(parent[hit], minlength=len(text)).astype(np.int64)
            removed |= hit
        removed &= ~blank
        if not removed.any():
            return text
        keep = ~removed
        offsets = np.concatenate([[0], np.cumsum(np.bincount(parent[keep], minlength=len(text)))]).astype(np.int32)
        kept = pa.ListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(keep)))
        joined = pc.binary_join(kept, pa.scalar("\n", flat.type))
        touched = pa.array(np.bincount(parent[removed], minlength=len(text)) > 0)
        return pc.if_else(touched, joined.cast(text.type), text)

    def _rules(self, flat: pa.Array, lower: pa.Array, line_lang: pa.Array, words: np.ndarray):
        p = self.params

        def has(pattern: str) -> np.ndarray:
            return np.asarray(pc.match_substring_regex(lower, pattern), dtype=bool)

        short = words <= p.c4_max_words
        if p.javascript:
            yield "javascript", has("javascript") & short
        if p.lorem_ipsum:
            yield "lorem_ipsum", has("lorem ipsum")
        if p.policy:
            yield "policy", has(_phrases_regex(tuple(POLICY))) & short
        if p.boilerplate:
            yield "boilerplate", self._per_language(lower, line_lang, lambda lp: _phrases_regex(
                tuple(lp.text_repair.boilerplate))) & (words <= p.boilerplate_max_words)
        if p.min_words_per_line:
            yield "short", words < p.min_words_per_line
        if p.no_terminal_punctuation:
            yield "no_terminal_punctuation", ~self._per_language(flat, line_lang,
                                                                 lambda lp: _ends_regex(lp.terminal_punctuation))

    def _per_language(self, lines: pa.Array, line_lang: pa.Array, pattern_of) -> np.ndarray:
        """A regex per language (from its parameters) over the lines of that language's rows."""
        out = np.zeros(len(lines), dtype=bool)
        for lang in pc.unique(line_lang).to_pylist():
            pattern = pattern_of(self.languages.get(lang)) if self.languages is not None else ""
            if not pattern:
                continue
            mine = np.asarray(pc.equal(line_lang, lang), dtype=bool)
            idx = np.flatnonzero(mine)
            out[idx] = np.asarray(pc.match_substring_regex(lines.take(pa.array(idx)), pattern), dtype=bool)
        return out
