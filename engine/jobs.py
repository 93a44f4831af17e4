"""Typed arguments of the executor interface: what a phase asks an executor to do.

Work items travel to workers as plain rows (an engine ships rows, not objects): ``input_item``
names an input file, ``part_item`` a file written by the previous stream phase together with the
decisions to apply to it; both carry the chunk they belong to.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Optional

import pyarrow as pa

from tokenmill.engine.io.listing import InputFile

# (stage name, decision file URLs for one chunk), applied in order when a part is read
Decisions = list[tuple[str, list[str]]]


def input_item(chunk: int, f: InputFile, size: int = 0) -> dict:
    return {"chunk": chunk, "path": f.path, "source": f.source, "format": f.format, "decisions": "", "bytes": size}


def part_item(chunk: int, part_url: str, decisions: Decisions) -> dict:
    return {"chunk": chunk, "path": part_url, "source": "", "format": "part", "decisions": json.dumps(decisions),
            "bytes": 0}


def item_decisions(item: dict) -> Decisions:
    return [(name, list(urls)) for name, urls in json.loads(item["decisions"])] if item.get("decisions") else []


@dataclass
class PoolSpec:
    """One pool of a stream phase: its stages, set up once per worker; the first pool of a phase
    reads the work items (``reads``), the last writes parts to ``sink_url``."""

    stages: list
    languages: Any
    schema: pa.Schema
    batch_size: int
    resources: Any = None    # Resources of the pool (what each worker asks the engine for)
    reads: bool = False
    input: Any = None        # InputConfig (phase 0 reads input files)
    tokenizer: Any = None    # TokenizerConfig
    sink_url: Optional[str] = None
    io: Any = None           # IOConfig: retries of transient errors, quarantine
    attempts_url: Optional[str] = None   # where readers mark the files they read (``durable/attempts.py``)
    #: a generating pool run as an LLM-engine step: "requests" (read, then the stage's requests)
    #: or "documents" (the stage's new rows from the engine's output, then write); None: whole
    llm_part: Optional[str] = None
    #: identity of this pool in this run: a worker process sets a pool's stages up once per key
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class StreamJob:
    """Stream ``items`` (in chunk order) through a phase's pools; the last pool writes the parts."""

    items: list[dict]
    pools: list[PoolSpec]


@dataclass(frozen=True)
class PartWritten:
    """One file a stream phase wrote: the run loop commits a chunk once its last part is in."""

    chunk: int
    file: str
    rows: int
    tokens: int = 0   # num_tokens of its live rows (a generating phase's budget counts them)


@dataclass
class GlobalJob:
    """A global stage over every live row of a phase: decisions (row_key, reject_reason) written
    under ``out_url`` partitioned by chunk (``_chunk=N/``)."""

    stage: Any               # ResolvedStage
    languages: Any
    parts: list[str]         # the phase's committed part files (URLs)
    out_url: str
    input_bytes: int         # size of the parts on disk (picks the shuffle for small runs)
    part_bases: list = field(default_factory=list)    # where each part's node ids start (its rows' offset in the run)
    chunk_bases: list = field(default_factory=list)   # where each chunk's node ids start (chunk i: item i)
    run_id: str = "run"      # the run's fingerprint prefix (names what it leaves for later runs)
    check: Any = None        # called before a step changes state other runs read (the lease's check)


@dataclass
class FinalJob:
    """Apply the last decisions to each chunk and write ``data/language=xx/`` and ``rejects/``
    under ``out_url``; each chunk's task returns its write-time statistics."""

    items: list[dict]        # one per chunk: {"chunk", "parts": [...], "decisions": json}
    schema: pa.Schema
    drop: list[str]
    out_url: str
    output: Any              # OutputConfig
    stages: list = field(default_factory=list)   # ResolvedStage: report labels of reject reasons
    name_prefix: str = ""    # starts every file name (an incremental run's number)
    io: Any = None           # IOConfig: retries of transient errors

    def without_items(self) -> FinalJob:
        """What each chunk's task needs besides its own item: the job less every chunk's items."""
        return replace(self, items=[])
