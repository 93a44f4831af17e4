"""Per-language parameters (FineWeb-2 style): one YAML file per language, the same keys in each.

Resolution for a language ``xx``: the built-in defaults below (the published Gopher / C4 /
FineWeb thresholds), then the pipeline's ``languages.defaults``, then
``<languages.dir>/xx.yaml``, then the pipeline's ``languages.overrides.xx``. A language with
no file gets the defaults, so hundreds of languages need no hundreds of files or DAG branches.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field


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
    min_sentences: int = Field(5, ge=0, description="lines ending in terminal punctuation with >= min_words_per_line words")
    min_words_per_line: int = Field(3, ge=0)
    max_word_length: int = Field(1000, ge=1)
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    filter_javascript: bool = False
    filter_policy: bool = False


class FineWeb(BaseModel):
    """Penedo et al. 2024 (FineWeb) custom filters."""

    model_config = ConfigDict(extra="forbid")
    line_punct_thr: float = Field(0.12, ge=0, le=1)
    short_line_thr: float = Field(0.67, ge=0, le=1)
    short_line_length: int = Field(30, ge=0)
    char_duplicates_ratio: float = Field(0.01, ge=0, le=1)
    new_line_ratio: float = Field(0.3, ge=0)


class LanguageParams(BaseModel):
    """Everything a stage may need to know about one language."""

    model_config = ConfigDict(extra="forbid")
    language: Optional[str] = None
    name: Optional[str] = None
    script: Optional[str] = None
    lid_threshold: float = Field(0.5, ge=0, le=1)
    word_tokenizer: Literal["whitespace", "cjk", "thai"] = "whitespace"
    minhash_char_ngram: int = Field(5, ge=1, description="minhash_dedup: character n-gram length for cjk/thai tokenizers")
    terminal_punctuation: str = ".!?\"'”’»)"
    stopwords: list[str] = Field(default_factory=list)
    gopher_quality: GopherQuality = Field(default_factory=GopherQuality)
    gopher_repetition: GopherRepetition = Field(default_factory=GopherRepetition)
    c4: C4 = Field(default_factory=C4)
    fineweb: FineWeb = Field(default_factory=FineWeb)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_language_files(directory: Path) -> dict[str, dict]:
    """Read every ``<iso>.yaml`` in a folder (raw dicts; validated when resolved)."""
    files: dict[str, dict] = {}
    if directory and directory.is_dir():
        for path in sorted(directory.glob("*.yaml")):
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a mapping of language parameters")
            files[path.stem] = data
    return files


class LanguageTable:
    """Resolved parameters per language, cached; picklable so it travels to actors."""

    def __init__(self, defaults: dict | None = None, files: dict[str, dict] | None = None,
                 overrides: dict[str, dict] | None = None, folder: str | None = None):
        self.folder = folder  # where the files came from (reported with the run)
        self.defaults = defaults or {}
        self.files = files or {}
        self.overrides = overrides or {}
        self._cache: dict[str, LanguageParams] = {}

    def raw(self, lang: str) -> dict[str, Any]:
        merged = deep_merge(self.defaults, self.files.get(lang, {}))
        merged = deep_merge(merged, self.overrides.get(lang, {}))
        merged.setdefault("language", lang)
        return merged

    def get(self, lang: Optional[str]) -> LanguageParams:
        key = lang or "und"
        if key not in self._cache:
            self._cache[key] = LanguageParams.model_validate(self.raw(key))
        return self._cache[key]

    def languages_with_files(self) -> list[str]:
        return sorted(self.files)
