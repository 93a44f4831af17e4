"""``quality_fasttext``: score every document with a fastText quality classifier (``base``: the
rule, the score column, the per-language cut). The model loads once per actor; a missing or
corrupt model, or one without the positive label, fails the config before any work.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa
from pydantic import Field

from tokenmill.engine.stage import Resources, register_stage

from .base import QualityFilter, RuleParams
from .fasttext_model import load, positive_scores, resolve


class QualityParams(RuleParams):
    model_path: str = Field(description="a folder written by train-quality, or a fastText .bin")
    positive_label: Optional[str] = Field(None, description="the positive label of a .bin (default __label__hq)")

    @staticmethod
    def check(params: QualityParams):
        """Before any work: the model exists, loads, and has the positive label."""
        try:
            load(resolve(params.model_path, params.positive_label))
        except (FileNotFoundError, ValueError) as e:
            yield ("model_path", str(e))


@register_stage("quality_fasttext")
class QualityFastText(QualityFilter):
    name = "quality_fasttext"
    Params = QualityParams
    default_resources = Resources(num_cpus=1, concurrency=2, batch_size=2000)
    check_params = staticmethod(QualityParams.check)

    def setup(self) -> None:
        self.ref = resolve(self.params.model_path, self.params.positive_label)
        self.model = load(self.ref)
        self.threads = max(1, int(self.resources.num_cpus or 1))

    def scores(self, batch: pa.Table) -> np.ndarray:
        text = batch["text"].combine_chunks() if isinstance(batch["text"], pa.ChunkedArray) else batch["text"]
        return positive_scores(self.model, text, self.ref.positive, self.threads)
