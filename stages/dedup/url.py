"""Captures of one URL across the input: a crawl fetches many pages more than once.

``url_dedup`` (a global stage): every document with a URL gets ``url_key``, a 64-bit hash of the
URL with its scheme and host lower-cased and its fragment dropped, and ``capture_date``, the
``warc_date`` of its record (WARC/WET ``meta``; null for other input). One shuffle of those keys
(never the text) brings each URL's captures together. With ``remove: true`` (the default) the
latest capture is kept (``keep: latest``; ``keep: first``: the first in input order; ties go to
input order) and the others are rejected as ``duplicate_url_of:<kept id>``; with ``remove:
false`` nothing is rejected. Either way the report's ``global_steps.url_dedup`` says how many URLs
were captured more than once and how many documents the extra captures are.
"""
from __future__ import annotations

import hashlib
from typing import Literal, Optional
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from tokenmill.engine.schema import set_column
from tokenmill.engine.stage import GlobalStage, Resources, register_stage

from .order import first_by_key

URL_KEY, CAPTURE = "url_key", "capture_date"
DECISIONS = pa.schema([("row_key", pa.string()), ("reject_reason", pa.string()), ("node", pa.int64())])
SUMMARY = pa.schema([("urls_captured_more_than_once", pa.int64()), ("extra_captures", pa.int64())])


class UrlDedupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    remove: bool = Field(True, description="reject every capture of a URL but one (false: only report them)")
    keep: Literal["latest", "first"] = Field("latest", description="the capture kept: the latest warc_date, or the "
                                             "first in input order")


def url_hash(url: Optional[str]) -> Optional[int]:
    """A stable signed 64-bit hash of a URL, scheme and host lower-cased, fragment dropped."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        norm = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))
    except ValueError:
        norm = url.strip()
    digest = hashlib.blake2b(norm.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def capture_dates(meta: pa.Array) -> pa.Array:
    """``warc_date`` of each row's ``meta`` JSON (null where absent)."""
    found = pc.extract_regex(pc.fill_null(meta, ""), r'"warc_date": "(?P<d>[^"]*)"')
    return pc.struct_field(found, "d")


def decide(rows: Optional[pa.Table], remove: bool, keep: str) -> pa.Table:
    """One partition: a decision row for every capture but the kept one of each URL (when
    ``remove``), and one summary row."""
    if rows is None or rows.num_rows == 0:
        return _out(DECISIONS.empty_table(), 0, 0)
    rows, first, winner = first_by_key(rows, URL_KEY, ((CAPTURE, "descending"),) if keep == "latest" else ())
    sizes = np.diff(np.r_[np.flatnonzero(first), len(first)])
    extra = ~first
    decisions = DECISIONS.empty_table()
    if remove and extra.any():
        reasons = pc.binary_join_element_wise(pa.scalar("duplicate_url_of:"), pa.array(winner[extra], pa.string()), "")
        decisions = pa.table({"row_key": rows["row_key"].filter(pa.array(extra)), "reject_reason": reasons,
                              "node": rows["node"].filter(pa.array(extra))}, schema=DECISIONS)
    return _out(decisions, int((sizes > 1).sum()), int(extra.sum()))


def _out(decisions: pa.Table, urls: int, extra: int) -> pa.Table:
    """Decisions with the partition's two counts on one extra row (row_key null), split again by
    ``decisions_only`` and ``summary``."""
    counts = pa.table({"row_key": pa.nulls(1, pa.string()), "reject_reason": [f"{urls}:{extra}"],
                       "node": pa.array([-1], pa.int64())}, schema=DECISIONS)
    return pa.concat_tables([decisions, counts])


def decisions_only(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_valid(table["row_key"]))


def summary(table: pa.Table) -> pa.Table:
    counts = table.filter(pc.is_null(table["row_key"]))["reject_reason"].to_pylist()
    pairs = [tuple(map(int, c.split(":"))) for c in counts] or [(0, 0)]
    return pa.table({"urls_captured_more_than_once": [sum(p[0] for p in pairs)],
                     "extra_captures": [sum(p[1] for p in pairs)]}, schema=SUMMARY)


def with_url(table: pa.Table) -> pa.Table:
    """Rows that have a URL (the shuffle's key must be set)."""
    return table.filter(pc.is_valid(table[URL_KEY]))


@register_stage("url_dedup")
class UrlDedup(GlobalStage):
    name = "url_dedup"
    Params = UrlDedupParams
    adds = {URL_KEY: pa.int64(), CAPTURE: pa.string()}
    internal_columns = (URL_KEY, CAPTURE)
    default_resources = Resources(num_cpus=1, concurrency=1, batch_size=2000)

    @classmethod
    def report_reason(cls, reasons: pa.Array) -> pa.Array:
        """Every ``duplicate_url_of:<id>`` is counted as ``duplicate_url``."""
        dup = pc.starts_with(pc.fill_null(reasons, ""), "duplicate_url_of:")
        return pc.if_else(dup, pa.scalar("duplicate_url"), reasons)

    def __call__(self, batch: pa.Table) -> pa.Table:
        keys = pa.array([url_hash(u) for u in batch["url"].to_pylist()], pa.int64())
        batch = set_column(batch, URL_KEY, keys)
        return set_column(batch, CAPTURE, capture_dates(batch["meta"]))

    def shuffle_columns(self) -> list[str]:
        return [URL_KEY, CAPTURE, "row_key", "id"]

    def global_step(self, ops, keys) -> tuple[object, dict]:
        decided = ops.materialize(ops.partition_map([ops.map(keys, with_url)], URL_KEY, decide,
                                                    remove=self.params.remove, keep=self.params.keep))
        counts = ops.collect(ops.map(decided, summary))
        figures = {name: int(sum(counts[name].to_pylist())) for name in SUMMARY.names}
        return ops.map(decided, decisions_only), figures
