"""What every quality stage shares: its rule (a fixed ``threshold`` streamed, the top ``keep_top``
fraction of each language over the whole run in a global step, or ``annotate_only``), the
``quality_score`` column, ``low_quality`` rejects and the per-language cut (``cut``).

A subclass scores a batch (``scores``); documents without a ``language`` column (no langid before
the stage) count as one language, ``und``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenmill.engine.schema import mark_rejects, set_column
from tokenmill.engine.stage import GlobalStage

from . import cut

SCORE = "quality_score"
GROUP = "quality_language"   # working column: the language each document is cut within
REASON = "low_quality"
DECISIONS = pa.schema([("row_key", pa.string()), ("reject_reason", pa.string()), ("node", pa.int64())])


class RuleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: Optional[float] = Field(None, ge=0, le=1, description="keep documents scoring at least this")
    keep_top: Optional[float] = Field(None, gt=0, le=1, description="keep this fraction of each language's "
                                      "documents over the whole run (the best-scoring ones)")
    annotate_only: bool = Field(False, description="keep every document; only add quality_score (and, with "
                                "keep_top, record the threshold it would use)")

    @model_validator(mode="after")
    def _one_rule(self):
        if self.threshold is not None and self.keep_top is not None:
            raise ValueError("set threshold or keep_top, not both")
        if self.threshold is None and self.keep_top is None and not self.annotate_only:
            raise ValueError("set threshold or keep_top (or annotate_only: true)")
        return self


class QualityFilter(GlobalStage):
    """A stage that adds ``quality_score`` and keeps documents by the rule; a subclass defines
    ``scores(batch) -> np.ndarray`` (one score in [0, 1] per row)."""

    adds = {SCORE: pa.float64(), GROUP: pa.string()}
    internal_columns = (GROUP,)
    score_column = SCORE

    @classmethod
    def is_global_for(cls, params: RuleParams) -> bool:
        return params.keep_top is not None

    def __call__(self, batch: pa.Table) -> pa.Table:
        scores = pa.array(self.scores(batch), pa.float64())
        lang = batch["language"] if "language" in batch.column_names else pa.nulls(batch.num_rows, pa.string())
        batch = set_column(set_column(batch, SCORE, scores), GROUP, pc.fill_null(lang, "und"))
        if self.params.threshold is None or self.params.annotate_only:
            return batch
        low = pc.less(scores, self.params.threshold)
        return mark_rejects(batch, self.name, pc.if_else(low, pa.scalar(REASON), pa.scalar(None, pa.string())))

    # -- global (keep_top) ---------------------------------------------------------------------
    @classmethod
    def score_thresholds(cls, params: RuleParams, figures: dict) -> dict:
        """The cut keep_top chose per language (``figures``), else the fixed ``threshold``."""
        chosen = figures.get("thresholds", {})
        return {"*": params.threshold, **chosen} if params.threshold is not None or chosen else {}

    def shuffle_columns(self) -> list[str]:
        return ["row_key", GROUP, SCORE]

    def global_step(self, ops, keys) -> tuple[object, dict]:
        """Each language's threshold over the whole run (null in the report: keeps none, as in a
        language whose share rounds to no document); rejects below it (none with annotate_only)."""
        thresholds, docs = cut.decide(ops, keys, GROUP, SCORE, self.params.keep_top)
        figures = {"keep_top": self.params.keep_top,
                   "thresholds": {g: (t if t != float("inf") else None) for g, t in sorted(thresholds.items())},
                   "documents": dict(sorted(docs.items()))}
        if self.params.annotate_only:
            return ops.map(keys, _no_decisions), figures
        return ops.map(keys, below_threshold, thresholds=thresholds), figures


def below_threshold(keys: pa.Table, thresholds: dict) -> pa.Table:
    """Decisions for the rows scoring under their language's threshold."""
    if keys.num_rows == 0:
        return DECISIONS.empty_table()
    groups = keys[GROUP].cast(pa.string())
    uniq = pc.unique(groups)
    limit = pc.take(pa.array([thresholds.get(g, 0.0) for g in uniq.to_pylist()], pa.float64()), pc.index_in(groups, uniq))
    rows = keys.filter(pc.less(keys[SCORE].cast(pa.float64()), limit))
    return pa.table({"row_key": rows["row_key"].cast(pa.string()),
                     "reject_reason": pa.array(np.full(rows.num_rows, REASON, object), pa.string()),
                     "node": rows["node"]}, schema=DECISIONS)


def _no_decisions(keys: pa.Table) -> pa.Table:
    return DECISIONS.empty_table()
