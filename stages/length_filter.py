"""``length_filter``: rejects documents shorter or longer than a number of characters (the example
stage of the README's "Architecture" section: all a stage needs is this file)."""
from __future__ import annotations

from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from tokenmill.engine.schema import mark_rejects
from tokenmill.engine.stage import Stage, register_stage


class LengthParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_chars: int = Field(0, ge=0, description="shorter documents are rejected as too_short")
    max_chars: Optional[int] = Field(None, ge=1, description="longer documents are rejected as too_long")


@register_stage("length_filter")
class LengthFilter(Stage):
    name = "length_filter"
    Params = LengthParams

    def __call__(self, batch: pa.Table) -> pa.Table:
        chars = batch["num_chars"]
        reasons = pc.if_else(pc.less(chars, self.params.min_chars), "too_short", pa.scalar(None, pa.string()))
        if self.params.max_chars is not None:
            reasons = pc.if_else(pc.greater(chars, self.params.max_chars), "too_long", reasons)
        return mark_rejects(batch, self.name, reasons)
