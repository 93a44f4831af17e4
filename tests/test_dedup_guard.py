"""The MinHash cluster guard and what dedup reports (stages/dedup/guard.py, losses.py), on the
local executor with real web pages: a chain of overlapping windows over one long page is one
connected component, which the guard splits instead of keeping one document of it; the b-bit
sketches estimate Jaccard as the full signatures do; report.json lists the largest clusters and the
sources that lost the largest share; ``max_source_removal`` fails a run before anything is
committed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import read_manifest_files, web_docs

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.dedup.guard import KEEPER, SPLIT, estimate, guard_members, sketch_column, sketch_matrix
from tokenmill.stages.dedup.minhash import SourceRemovalAlarm
from tokenmill.stages.dedup.signatures import MinHasher, estimated_jaccard, shingles


def _jaccard(a: str, b: str) -> float:
    sa, sb = set(shingles(a, 5)), set(shingles(b, 5))
    return len(sa & sb) / len(sa | sb)


def _chain(shared_data: Path, links: int = 12, width: int = 400, step: int = 40) -> list[dict]:
    """Windows of ``width`` words over the words of several pages, each ``step`` words after the
    one before: neighbours share ~82% of their shingles, windows 4 apart ~40%, the ends nothing."""
    words = " ".join(r["text"] for r in web_docs(shared_data)[:40]).split()
    return [{"id": f"chain{i:02d}", "text": " ".join(words[i * step:i * step + width])} for i in range(links)]


def _write(rows: list[dict], path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _run(inputs: list[str], out: Path, **minhash):
    cfg = {"name": "guard", "input": {"paths": inputs}, "output": {"path": str(out)},
           "stages": [{"type": "minhash_dedup", "scope": "global", **minhash}]}
    return run_pipeline(build_pipeline(cfg), progress=False, engine="local")


def _removed(out: Path) -> dict[str, str]:
    rej = read_manifest_files(out, "rejects/").to_pylist()
    return {r["id"]: r["reject_reason"].split(":", 1)[1] for r in rej if r["reject_stage"] == "minhash_dedup"}


def test_sketches_estimate_jaccard_like_full_signatures(shared_data):
    pages = [r["text"] for r in web_docs(shared_data)[:40]]
    copies = [" ".join(w if i % 9 else "x" for i, w in enumerate(p.split())) for p in pages]
    mh = MinHasher(112, seed=1)
    (sa, ea), (sb, eb) = mh.signatures(pages), mh.signatures(copies)
    full = estimated_jaccard(sa, sb)
    bbit = estimate(sketch_matrix(sketch_column(sa, ea)), sketch_matrix(sketch_column(sb, eb)))
    assert np.abs(full - bbit).max() < 0.02          # 16-bit collisions: ~1 value in 65,536
    col = sketch_column(sa, np.arange(len(pages)) == 3)
    assert col.null_count == 1 and len(col[0].as_py()) == 2 * 112


def test_guard_members_hops_and_splits():
    """Rows in keep order; component 0 = rows 0..4: 1 passes against 0, 2 only through 1 (hop 2),
    3 and 4 close to each other but to nothing before them (a split kept by 3)."""
    base = np.arange(100, dtype=np.uint16)

    def variant(changed: list[int]) -> np.ndarray:
        s = base.copy()
        s[changed] += 1000
        return s

    one, three = variant(list(range(20))), variant(list(range(40, 100)))
    two, four = one.copy(), three.copy()
    two[20:35] += 1000                 # 0.85 to row 1, 0.65 to row 0
    four[:5] += 2000                   # 0.95 to row 3
    rows = np.stack([base, one, two, three, four, base])
    code, keeper, jac = guard_members(rows, np.array([0, 5]), threshold=0.7, hops=2)
    assert code.tolist() == [KEEPER, 1, 2, SPLIT, 1, KEEPER]
    assert keeper.tolist() == [0, 0, 0, 3, 3, 5]
    assert jac[1] == pytest.approx(0.8, abs=0.01) and jac[4] == pytest.approx(0.95, abs=0.01)
    code1, keeper1, _ = guard_members(rows, np.array([0, 5]), threshold=0.7, hops=1)
    assert code1.tolist()[:5] == [KEEPER, 1, SPLIT, SPLIT, 1] and keeper1.tolist()[:5] == [0, 0, 2, 3, 3]
    code0, _, _ = guard_members(rows[:5], np.array([0]), threshold=0.0001, hops=2)
    assert (code0[1:] == 1).all()                  # a threshold every pair passes: one cluster


def test_a_chain_through_templates_is_split_and_reported(shared_data, tmp_path):
    rows = _chain(shared_data)
    path = _write(rows, tmp_path / "in" / "chain.jsonl")
    text = {r["id"]: r["text"] for r in rows}
    assert _jaccard(text["chain00"], text["chain01"]) > 0.75 and _jaccard(text["chain00"], text["chain11"]) < 0.05

    open_ = _run([path], tmp_path / "unguarded", guard=0)
    assert len(_removed(tmp_path / "unguarded")) == len(rows) - 1      # one cluster keeps one window
    assert "guard" not in open_.report["global_steps"]["minhash_dedup"]

    res = _run([path], tmp_path / "guarded")
    removed = _removed(tmp_path / "guarded")
    kept = set(text) - set(removed)
    assert len(kept) >= 3 and "chain00" in kept
    for doc, keeper in removed.items():        # at most two verified links: still a near duplicate
        assert keeper in kept and _jaccard(text[doc], text[keeper]) >= 0.45, (doc, keeper)
    step = res.report["global_steps"]["minhash_dedup"]
    guard = step["guard"]
    assert guard["broken_chains"] == len(kept) - 1 and guard["split_keepers"] >= 1
    assert guard["passed_hop1"] + guard["passed_later_hop"] == len(removed) and guard["passed_later_hop"] >= 1
    assert {e["id"] for e in guard["broken_examples"]} <= kept - {"chain00"}
    assert all(e["jaccard_to_kept"] < 0.7 for e in guard["broken_examples"])
    top = step["largest_clusters"][0]
    assert top["members"] == len(rows) and top["kept_id"] == "chain00" and top["broken_chains"] == len(kept) - 1
    assert top["removed"] == len(removed) and set(top["sample_removed_ids"]) <= set(removed)


def _sources(shared_data: Path, tmp_path: Path) -> list[str]:
    """A site whose 150 pages are all copies of pages of another file, and a file of originals."""
    pages = web_docs(shared_data)[:150]
    orig = [{"id": r["id"], "text": r["text"], "url": f"https://www.origin.example/{i}"} for i, r in enumerate(pages)]
    mirror = [{"id": f"m{i}", "text": r["text"] + "\nMirrored.", "url": f"https://mirror.example/p/{i}"}
              for i, r in enumerate(pages)]
    return [_write(orig, tmp_path / "in" / "a-originals.jsonl"), _write(mirror, tmp_path / "in" / "b-mirror.jsonl")]


def test_report_lists_the_sources_that_lost_most(shared_data, tmp_path):
    res = _run(_sources(shared_data, tmp_path), tmp_path / "out")
    losses = res.report["global_steps"]["minhash_dedup"]["source_losses"]
    removed = _removed(tmp_path / "out")
    assert losses["files"][0]["name"].endswith("b-mirror.jsonl") and losses["files"][0]["docs"] == 150
    assert losses["files"][0]["removed"] == sum(i.startswith("m") for i in removed) >= 140
    assert losses["domains"][0]["name"] == "mirror.example" and losses["domains"][0]["share"] >= 0.93
    assert all(d["name"] != "www.origin.example" for d in losses["domains"])     # "www." dropped
    assert losses["over"] == []


def test_max_source_removal_fails_the_run_before_commit(shared_data, tmp_path):
    inputs = _sources(shared_data, tmp_path)
    out = tmp_path / "out"
    with pytest.raises(SourceRemovalAlarm, match=r"mirror\.example.*max_source_removal|max_source_removal.*mirror"):
        _run(inputs, out, max_source_removal=0.5)
    assert not list(out.glob("data/**/*.parquet")) and not (out / "report.json").exists()
    ok = _run(inputs, tmp_path / "ok", max_source_removal=1.0)         # the same run without a limit it breaks
    assert ok.report["global_steps"]["minhash_dedup"]["source_losses"]["over"] == []
    assert list((tmp_path / "ok").glob("data/**/*.parquet"))


def test_max_source_removal_ignores_small_sources(shared_data, tmp_path):
    inputs = _sources(shared_data, tmp_path)
    res = _run(inputs, tmp_path / "out", max_source_removal=0.5, source_min_docs=1000)
    assert res.report["global_steps"]["minhash_dedup"]["source_losses"]["files"] == []
