"""Per-language parameters (FineWeb-2 style): one YAML file per language, the same keys in each.

Resolution for a language ``xx``: the built-in defaults (``LanguageFacts`` and what each stage
family registers: the published Gopher / C4 / FineWeb thresholds, the langid threshold), then the pipeline's ``languages.defaults``, then
``<languages.dir>/xx.yaml``, then the pipeline's ``languages.overrides.xx``. A language with
no file gets the defaults, so hundreds of languages need no hundreds of files or DAG branches.
"""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model


class LanguageFacts(BaseModel):
    """What every language has, whichever stages run: its name, script and how its words split.
    Stage families add their own sections and keys (``register_language_params``)."""

    model_config = ConfigDict(extra="forbid")
    language: Optional[str] = None
    name: Optional[str] = None
    script: Optional[str] = None
    word_tokenizer: Literal["whitespace", "cjk", "thai", "khmer", "lao", "myanmar"] = "whitespace"
    terminal_punctuation: str = ".!?\"'”’»)"
    stopwords: list[str] = Field(default_factory=list)


#: parameters stage families registered: key -> (type, pydantic Field with its default)
_REGISTERED: dict[str, tuple[Any, Any]] = {}


def register_language_params(**fields: tuple[Any, Any]) -> None:
    """Add keys to every language's parameters: ``name=(type, Field(default...))``. A stage family
    calls it when its module is imported (e.g. the heuristics' Gopher/C4/FineWeb sections, the
    langid threshold), so its parameter models live with it and the engine names none."""
    _REGISTERED.update(fields)
    language_params_model.cache_clear()


@lru_cache(maxsize=1)
def language_params_model() -> type[BaseModel]:
    """``LanguageFacts`` plus every registered key (built-in stages are loaded first)."""
    from tokenmill.engine.stage import load_builtins

    load_builtins()
    model = create_model("LanguageParams", __base__=LanguageFacts, **_REGISTERED)
    model.__module__ = __name__   # pickled by reference: this module's __getattr__ rebuilds it
    return model


def __getattr__(name: str):
    if name == "LanguageParams":
        return language_params_model()
    raise AttributeError(name)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


#: libyaml's loader where PyYAML was built with it: 24 language files in 0.1 s instead of 0.8 s
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_language_files(directory: Path) -> dict[str, dict]:
    """Read every ``<iso>.yaml`` in a folder (raw dicts; validated when resolved)."""
    files: dict[str, dict] = {}
    if directory and directory.is_dir():
        for path in sorted(directory.glob("*.yaml")):
            with open(path, encoding="utf-8") as fh:
                data = yaml.load(fh, Loader=_YAML_LOADER) or {}
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
        self._cache: dict[str, BaseModel] = {}

    def raw(self, lang: str) -> dict[str, Any]:
        merged = deep_merge(self.defaults, self.files.get(lang, {}))
        merged = deep_merge(merged, self.overrides.get(lang, {}))
        merged.setdefault("language", lang)
        return merged

    def get(self, lang: Optional[str]) -> BaseModel:
        """The parameters of ``lang`` (``und`` for None), validated once."""
        key = lang or "und"
        if key not in self._cache:
            self._cache[key] = language_params_model().model_validate(self.raw(key))
        return self._cache[key]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}   # a worker validates its own (cheap, and no model class travels)

    def languages_with_files(self) -> list[str]:
        return sorted(self.files)
