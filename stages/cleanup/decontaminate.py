"""``decontaminate``: documents that hold benchmark text (eval items) are rejected or annotated.

```yaml
- {type: decontaminate, eval_sets: [{name: mmlu, path: evals/mmlu.jsonl, text_fields: [question, choices]}], ngram: 13}
```

The eval sets' word n-grams (``eval_index``: the normalisation of MinHash's shingles, so case,
punctuation, spacing and line breaks never matter) are indexed once per run on the driver
(``prepare``) and loaded once per worker (``setup``). A document that shares at least
``min_matches`` distinct n-grams with one eval item (an item with fewer n-grams: all of them; an
item shorter than ``ngram`` words: its whole text, once) is *contaminated* by it. With
``mode: reject`` it is rejected as ``contaminated:<eval set>`` (the set of the item it shares most
with); with ``mode: annotate`` it is kept. Either way its ``contamination`` column says which eval
set, which items (up to 10, ``set/id``) and how many distinct n-grams it shares, and the report
lists, per eval set, the contaminated documents and the items that leaked most.

Text in scripts written without spaces (Chinese, Japanese, Thai...) is matched by character
n-grams (``char_ngram``: 50 letters, marks and digits) besides words. Items under ``min_item_words`` words (or
``min_item_chars`` such characters) are not indexed.
"""
from __future__ import annotations

import os
from typing import Literal, Optional

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from tokenmill.engine.counts import STAGE_COUNTS, counts_column
from tokenmill.engine.plan import file_stamp
from tokenmill.engine.schema import mark_rejects, set_column
from tokenmill.engine.stage import Stage, register_stage
from tokenmill.stages.cleanup import eval_index

CONTAMINATION = pa.struct([("eval_set", pa.string()), ("items", pa.list_(pa.string())), ("ngrams", pa.int64())])
ITEMS_SHOWN = 10


class EvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., pattern=r"^[^\s:/]+$", description="the eval set's name (reasons, report)")
    path: str = Field(..., description="JSONL (.jsonl, .jsonl.gz) or Parquet file, local or on an object store")
    text_fields: list[str] = Field(["text"], min_length=1, description="fields joined into an item's text")
    id_field: str = Field("id", description="the item's id (absent: its position in the file)")


class DecontParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eval_sets: list[EvalSet] = Field(..., min_length=1, description="the benchmarks to find")
    ngram: int = Field(13, ge=2, le=64, description="words per n-gram")
    min_matches: int = Field(1, ge=1, description="distinct n-grams a document must share with one item")
    min_item_words: int = Field(5, ge=1, description="shorter items are not indexed (a 2-word answer is everywhere)")
    char_ngram: int = Field(50, ge=2, le=200, description="characters per n-gram of text in scripts without spaces "
                                                          "(Chinese, Japanese, Thai...)")
    min_item_chars: int = Field(10, ge=1, description="such items with fewer characters are not indexed")
    mode: Literal["reject", "annotate"] = Field("reject", description="reject contaminated documents, or only annotate them")
    top_items: int = Field(10, ge=0, description="items listed per eval set in the report")
    index: Optional[str] = Field(None, description="set by the run: the folder of the index it built")


@register_stage("decontaminate")
class Decontaminate(Stage):
    name = "decontaminate"
    Params = DecontParams
    adds = {"contamination": CONTAMINATION}

    @classmethod
    def path_params(cls, raw: dict) -> tuple[str, ...]:
        sets = raw.get("eval_sets")
        return tuple(f"eval_sets.{i}.path" for i in range(len(sets))) if isinstance(sets, list) else ()

    @classmethod
    def check_params(cls, params: DecontParams):
        names = [ev.name for ev in params.eval_sets]
        for i, ev in enumerate(params.eval_sets):
            if names.index(ev.name) != i:
                yield f"eval_sets[{i}].name", f"duplicate eval set name {ev.name!r}"
            if "://" not in ev.path and not os.path.isfile(ev.path):
                yield f"eval_sets[{i}].path", f"file not found: {ev.path}"
            elif not ev.path.endswith((".jsonl", ".jsonl.gz", ".json", ".parquet")):
                yield f"eval_sets[{i}].path", "expected a .jsonl, .jsonl.gz or .parquet file"

    @classmethod
    def prepare(cls, params: DecontParams, folder: str) -> DecontParams:
        eval_index.build(params.eval_sets, params.ngram, params.min_item_words, folder, params.char_ngram,
                         params.min_item_chars)
        return params.model_copy(update={"index": folder})

    def external_state(self, run_id: str) -> list:
        """The eval files' sizes and stamps: a changed eval set redoes the run."""
        return [[ev.path, *file_stamp(ev.path)] for ev in self.params.eval_sets]

    def setup(self) -> None:
        folder = self.params.index
        if folder is None:   # a stage built outside a run (a unit test): index beside nothing
            raise RuntimeError("decontaminate: no index (the run builds it in prepare())")
        self.index = eval_index.EvalIndex(folder)

    def __call__(self, batch: pa.Table) -> pa.Table:
        doc, item, shared = self.index.matches(batch["text"])
        need = np.minimum(self.params.min_matches, self.index.ngrams[item]) if len(item) else item
        hit = shared >= np.maximum(need, 1)
        doc, item, shared = doc[hit], item[hit], shared[hit]
        col, sets = self._annotations(batch.num_rows, doc, item, shared)
        batch = set_column(batch, "contamination", col)
        if self.params.mode == "reject":
            batch = mark_rejects(batch, self.name, pa.array([f"contaminated:{s}" if s else None for s in sets], pa.string()))
        return set_column(batch, STAGE_COUNTS, self._counts(batch.num_rows, doc, item))

    def _annotations(self, n: int, doc: np.ndarray, item: np.ndarray, shared: np.ndarray):
        """The ``contamination`` value of each row and the eval set it is charged to."""
        rows: list = [None] * n
        sets: list = [None] * n
        order = np.lexsort((item, -shared, doc))   # per document: the item it shares most with first
        for d in np.unique(doc):
            mine = order[doc[order] == d]
            best = self.index.eval_set[item[mine[0]]]
            names = [f"{self.index.eval_set[i]}/{self.index.item_id[i]}" for i in item[mine[:ITEMS_SHOWN]]]
            rows[d] = {"eval_set": best, "items": names, "ngrams": int(shared[mine].sum())}
            sets[d] = best
        return pa.array(rows, CONTAMINATION), sets

    def _counts(self, n: int, doc: np.ndarray, item: np.ndarray) -> pa.Array:
        """Per row: 1 under ``set:<name>`` for each eval set it is contaminated by, and 1 under
        ``item:<set>/<id>`` for each item."""
        keys: dict[str, np.ndarray] = {}
        for d, i in zip(doc.tolist(), item.tolist()):
            for key in (f"set:{self.index.eval_set[i]}", f"item:{self.index.eval_set[i]}/{self.index.item_id[i]}"):
                keys.setdefault(key, np.zeros(n, np.int64))[d] = 1
        return counts_column(keys, n)

    @classmethod
    def report_counts(cls, params: DecontParams, counts: dict[str, int]) -> dict:
        """Per eval set: contaminated documents and the items found in most documents."""
        out = {}
        for ev in params.eval_sets:
            items = sorted(((k.split("/", 1)[1], n) for k, n in counts.items() if k.startswith(f"item:{ev.name}/")),
                           key=lambda kv: (-kv[1], kv[0]))
            out[ev.name] = {"contaminated_docs": counts.get(f"set:{ev.name}", 0), "items_leaked": len(items),
                            "top_items": [{"item": i, "docs": n} for i, n in items[:params.top_items]]}
        return {"mode": params.mode, "eval_sets": out}
