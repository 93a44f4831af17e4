"""Common Crawl snapshots by name: ``input.common_crawl`` -> the URLs of the chosen shards.

``{snapshot: CC-MAIN-2025-26, kind: wet, shards: "0-999", base_url: https://data.commoncrawl.org}``
reads ``<base_url>/crawl-data/<snapshot>/<kind>.paths.gz`` (gzip text, one path per line, in the
crawl's order; through fsspec, so ``s3://commoncrawl``, an HTTP mirror or a local folder with the
same layout all work) and takes the listed shards, each as ``<base_url>/<path>``:

- ``shards: "0-999"``: an inclusive range of line numbers (from 0); ``"5"`` one shard;
- ``shards: [0, 7, "10-19"]``: a list of both;
- ``shards: {fraction: 0.01, seed: 0}``: that share of all shards, drawn with the seed (the same
  draw on every run and machine), in the crawl's order;
- ``shards: all`` (the default).

A shard past the end of the paths file is an error naming the paths file and its length. The URLs
are the run's input files (``snapshot_files``: taken as listed, with no request per shard): the
ledger of an incremental run records each, so a later run over more snapshots (or a wider range)
takes each shard once.
"""
from __future__ import annotations

import random
import re
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

SNAPSHOT = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


class ShardFraction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fraction: float = Field(gt=0, le=1, description="share of the snapshot's shards, drawn with the seed")
    seed: int = 0


class CommonCrawlInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    snapshot: str = Field(description="the crawl's name, e.g. CC-MAIN-2025-26")
    kind: Literal["wet", "warc"] = Field("wet", description="wet: extracted text (conversion records); warc: HTML "
                                         "responses, extracted by tokenmill")
    shards: Union[Literal["all"], str, int, list[Union[int, str]], ShardFraction] = Field(
        "all", description='line numbers of the paths file: "0-999", [0, 7, "10-19"], {fraction: 0.01, seed: 0}')
    base_url: str = Field("https://data.commoncrawl.org", description="where the crawl-data/ tree is: "
                          "https://data.commoncrawl.org, s3://commoncrawl, or a mirror / local folder with its layout")

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, v: str) -> str:
        if not SNAPSHOT.match(v):
            raise ValueError(f"expected a snapshot name like CC-MAIN-2025-26, got {v!r}")
        return v

    @field_validator("shards")
    @classmethod
    def _shards(cls, v):
        items = v if isinstance(v, list) else [v] if isinstance(v, (str, int)) and v != "all" else []
        for item in items:
            if isinstance(item, str) and not _RANGE.match(item):
                raise ValueError(f"a shard is a number or a range like '0-999', got {item!r}")
            if isinstance(item, int) and item < 0:
                raise ValueError(f"shard numbers start at 0, got {item}")
            m = _RANGE.match(item) if isinstance(item, str) else None
            if m and m.group(2) and int(m.group(2)) < int(m.group(1)):
                raise ValueError(f"the range {item!r} ends before it starts")
        return v

    def paths_file(self) -> str:
        return f"{self.base_url.rstrip('/')}/crawl-data/{self.snapshot}/{self.kind}.paths.gz"


def read_paths_file(url: str) -> list[str]:
    """The lines of a gzip paths file (blank lines left out); a transient store error (a timeout, a
    reset, throttling) is retried with the run's ``io`` policy before anything is reported."""
    import fsspec

    from tokenmill.engine.io.transient import is_transient, retry

    def read() -> list[str]:
        with fsspec.open(url, "rt", compression="gzip", encoding="utf-8") as fh:
            return [line.strip() for line in fh if line.strip()]

    try:
        return retry(read, what=f"reading {url}")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no paths file at {url} (is the snapshot name right?)") from e
    except (OSError, EOFError, UnicodeDecodeError) as e:   # not gzip, cut short, not text; retries spent
        what = "the store kept failing" if is_transient(e) else "cannot read it"
        raise OSError(f"the paths file {url}: {what}: {e}") from e


def shard_numbers(shards, count: int, where: str) -> list[int]:
    """The chosen line numbers, in order, each once; an error past ``count``."""
    if shards == "all":
        return list(range(count))
    if isinstance(shards, ShardFraction):
        k = max(1, round(count * shards.fraction))
        return sorted(random.Random(shards.seed).sample(range(count), min(k, count)))
    chosen: list[int] = []
    for item in shards if isinstance(shards, list) else [shards]:
        if isinstance(item, int):
            chosen.append(item)
            continue
        m = _RANGE.match(item)
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        chosen += range(lo, hi + 1)
    past = [n for n in chosen if n >= count]
    if past:
        raise ValueError(f"shard {past[0]} is past the end of {where} ({count} shards, "
                         f"numbered 0-{count - 1})")
    return sorted(set(chosen))


def snapshot_files(cc: CommonCrawlInput, fmt: str = "auto") -> list:
    """The chosen shards as the run's input files, straight from the paths file: no listing and no
    request per shard (a snapshot's files never change: the snapshot is their stamp)."""
    from tokenmill.engine.io.listing import InputFile, detect_format

    out = []
    for url in snapshot_urls(cc):
        source = url[len(cc.base_url.rstrip("/")) + 1:]
        out.append(InputFile(url, source, fmt if fmt != "auto" else detect_format(url) or cc.kind,
                             listed=(None, cc.snapshot)))
    return out


def snapshot_urls(cc: CommonCrawlInput, lines: Optional[list[str]] = None) -> list[str]:
    """The URLs of the chosen shards of a snapshot."""
    where = cc.paths_file()
    lines = read_paths_file(where) if lines is None else lines
    base = cc.base_url.rstrip("/")
    return [f"{base}/{lines[n].lstrip('/')}" for n in shard_numbers(cc.shards, len(lines), where)]
