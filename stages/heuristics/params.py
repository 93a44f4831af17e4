"""Per-language parameters of the heuristic families (Gopher quality and repetition, C4, FineWeb):
the published thresholds as defaults, registered as sections of every language's parameters
(``gopher_quality:``, ``gopher_repetition:``, ``c4:``, ``fineweb:`` in ``configs/languages/<iso>.yaml``)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tokenmill.engine.languages import register_language_params


class GopherQuality(BaseModel):
    """Rae et al. 2021 (Gopher), quality filter; defaults as published / in datatrove."""

    model_config = ConfigDict(extra="forbid")
    min_doc_words: int = Field(50, ge=0)
    max_doc_words: int = Field(100_000, ge=1)
    min_avg_word_length: float = Field(3.0, ge=0)
    max_avg_word_length: float = Field(10.0, ge=0)
    max_symbol_word_ratio: float = Field(0.1, ge=0)
    max_bullet_lines_ratio: float = Field(0.9, ge=0, le=1)
    max_ellipsis_lines_ratio: float = Field(0.3, ge=0, le=1)
    max_non_alpha_words_ratio: float = Field(0.8, ge=0, le=1, description="at least this share of words must contain a letter")
    min_stop_words: int = Field(2, ge=0, description="applies only when the language lists stopwords")


class GopherRepetition(BaseModel):
    """Gopher repetition filter (duplicate lines/paragraphs, top and duplicated n-grams)."""

    model_config = ConfigDict(extra="forbid")
    dup_line_frac: float = Field(0.3, ge=0, le=1)
    dup_para_frac: float = Field(0.3, ge=0, le=1)
    dup_line_char_frac: float = Field(0.2, ge=0, le=1)
    dup_para_char_frac: float = Field(0.2, ge=0, le=1)
    top_n_grams: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_n_grams: dict[int, float] = Field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10})


class C4(BaseModel):
    """Raffel et al. 2020 (C4) document rules, applied without rewriting the text."""

    model_config = ConfigDict(extra="forbid")
    min_sentences: int = Field(5, ge=0, description="sentences in the lines that pass the line rules below")
    min_words_per_line: int = Field(3, ge=0)
    max_word_length: int = Field(1000, ge=1)
    filter_no_terminal_punct: bool = Field(True, description="a line must end in terminal punctuation (not an ellipsis) to count")
    filter_lorem_ipsum: bool = Field(True, description="a page with 'lorem ipsum' is dropped")
    filter_curly_bracket: bool = Field(True, description="a page with '{' is dropped")
    filter_javascript: bool = Field(True, description="a line with 'javascript' does not count")
    filter_policy: bool = Field(True, description="a line with a cookie/terms-of-use phrase (English) does not count")


class FineWeb(BaseModel):
    """Penedo et al. 2024 (FineWeb) custom filters."""

    model_config = ConfigDict(extra="forbid")
    line_punct_thr: float = Field(0.12, ge=0, le=1)
    short_line_thr: float = Field(0.67, ge=0, le=1)
    short_line_length: int = Field(30, ge=0)
    char_duplicates_ratio: float = Field(0.01, ge=0, le=1)
    new_line_ratio: float = Field(0.3, ge=0)


register_language_params(
    gopher_quality=(GopherQuality, Field(default_factory=GopherQuality)),
    gopher_repetition=(GopherRepetition, Field(default_factory=GopherRepetition)),
    c4=(C4, Field(default_factory=C4)),
    fineweb=(FineWeb, Field(default_factory=FineWeb)),
)
