"""A global stage's decisions land on exactly the right rows: decisions are written per chunk and
applied by a map over each chunk's files (no join of the documents), so they must hold when given
ids repeat in every file, file names repeat across folders, and every file is its own chunk."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pipeline_helpers import read_manifest_files, write_jsonl_gz

from tokenmill.engine.batches import apply_decisions, per_chunk
from tokenmill.engine.config import build_pipeline
from tokenmill.engine.executors.common import with_chunk
from tokenmill.engine.global_ops import node_ids, part_bases
from tokenmill.engine.io.readers import list_input_files
from tokenmill.engine.run import run_pipeline
from tokenmill.engine.schema import CHUNK
from tokenmill.stages.dedup.exact import normalise

TEXTS = [f"Document number {i} talks about topic {i % 7} at some length, with enough words." for i in range(12)]


def _corpus(tmp_path: Path) -> list[Path]:
    """Two folders holding files of the same names; ids 'doc-0'.. repeat in every file; texts
    repeat across files (exact duplicates) and within a file."""
    paths = []
    for folder in ("crawl-a", "crawl-b"):
        (tmp_path / folder).mkdir()
        for f in range(3):
            rows = []
            for line in range(8):
                text = TEXTS[(f * 5 + line * 3 + (folder == "crawl-b")) % len(TEXTS)]
                rows.append({"id": f"doc-{line}", "text": text if line % 4 else text.upper()})
            paths.append(write_jsonl_gz(tmp_path / folder / f"part-{f}.jsonl.gz", rows))
    return paths


def _expected(rows: list[dict]) -> dict[str, str]:
    """row_key -> reason, computed by brute force: per normalised text, the smallest row_key wins."""
    norm = normalise(pa.array([r["text"] for r in rows], pa.large_string())).to_pylist()
    groups: dict[str, list[dict]] = {}
    for r, n in zip(rows, norm):
        groups.setdefault(n, []).append(r)
    out = {}
    for members in groups.values():
        members.sort(key=lambda r: r["row_key"])
        for loser in members[1:]:
            out[loser["row_key"]] = f"duplicate_of:{members[0]['id']}"
    return out


@pytest.mark.parametrize("engine,stages,shuffle", [
    ("local", ["exact_dedup"], "auto"), ("local", ["exact_dedup", "heuristics"], "auto"),
    pytest.param("ray", ["exact_dedup"], "hash", marks=pytest.mark.slow),
    pytest.param("ray", ["exact_dedup", "heuristics"], "auto", marks=pytest.mark.slow)],
    ids=["local-final", "local-next-phase", "ray-final-hash-shuffle", "ray-next-phase-sort-shuffle"])
def test_decisions_land_on_the_right_rows(request, tmp_path, engine, stages, shuffle):
    paths = _corpus(tmp_path)
    out = tmp_path / "out"
    patterns = [str(tmp_path / "crawl-a" / "*.jsonl.gz"), str(tmp_path / "crawl-b" / "*.jsonl.gz")]
    pipe = build_pipeline({
        "name": "decisions",
        "input": {"paths": patterns, "files_per_chunk": 1},
        "output": {"path": str(out)},
        "stages": [{"type": t, "resources": {"batch_size": 5}} for t in stages],
        "ray": {"shuffle": shuffle},   # small input: auto takes the sort shuffle
    })
    if engine == "ray":
        request.getfixturevalue("ray_local")
    run_pipeline(pipe, progress=False, engine=engine)

    # the input as the reader sees it: file names repeat across folders, yet sources (and so
    # row_keys) differ; ids repeat in every file
    files, _ = list_input_files(patterns)
    assert len(files) == len(paths) == 6 and len({f.source for f in files}) == 6
    full = []
    for f in files:
        for line, raw in enumerate(gzip.open(f.path, "rt", encoding="utf-8")):
            r = json.loads(raw)
            full.append({"row_key": f"{f.source}:{line}", "source": f.source, "id": r["id"], "text": r["text"]})
    assert len({r["id"] for r in full}) == 8
    expected = _expected(full)
    assert len(expected) >= 20 and len(set(expected.values())) > 3

    data = read_manifest_files(out, "data/")
    rejects = read_manifest_files(out, "rejects/")
    assert data.num_rows + rejects.num_rows == len(full)
    dedup = rejects.filter(pc.equal(rejects["reject_stage"], "exact_dedup"))
    assert dict(zip(dedup["row_key"].to_pylist(), dedup["reject_reason"].to_pylist())) == expected
    kept = set(zip(data["source"].to_pylist(), data["id"].to_pylist())) if data.num_rows else set()
    for r in full:
        if r["row_key"] in expected:
            assert (r["source"], r["id"]) not in kept
        elif stages == ["exact_dedup"]:  # nothing else rejects: every other row is kept
            assert (r["source"], r["id"]) in kept, r
    report = json.loads((out / "report.json").read_text())
    funnel = {s["stage"]: s for s in report["stages"]}
    assert funnel["exact_dedup"]["docs_rejected"] == len(expected)
    if "heuristics" in funnel:  # the next phase saw exactly the rows the decisions left live
        assert funnel["heuristics"]["docs_in"] == len(full) - len(expected)
        assert rejects.filter(pc.equal(rejects["reject_stage"], "heuristics")).num_rows == funnel["heuristics"]["docs_rejected"]


def test_apply_decisions_matches_row_keys_not_ids():
    batch = pa.table({"id": ["a", "a", "b", "a"], "row_key": ["f1:0", "f2:0", "f1:1", "f3:0"],
                      "reject_stage": pa.array([None, None, None, "langid"], pa.string()),
                      "reject_reason": pa.array([None, None, None, "low_language_score"], pa.string())})
    decisions = pa.table({"row_key": ["f2:0", "f3:0", "zz:9"], "reject_reason": ["duplicate_of:a", "duplicate_of:a", "x"]})
    out = apply_decisions(batch, decisions, "exact_dedup")
    assert out["reject_stage"].to_pylist() == [None, "exact_dedup", None, "langid"]  # an earlier reject stays
    assert out["reject_reason"].to_pylist() == [None, "duplicate_of:a", None, "low_language_score"]


def test_decisions_are_routed_to_the_chunk_of_the_node_they_name():
    # chunk 0: one part of 3 rows; chunks 1 and 2 empty; chunk 3: parts of 4 and 2 rows
    bases = part_bases([3, 4, 2])
    chunk_bases = part_bases([3, 0, 0, 6])
    live = np.array([True, False, True, True])
    nodes = pa.concat_arrays([node_ids(bases[1], live), node_ids(bases[0], np.array([True, True, False])),
                              node_ids(bases[2], np.array([False, True]))])
    assert nodes.to_pylist() == [3, 5, 6, 0, 1, 8]
    decisions = pa.table({"row_key": ["b:0", "b:2", "b:3", "a:0", "a:1", "c:1"], "reject_reason": ["x"] * 6,
                          "node": nodes})
    out = with_chunk(decisions, chunk_bases)
    assert out[CHUNK].to_pylist() == [3, 3, 3, 0, 0, 3]
    assert "node" not in out.column_names and out["row_key"].to_pylist() == ["b:0", "b:2", "b:3", "a:0", "a:1", "c:1"]


def test_node_ids_have_no_cap_on_parts_in_a_chunk():
    bases = part_bases([1] * 20_000)   # more parts in one chunk than the old 14-bit part number held
    nodes = np.concatenate([node_ids(b, np.array([True])).to_numpy() for b in bases])
    assert len(np.unique(nodes)) == 20_000 and nodes.max() == 19_999
    big = node_ids((1 << 40) + 5, np.array([True, True]))   # past 2^40 rows in a run
    assert big.to_pylist() == [(1 << 40) + 5, (1 << 40) + 6]
    assert with_chunk(pa.table({"row_key": ["x"], "reject_reason": ["y"], "node": big.slice(0, 1)}),
                      [0, 1 << 40])[CHUNK].to_pylist() == [1]


def test_a_stage_run_per_chunk_never_sees_the_chunk_and_its_rows_get_their_sources_chunk():
    seen = []

    def make_rows(live: pa.Table) -> pa.Table:   # like a generating stage: new rows, built from the live ones
        seen.append(live.column_names)
        return pa.table({"id": [f"{i}#new" for i in live["id"].to_pylist()] * 2})

    batch = pa.table({"id": ["a", "b", "c"], CHUNK: pa.array([3, 3, 4], pa.int32())})
    out = per_chunk(make_rows, batch)
    assert all(CHUNK not in cols for cols in seen) and len(seen) == 2
    assert out["id"].to_pylist() == ["a#new", "b#new", "a#new", "b#new", "c#new", "c#new"]
    assert out[CHUNK].to_pylist() == [3, 3, 3, 3, 4, 4]
