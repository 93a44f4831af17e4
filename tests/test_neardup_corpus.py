"""The near-duplicate corpus generator and scorer (tests/neardup_corpus.py) used by bench/dedup.py.

Real documents: shared/data/web_dev.jsonl. The recorded Jaccard is checked against
``signatures.shingles(text, 5, normalize=False)`` sets, the originals against each other on a sample, and
``evaluate`` against a perfect answer and a hand-made imperfect one.
"""
from __future__ import annotations

import itertools
import json
import random
from collections import Counter, defaultdict
from functools import cache

import neardup_corpus as nc
import pytest

from tokenmill.stages.dedup.signatures import shingles

N = 2000           # 667 originals: all 390 usable real pages + 277 spliced ones


@cache
def corpus(n: int = N, seed: int = 0) -> tuple:
    return tuple(nc.build_corpus(n, seed=seed))


def shingle_set(text: str) -> frozenset:
    return frozenset(shingles(text, 5, normalize=False))   # the corpus truth: lower-cased word units


def jaccard(a, b) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def test_deterministic_and_seeded():
    a = nc.build_corpus(300, seed=3)
    b = nc.build_corpus(300, seed=3)
    assert a == b
    c = nc.build_corpus(300, seed=4)
    assert [r["text"] for r in a] != [r["text"] for r in c]
    assert len(a) == 300 and len({r["id"] for r in a}) == 300


def test_shape_and_bucket_coverage():
    rows = corpus()
    assert len(rows) == N and len({r["id"] for r in rows}) == N
    s = nc.summary(rows)
    assert s["originals_real"] + s["originals_spliced"] == round(N / 3)
    assert s["originals_real"] == 390 and s["originals_spliced"] == round(N / 3) - 390
    per = s["copies_per_bucket"]
    assert sum(per.values()) + s["copies_below_0.5"] == s["copies"]
    for name, n in per.items():            # about a quarter of the copies in each bucket
        assert n >= 0.2 * s["copies"], (name, per)
    assert s["copies_below_0.5"] <= 0.01 * s["copies"]
    ids = {r["id"] for r in rows}
    for r in rows:
        assert r["group"] in ids
        if r["id"] == r["group"]:
            assert r["jaccard"] == 1.0 and r["mutation"] == "original"
        else:
            assert 0.0 <= r["jaccard"] <= 1.0 and r["mutation"] != "original"
    kinds = s["mutations"]
    for k in ("exact", "boilerplate", "move", "del", "sub", "ins", "edit", "natural"):
        assert any(k in name.split("+") for name in kinds), (k, kinds)
    # many copies per original, at different rates
    per_orig = Counter(r["group"] for r in rows if r["id"] != r["group"])
    assert max(per_orig.values()) >= 5


def test_natural_pairs_are_copies_of_their_first_page():
    rows = corpus()
    nat = {r["origin"]: r for r in rows if r["mutation"] == "natural"}
    pairs = [json.loads(item) for item in open(nc.SHARED_DATA / "web_neardup_pairs_dev.jsonl", encoding="utf-8")]
    assert len(nat) == len(pairs) == 4
    for p in pairs:
        assert nat[p["id_a"]]["jaccard"] == pytest.approx(p["jaccard_word5gram"], abs=5e-4)
    # the second pages are neither originals nor splicing sources of their own
    by_id = {r["id"]: r for r in rows}
    for r in nat.values():
        assert by_id[r["group"]]["origin"] == r["origin"]


def test_recorded_jaccard_is_shingles_jaccard():
    rows = corpus()
    by_id = {r["id"]: r for r in rows}
    copies = [r for r in rows if r["id"] != r["group"]]
    sample = random.Random(7).sample(copies, 100)
    for r in sample:
        exact = jaccard(shingle_set(r["text"]), shingle_set(by_id[r["group"]]["text"]))
        assert r["jaccard"] == pytest.approx(exact, abs=1e-12), r["mutation"]


def test_originals_are_not_near_duplicates_of_each_other():
    rows = corpus()
    originals = [r for r in rows if r["id"] == r["group"]]
    sample = random.Random(1).sample(originals, 200)
    assert sum(r["origin"] == "splice" for r in sample) > 40
    sets = [shingle_set(r["text"]) for r in sample]
    index = defaultdict(list)
    for i, s in enumerate(sets):
        for sh in s:
            index[sh].append(i)
    shared = Counter()
    for docs in index.values():
        for a, b in itertools.combinations(docs, 2):
            shared[a, b] += 1
    worst = max((c / (len(sets[a]) + len(sets[b]) - c) for (a, b), c in shared.items()), default=0.0)
    assert worst < 0.3


def test_write_jsonl(tmp_path):
    rows = corpus()[:50]
    [one] = nc.write_jsonl(rows, tmp_path / "c.jsonl")
    back = [json.loads(item) for item in open(one, encoding="utf-8")]
    assert back == [{"id": r["id"], "text": r["text"]} for r in rows]
    parts = nc.write_jsonl(rows, tmp_path / "shards", shards=4, extra=("group", "jaccard"))
    assert [p.name for p in parts] == [f"part-{i:05d}.jsonl" for i in range(4)]
    back = [json.loads(item) for p in parts for item in open(p, encoding="utf-8")]
    assert [b["id"] for b in back] == [r["id"] for r in rows] and back[0]["group"] == rows[0]["group"]


def test_evaluate_perfect_answers():
    rows = corpus()
    copies = [r for r in rows if r["id"] != r["group"]]
    # every copy removed in favour of its original
    res = nc.evaluate(rows, {r["id"]: r["group"] for r in copies})
    assert all(v == 1.0 for v in res["recall"].values()) and res["recall_at_0.8"] == 1.0
    assert res["precision"] == 1.0 and res["false_removals"] == 0 and res["removed"] == len(copies)
    # the same clusters, each kept at its smallest id (as the peers do)
    groups = defaultdict(set)
    for r in rows:
        groups[r["group"]].add(r["id"])
    res = nc.evaluate(rows, nc.clusters_to_removed(g for g in groups.values() if len(g) > 1))
    assert res["recall_all"] == 1.0 and res["precision"] == 1.0
    assert nc.evaluate(rows, {})["recall_all"] == 0.0 and nc.evaluate(rows, {})["precision"] == 1.0


def test_evaluate_imperfect_answer():
    R = lambda i, g, j: {"id": i, "group": g, "jaccard": j}
    rows = [R("a", "a", 1.0), R("a1", "a", 0.95), R("a2", "a", 0.85), R("a3", "a", 0.75), R("a4", "a", 0.6),
            R("b", "b", 1.0), R("b1", "b", 0.92), R("b2", "b", 0.81), R("b3", "b", 0.55), R("b4", "b", 0.3),
            R("c", "c", 1.0)]
    removed = {
        "a1": "a",      # found
        "a2": "a1",     # chain a2 -> a1 -> a: same survivor as a, found
        "a4": "c",      # removed in favour of another group: not found (loose: found), false removal
        "b": "b1",      # original removed in favour of its copy: b1 found
        "b2": "b1",     # b2 and b share the survivor b1: found
        # a3 kept with a: not found; b3 kept while b removed: loose found, strict not (b -> b1, b3 alone)
        "c": "b4",      # an unrelated original removed: false removal
    }
    res = nc.evaluate(rows, removed)
    assert res["copies"] == 8 and res["originals"] == 3 and res["removed"] == 6
    assert res["copies_per_bucket"] == {"[0.5,0.7)": 2, "[0.7,0.8)": 1, "[0.8,0.9)": 2, "[0.9,1.0]": 2}
    assert res["recall"] == {"[0.5,0.7)": 0.0, "[0.7,0.8)": 0.0, "[0.8,0.9)": 1.0, "[0.9,1.0]": 1.0}
    assert res["recall_loose"] == {"[0.5,0.7)": 1.0, "[0.7,0.8)": 0.0, "[0.8,0.9)": 1.0, "[0.9,1.0]": 1.0}
    assert res["recall_at_0.8"] == 1.0 and res["copies_at_0.8"] == 4
    assert res["copies_below_0.5"] == 1 and res["found_below_0.5"] == 0      # b4 stays kept, b is not
    assert res["recall_all"] == pytest.approx(4 / 7)
    assert res["true_removals"] == 4 and res["false_removals"] == 2
    assert res["precision"] == pytest.approx(4 / 6)
    assert res["removed_originals"] == 2
    with pytest.raises(ValueError):
        nc.evaluate(rows, {"zz": "a"})


def test_surface_copies_keep_their_normalised_shingles():
    """``surface`` edits lower the recorded (raw) Jaccard, never the normalised one; the recorded
    figure stays exact."""
    rows = nc.build_corpus(600, seed=2, surface=0.5)
    by_id = {r["id"]: r for r in rows}
    surf = [r for r in rows if r["mutation"].startswith("surface")]
    assert len(surf) >= 0.4 * sum(r["mutation"] not in ("original", "exact", "natural") for r in rows) * 0.5
    lower = 0
    for r in surf[:40]:
        o = by_id[r["group"]]["text"]
        raw = jaccard(shingle_set(r["text"]), shingle_set(o))
        norm = jaccard(frozenset(shingles(r["text"], 5)), frozenset(shingles(o, 5)))
        assert abs(raw - r["jaccard"]) < 1e-9
        assert norm >= raw
        lower += norm > raw + 0.01
    assert lower >= 30
