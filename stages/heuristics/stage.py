"""The ``heuristics`` stage (all chosen rule families in one actor, words split once) and one
stage per family (``gopher_quality``, ``gopher_repetition``, ``c4_quality``,
``fineweb_quality``) for pipelines that want them as separate steps.

A rejected document's reason is ``<family>:<check>``, e.g. ``gopher_quality:min_stop_words``.
``compat: datatrove`` decides as datatrove 0.10.1's filters do (datatrove_compat.py; needs spaCy).
"""
from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from tokenmill.engine.schema import REJECT_THRESHOLD, REJECT_VALUE, live_mask, mark_rejects, set_column
from tokenmill.engine.stage import Resources, Stage, register_stage

from . import datatrove_compat, measures, rules
from .words import DocView

Family = Literal["gopher_quality", "gopher_repetition", "c4", "fineweb"]
ALL_FAMILIES: list[str] = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]


Compat = Literal["tokenmill", "datatrove"]
COMPAT_HELP = ("tokenmill: the rules as their papers state them (README: Heuristics); datatrove: "
               "datatrove 0.10.1's filters decision for decision (spaCy words and sentences), to rerun FineWeb's recipe")


class CompatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    compat: Compat = Field("tokenmill", description=COMPAT_HELP)


class HeuristicsParams(CompatParams):
    rules: list[Family] = Field(default_factory=lambda: list(ALL_FAMILIES), min_length=1)


def check_document(text: str, lang_params, families: list[str], stopwords: frozenset,
                   taken: dict | None = None) -> str | None:
    """The first failing check as ``family:check`` (a ``rules.Fail``), or None; the measures the
    rules took (``measures.py``) go into ``taken`` when given."""
    doc = DocView(text, lang_params.word_tokenizer)
    m = taken
    for fam in families:
        if fam == "gopher_quality":
            why = rules.gopher_quality(doc, lang_params.gopher_quality, stopwords, m)
        elif fam == "gopher_repetition":
            why = rules.gopher_repetition(doc, lang_params.gopher_repetition, m)
        elif fam == "c4":
            why = rules.c4(doc, lang_params.c4, lang_params.terminal_punctuation, m)
        else:
            why = rules.fineweb(doc, lang_params.fineweb, lang_params.terminal_punctuation, m)
        if why:
            return rules.Fail(f"{fam}:{why}", why.value, why.threshold)
    return None


def with_reject_measure(batch: pa.Table, reasons: list) -> pa.Table:
    """``reject_value`` / ``reject_threshold`` of the rows this stage rejected (the failing check's
    measure and the bound it crossed, for the report's examples and ``tokenmill inspect``)."""
    new = pc.and_(live_mask(batch), pa.array([r is not None for r in reasons]))
    for col, attr in ((REJECT_VALUE, "value"), (REJECT_THRESHOLD, "threshold")):
        ours = pa.array([getattr(r, attr, None) for r in reasons], pa.float64())
        old = batch[col] if col in batch.column_names else pa.nulls(batch.num_rows, pa.float64())
        batch = set_column(batch, col, pc.if_else(new, ours, old))
    return batch


@register_stage("heuristics")
class Heuristics(Stage):
    name = "heuristics"
    Params = HeuristicsParams
    adds = {REJECT_VALUE: pa.float64(), REJECT_THRESHOLD: pa.float64(), measures.MEASURES: measures.MEASURES_TYPE}
    internal_columns = (REJECT_VALUE, REJECT_THRESHOLD, measures.MEASURES)   # in rejects/, not in the curated data
    measures_column = measures.MEASURES
    measure_bins = measures.BINS

    @classmethod
    def measure_thresholds(cls, params, lang_params) -> dict[str, list[float]]:
        return measures.thresholds(lang_params)
    default_resources = Resources(num_cpus=1, concurrency=2, batch_size=500)

    @classmethod
    def check_params(cls, params: CompatParams):
        if params.compat == "datatrove":
            try:
                import spacy  # noqa: F401
            except ImportError:
                yield "compat", "compat: datatrove splits words and sentences with spaCy: pip install 'tokenmill[compat]'"

    def families(self) -> list[str]:
        return list(self.params.rules)

    def setup(self) -> None:
        self._stopwords: dict[str, frozenset] = {}
        self._spacy = datatrove_compat.SpacyText() if self.params.compat == "datatrove" else None

    def _stop(self, lang: str, params) -> frozenset:
        if lang not in self._stopwords:
            self._stopwords[lang] = frozenset(w.lower() for w in params.stopwords)
        return self._stopwords[lang]

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not hasattr(self, "_stopwords"):
            self.setup()
        texts = batch["text"].to_pylist()
        langs = batch["language"].to_pylist() if "language" in batch.column_names else [None] * batch.num_rows
        fams = self.families()
        reasons, taken = [], []
        for text, lang in zip(texts, langs):
            params = self.languages.get(lang)
            if self._spacy is not None:
                reasons.append(datatrove_compat.check_document(text or "", lang, params, fams, self._spacy))
                taken.append(None)
            else:
                m: dict = {}
                reasons.append(check_document(text or "", params, fams, self._stop(lang, params), m))
                taken.append(m or None)
        batch = set_column(with_reject_measure(batch, reasons), measures.MEASURES, self._measured(batch, taken))
        return mark_rejects(batch, self.name, pa.array(reasons, pa.string()))

    @staticmethod
    def _measured(batch: pa.Table, taken: list) -> pa.Array:
        """The measures column with this stage's measures on the live rows, an earlier heuristics
        stage's (one family per stage) kept where this one took none."""
        ours = pa.array(taken, measures.MEASURES_TYPE)
        if measures.MEASURES not in batch.column_names:
            return pc.if_else(live_mask(batch), ours, pa.nulls(batch.num_rows, measures.MEASURES_TYPE))
        old = batch[measures.MEASURES].combine_chunks()
        fields = [pc.coalesce(pc.struct_field(ours, f.name), pc.struct_field(old, f.name))
                  for f in measures.MEASURES_TYPE]
        merged = pa.StructArray.from_arrays(fields, fields=list(measures.MEASURES_TYPE))
        return pc.if_else(live_mask(batch), merged, old)


@register_stage("gopher_quality")
class GopherQuality(Heuristics):
    name = "gopher_quality"
    Params = CompatParams

    def families(self) -> list[str]:
        return ["gopher_quality"]


@register_stage("gopher_repetition")
class GopherRepetition(Heuristics):
    name = "gopher_repetition"
    Params = CompatParams

    def families(self) -> list[str]:
        return ["gopher_repetition"]


@register_stage("c4_quality")
class C4Quality(Heuristics):
    name = "c4_quality"
    Params = CompatParams

    def families(self) -> list[str]:
        return ["c4"]


@register_stage("fineweb_quality")
class FineWebQuality(Heuristics):
    name = "fineweb_quality"
    Params = CompatParams

    def families(self) -> list[str]:
        return ["fineweb"]
