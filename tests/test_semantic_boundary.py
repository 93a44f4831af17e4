"""semantic_dedup's boundary pass (``stages/semantic/boundary.py``): on vectors whose groups of
near-copies are cut by k-means borders, the removals, every ``sem_max_sim`` and the kept document
each removal names equal a NumPy transcription of the definition (SemDeDup inside each cluster,
and each document near a border against the earlier ones of the other cluster near it, in one
keep order; a removed document names the kept root of its chain of closest earlier documents),
on the local executor and on Ray; and the pass is off where ``boundary`` is 0."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tokenmill.stages.semantic import boundary, kmeans, steps, vectors


def reference(x, labels, near, margin, cos, m: float, eps: float, keep: str = "hard", indexed=None, score=None):
    """(max_sim, removed, index of the kept document each names) by the definition, one document
    at a time: earlier = before in (earlier runs' first, the keep rule, input) order; ties name the
    earliest; an earlier run's document is never removed."""
    on = (near >= 0) & (margin < m)
    borders = [[("pair", min(a, b), max(a, b))] if o else [] for a, b, o in zip(labels, near, on)]
    return by_definition(x, cos, list(labels), borders, eps, keep, indexed, score)


def by_definition(x, cos, home: list, borders: list, eps: float, keep: str = "hard", indexed=None, score=None):
    """The pass's definition over any partition of the documents into clusters (``home``) and of
    the borders each is near (``borders``: per document, its border keys in the order they are
    searched): each document against the earlier ones of its cluster, then, border by border, the
    earlier ones of other clusters near the same border; only a larger cosine replaces an answer.
    ``quality_score``: the highest ``score`` first, a document without one (NaN) after all that have one."""
    n = len(x)
    indexed = np.zeros(n, bool) if indexed is None else indexed
    unscored = np.isnan(score) if score is not None else None
    rule = {"hard": [cos], "easy": [-cos], "first": [],
            "quality_score": [] if score is None else [-np.nan_to_num(score), unscored]}[keep]
    order = np.lexsort((np.arange(n), *rule, ~indexed))
    pos = np.empty(n, int)
    pos[order] = np.arange(n)
    sims = x @ x.T
    codes = {h: i for i, h in enumerate(dict.fromkeys(home))}
    home_no = np.array([codes[h] for h in home])
    near = {key: np.array([key in b for b in borders]) for key in {k for b in borders for k in b}}
    best, ptr = np.zeros(n, np.float32), np.full(n, -1)
    for j in order:
        earlier = pos < pos[j]
        inside = earlier & (home_no == home_no[j])
        for cand in [inside, *(earlier & near[key] & (home_no != home_no[j]) for key in borders[j])]:
            idx = np.flatnonzero(cand)
            if len(idx):
                idx = idx[np.argsort(pos[idx], kind="stable")]
                k = idx[np.argmax(sims[j, idx])]
                if sims[j, k] > best[j]:
                    best[j], ptr[j] = sims[j, k], k
    gone = (best > 1 - eps) & ~indexed
    root = np.arange(n)
    for j in order:
        if gone[j]:
            root[j] = root[ptr[j]]
    return best, gone, root


def _groups_of_copies(seed: int, groups: int = 60, per: int = 5, dim: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.normal(size=(groups, dim)), per, axis=0) + 0.15 * rng.normal(size=(groups * per, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return vectors.decode(vectors.encode(x), dim)   # what the step reads back from its key rows


def _ours(datasets, x, labels, cos, near, margin, m: float, eps: float, keep: str = "hard", indexed=None, score=None):
    n = len(x)
    indexed = np.zeros(n, bool) if indexed is None else indexed
    t = pa.table({"row_key": [f"in.jsonl:{i:06d}" for i in range(n)], "id": [f"d{i}" for i in range(n)],
                  "url": pa.nulls(n, pa.string()), "node": pa.array(np.arange(n), pa.int64()),
                  steps.EMBEDDING: vectors.encode(x), steps.GROUP: pa.array(np.zeros(n, np.int64)),
                  steps.CLUSTER: pa.array(labels, pa.int32()), steps.COS: pa.array(cos, pa.float32()),
                  steps.NEAR: pa.array(near, pa.int32()), steps.MARGIN: pa.array(margin, pa.float32()),
                  "_indexed": pa.array(indexed)})
    if score is not None:
        t = t.append_column("quality_score", pa.array(score, pa.float64(), mask=np.isnan(score)))
    ops = datasets.ops(3)
    rows = ops.map(ops.map(datasets.dataset(t, blocks=3), steps.cluster_ids), boundary.mark, margin=m)
    far = [ops.partition_map([ops.map(rows, boundary.near_rows)], boundary.PAIR, boundary.across, keep=keep,
                             block=16)] if m > 0 else []   # as the stage: no pass where no document is near a border
    decided = ops.materialize(ops.partition_map([rows, *far], steps.KEY, steps.dedup_clusters, eps=eps, keep=keep,
                                                block=16))
    decided, figures = boundary.resolve(ops, decided)
    return {r["_id"]: r for r in ops.collect(decided).to_pylist()}, figures


@pytest.mark.parametrize("seed, k, m, eps, keep, earlier", [(2, 40, 0.02, 0.1, "hard", 0), (6, 80, 1.0, 0.1, "hard", 7)])
def test_the_boundary_pass_gives_the_definitions_removals_and_names(datasets, seed, k, m, eps, keep, earlier):
    """``earlier``: every earlier-th document is an earlier run's (first in its cluster, never removed).
    Local and Ray (``datasets``); the cases below on the local operations only."""
    _check_definition(datasets, seed, k, m, eps, keep, earlier)


@pytest.mark.parametrize("seed, k, m, eps, keep, earlier", [
    (1, 60, 1.0, 0.05, "hard", 0), (3, 100, 1.0, 0.2, "hard", 0), (4, 80, 1.0, 0.1, "easy", 0),
    (5, 80, 1.0, 0.1, "first", 0), (7, 80, 1.0, 0.1, "quality_score", 0), (8, 40, 0.02, 0.1, "quality_score", 5)])
def test_the_boundary_pass_gives_the_definitions_removals_and_names_in_more_cases(local_datasets, seed, k, m, eps,
                                                                                   keep, earlier):
    _check_definition(local_datasets, seed, k, m, eps, keep, earlier)


def _scores(seed: int, n: int) -> np.ndarray:
    """Quality scores in steps of 0.1 (many ties, broken by input order), a tenth of them missing."""
    rng = np.random.default_rng(seed)
    score = np.round(rng.random(n), 1)
    score[rng.random(n) < 0.1] = np.nan
    return score


def _check_definition(datasets, seed, k, m, eps, keep, earlier):
    x = _groups_of_copies(seed)
    labels, cos, near, cos2 = kmeans.assign_two(x, kmeans.fit(x, k, seed=seed))
    margin = (cos.astype(np.float64) - cos2.astype(np.float64)).astype(np.float32)
    indexed = (np.arange(len(x)) % earlier == 3) if earlier else np.zeros(len(x), bool)
    score = _scores(seed, len(x)) if keep == "quality_score" else None
    best, gone, root = reference(x, labels, near, margin, cos, m, eps, keep, indexed, score)
    got, figures = _ours(datasets, x, labels, cos, near, margin, m, eps, keep, indexed, score)
    assert len(got) == len(x) - indexed.sum()
    for j in np.flatnonzero(~indexed):
        r = got[f"d{j}"]
        assert (r["reject_reason"] is not None) == gone[j] and r["sem_max_sim"] == pytest.approx(best[j], abs=1e-6)
        assert r["reject_reason"] is None or r["reject_reason"] == f"{steps.REASON_PREFIX}d{root[j]}"
    across = sum(1 for j in range(len(x)) if gone[j] and labels[root[j]] != labels[j])
    assert across >= 2 and figures["removed_across_a_border"] >= 1   # chains that cross borders were named
    assert figures["documents_near_a_border"] == int(((near >= 0) & (margin < m) & ~indexed).sum())


def test_no_boundary_pass_where_boundary_is_0(datasets):
    x = _groups_of_copies(1)
    labels, cos, near, cos2 = kmeans.assign_two(x, kmeans.fit(x, 60, seed=1))
    margin = (cos.astype(np.float64) - cos2.astype(np.float64)).astype(np.float32)
    best, gone, _ = reference(x, labels, near, margin, cos, 0.0, 0.05)
    with_pass = reference(x, labels, near, margin, cos, 1.0, 0.05)[1]
    got, figures = _ours(datasets, x, labels, cos, near, margin, 0.0, 0.05)
    assert figures == {"documents_near_a_border": 0, "removed_across_a_border": 0}
    assert [got[f"d{j}"]["reject_reason"] is not None for j in range(len(x))] == list(gone)
    assert gone.sum() < with_pass.sum()   # the pass finds copies SemDeDup alone leaves


@pytest.fixture(scope="module")
def border_runs(shared_data, tmp_path_factory):
    """Real pages and their copies in 6 clusters, 3 of them giants split in sub-clusters of ~4,
    every document near a border: the local run."""
    import json

    from test_semantic_dedup import _config, _pages

    folder = tmp_path_factory.mktemp("borders")
    pages = folder / "pages.jsonl"
    pages.write_text("".join(json.dumps(r) + "\n" for r in _pages(shared_data)))

    def run(engine: str, **sem):
        from tokenmill.engine.config import build_pipeline
        from tokenmill.engine.run import run_pipeline

        sem = {"clusters": 6, "max_cluster": 15, **sem}
        out = folder / "-".join([engine, *(f"{k}{v}" for k, v in sorted(sem.items()))])
        config = _config(pages, out, eps=0.1, boundary=1.0, **sem)
        config["stages"][1]["docs_per_cluster"] = 4
        kw = {"num_cpus": 1} if engine == "local" else {}
        result = run_pipeline(build_pipeline(config), progress=False, engine=engine, **kw)
        return out, result.report["global_steps"]["semantic_dedup"]

    return run, run("local")


def test_pages_removed_across_a_border_name_a_kept_page(border_runs):
    from test_semantic_dedup import _outcome

    _, (out, figures) = border_runs
    got = _outcome(out)
    assert figures["giant_clusters_split"] == 3 and figures["clusters"] == {"en": 6}
    assert figures["boundary"]["documents_near_a_border"] == len(got) and figures["boundary"]["removed_across_a_border"] >= 1
    for reason, _ in got.values():
        assert reason is None or got[reason.removeprefix(steps.REASON_PREFIX)][0] is None


@pytest.mark.parametrize("engine", [pytest.param("ray", marks=pytest.mark.slow),
                                    pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])])
def test_engines_name_the_local_runs_kept_pages_across_borders(border_runs, engine, request):
    from test_semantic_dedup import _outcome

    run, (local_out, _) = border_runs
    if engine == "ray":
        request.getfixturevalue("ray_local")
    out, figures = run(engine)
    assert _outcome(out) == _outcome(local_out) and figures["boundary"]["removed_across_a_border"] >= 1


def test_a_giant_clusters_borders_are_between_its_sub_clusters(border_runs):
    """One cluster above max_cluster, split in ~30: its documents near the borders between its
    sub-clusters are compared across them, each pair of sub-clusters on its own (bounded as the
    split is), and every removal still names a kept page."""
    from test_semantic_dedup import _outcome

    run, _ = border_runs
    out, figures = run("local", clusters=1, max_cluster=40)
    got = _outcome(out)
    assert figures["giant_clusters_split"] == 1 and figures["boundary"]["documents_near_a_border"] == len(got)
    assert figures["boundary"]["removed_across_a_border"] >= 1
    for reason, _ in got.values():
        assert reason is None or got[reason.removeprefix(steps.REASON_PREFIX)][0] is None


def test_a_giants_rows_are_keyed_by_sub_cluster_pairs_and_by_sub_cluster_at_its_top_level_border():
    """``mark`` on a giant's rows (cluster 0, split in 3) keys each by its pair of sub-clusters
    (``_pkey``) and, near an ordinary cluster (1), by its own sub-cluster's share of that border
    (``_pkey2``); a row of the ordinary cluster near the giant shares the key of the giant's
    sub-cluster nearest to it (``_near_sub``)."""
    n = 6
    rows = pa.table({steps.GROUP: pa.array([1] * n, pa.int64()), steps.CLUSTER: pa.array([0, 0, 0, 0, 1, 1], pa.int32()),
                     steps.NEAR: pa.array([1, 1, 1, 1, 0, 0], pa.int32()), steps.MARGIN: pa.array([0.0] * n, pa.float32()),
                     steps.SUB: pa.array([0, 1, 2, 1, 0, 0], pa.int32()), steps.SUB_NEAR: pa.array([1, 0, 1, 2, -1, -1], pa.int32()),
                     steps.SUB_MARGIN: pa.array([0.001, 0.001, 0.5, 0.001, 0, 0], pa.float32()),
                     boundary.NEAR_SUB: pa.array([0, 0, 0, 0, 2, 0], pa.int32())})
    giant, other = (int(k) for k in kmeans.pair_key(np.array([1, 1]), np.array([0, 1])).view(np.int64))
    rows = rows.append_column("_gcluster", pa.array([giant] * 4 + [other] * 2, pa.int64()))
    rows = rows.append_column(steps.COS, pa.array([0.5] * n, pa.float32()))
    marked = boundary.mark(rows, 0.01, giants=(giant,))
    flag, pair, pair2 = (marked[c].to_pylist() for c in (steps.BOUNDARY, boundary.PAIR, boundary.PAIR2))
    assert flag == [True] * n
    assert pair[0] == pair[1] != pair[3] and pair[2] is None   # sub-clusters {0, 1} together, {1, 2} apart
    assert pair2[4] is None and pair2[5] is None
    assert pair2[1] == pair2[3] != pair2[0] and pair2[2] == pair[4] and pair2[0] == pair[5] != pair[4]
    assert len({*pair[:2], pair[3], *pair2[:3]}) == 5   # each partition its own key
    near = boundary.near_rows(marked)
    assert near.num_rows == 9 and near[boundary.LEVEL].to_pylist().count(1) == 4
    unreadable = rows.set_column(rows.column_names.index(steps.COS), steps.COS, pa.array([0.0] * n, pa.float32()))
    assert not any(boundary.mark(unreadable, 0.01, giants=(giant,))[steps.BOUNDARY].to_pylist())
    two = boundary.mark(rows, 0.01, giants=(giant, other))[boundary.PAIR2].to_pylist()   # both giants
    assert two[2] == two[4] and two[0] == two[5] and two[1] == two[3]   # per (sub-cluster of 0, sub-cluster of 1)
    assert len({two[0], two[1], two[2]} | (set(pair2) - {None})) == 6


def _most_shared(labels: np.ndarray, per: int, giants: int) -> list[int]:
    """The cluster holding the most documents of groups of copies that other clusters share, and
    with ``giants`` 2 the cluster sharing the most such documents with it."""
    groups = np.arange(len(labels)) // per
    split = np.array([len(set(labels[groups == g])) > 1 for g in groups])
    first = int(np.bincount(labels[split], minlength=labels.max() + 1).argmax())
    if giants == 1:
        return [first]
    with_first = np.isin(groups, groups[labels == first]) & (labels != first)
    return [first, int(np.bincount(labels[with_first], minlength=labels.max() + 1).argmax())]


def giant_reference(x, k: int, subs: int, m: float, eps: float, keep: str, seed: int, giants: int = 1, indexed=None):
    """The clusters, ``giants`` of them split in ``subs`` (those most copies cross the borders of),
    and the definition's answer: inside a sub-cluster; across the borders between a giant's
    sub-clusters; across a giant's top-level border with an ordinary cluster, each giant row
    against that cluster's rows near the border whose nearest of the giant's sub-centroids is the
    row's own sub-cluster; across two giants' border, one pair of sub-clusters at a time (a row's
    own, and the other giant's nearest to it)."""
    c = kmeans.fit(x, k, seed=seed)
    labels, cos, near, cos2 = kmeans.assign_two(x, c)
    margin = (cos.astype(np.float64) - cos2.astype(np.float64)).astype(np.float32)
    split = {g: kmeans.fit(x[labels == g], subs, seed=seed + 1 + i) for i, g in enumerate(_most_shared(labels, 5, giants))}
    sub = {g: kmeans.assign_two(x, sc) for g, sc in split.items()}   # every row against each giant's sub-centroids
    cos = cos.copy()
    home, borders = [("cluster", int(a)) for a in labels], [[] for _ in labels]
    for j, (a, b) in enumerate(zip(labels, near)):
        if a in split:
            own, _, snear, scos2 = (v[j] for v in sub[a])
            cos[j] = sub[a][1][j]
            home[j] = ("sub", int(a), int(own))
            if snear >= 0 and np.float32(np.float64(cos[j]) - np.float64(scos2)) < m:   # as assign_rows rounds
                borders[j].append(("subs", int(a), min(own, snear), max(own, snear)))
        if b < 0 or margin[j] >= m:
            continue
        part = {int(g): int(sub[g][0][j]) for g in (a, b) if g in split}   # the giants' sub-cluster of the row
        borders[j].append(("top", min(a, b), max(a, b), *(part[g] for g in sorted(part))))
    return (c, split), by_definition(x, cos, home, borders, eps, keep, indexed)


@pytest.mark.parametrize("seed, k, subs, m, eps, keep, giants, earlier", [(7, 20, 3, 1.0, 0.1, "hard", 1, 0),
                                                                            (10, 40, 3, 0.05, 0.15, "easy", 1, 0),
                                                                            (7, 20, 3, 1.0, 0.1, "hard", 2, 7),
                                                                            (9, 40, 2, 0.05, 0.1, "first", 2, 0)])
def test_a_giants_top_level_borders_give_the_definitions_removals_and_names(local_datasets, seed, k, subs, m, eps,
                                                                             keep, giants, earlier):
    """One or two clusters split as giants among ordinary ones: the stage's functions (assign,
    mark, split, the pass, resolve) give the definition's removals, ``sem_max_sim`` and names, and
    some removals name a kept document across a giant's top-level border (none could before: a
    giant's rows met only its own sub-clusters'). ``earlier``: every earlier-th document is an
    earlier run's."""
    x = _groups_of_copies(seed)
    n = len(x)
    indexed = (np.arange(n) % earlier == 3) if earlier else np.zeros(n, bool)
    (c, split), (best, gone, root) = giant_reference(x, k, subs, m, eps, keep, seed, giants, indexed)
    t = pa.table({"row_key": [f"in.jsonl:{i:06d}" for i in range(n)], "id": [f"d{i}" for i in range(n)],
                  "url": pa.nulls(n, pa.string()), "node": pa.array(np.arange(n), pa.int64()),
                  steps.EMBEDDING: vectors.encode(x), steps.GROUP: pa.array(np.zeros(n, np.int64)),
                  "_indexed": pa.array(indexed)})
    gkeys = {int(kmeans.pair_key(np.array([0]), np.array([g])).view(np.int64)[0]): sc for g, sc in split.items()}
    ops = local_datasets.ops(3)
    rows = ops.map(local_datasets.dataset(t, blocks=3), steps.assign_rows, centroids={0: c}, second=True)
    rows = ops.map(ops.map(rows, steps.cluster_ids), boundary.mark, margin=m)
    rows = ops.materialize(ops.map(rows, boundary.split, subs=gkeys, margin=m))
    near = ops.materialize(ops.map(rows, boundary.near_rows))
    held = ops.collect(near).group_by(boundary.PAIR).aggregate([(steps.KEY, "count_distinct")])
    assert max(held[f"{steps.KEY}_count_distinct"].to_pylist()) == 2   # each piece: two (sub-)clusters' rows
    far = ops.partition_map([near], boundary.PAIR, boundary.across, keep=keep, block=16)
    decided = ops.partition_map([rows, far], steps.KEY, steps.dedup_clusters, eps=eps, keep=keep, block=16)
    decided, figures = boundary.resolve(ops, ops.materialize(decided))
    got = {r["_id"]: r for r in ops.collect(decided).to_pylist()}
    assert len(got) == n - indexed.sum()
    for j in np.flatnonzero(~indexed):
        r = got[f"d{j}"]
        assert (r["reject_reason"] is not None) == gone[j] and r["sem_max_sim"] == pytest.approx(best[j], abs=1e-6)
        assert r["reject_reason"] is None or r["reject_reason"] == f"{steps.REASON_PREFIX}d{root[j]}"
    labels = kmeans.assign(x, c)[0]
    crossing = [(labels[j], labels[root[j]]) for j in range(n) if gone[j] and labels[root[j]] != labels[j]]
    assert any(a in split or b in split for a, b in crossing) and figures["removed_across_a_border"] >= 1
    if giants == 2:
        assert any(a in split and b in split for a, b in crossing)   # across the two giants' border


def test_hostile_texts_among_giants_are_nobodys_duplicates(shared_data, tmp_path):
    """Pages and copies in 6 clusters (some giants), plus texts the encoder cannot read, empty texts,
    a repeated id and a 200 kB page: the run finishes, the unreadable ones are kept with
    ``sem_max_sim`` 0, and every removal names a page the output holds."""
    import json

    from pipeline_helpers import read_manifest_files
    from test_semantic_dedup import _config, _pages

    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.run import run_pipeline

    rows = _pages(shared_data)
    odd = [{"id": "emoji", "text": "🎉🎊🥳 🎈🎂"}, {"id": "braille", "text": "⠓⠑⠇⠇⠕ ⠺⠕⠗⠇⠙"}, {"id": "empty", "text": ""},
           {"id": "blank", "text": "   \n\t "}, {"id": rows[0]["id"], "text": rows[0]["text"]},
           {"id": "long", "text": " ".join(r["text"] for r in rows[:40:2])[:200_000]}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:60] + odd + rows[60:]))
    config = _config(tmp_path / "in.jsonl", tmp_path / "out", eps=0.1, boundary=1.0, clusters=6, max_cluster=15)
    config["stages"] = [dict(config["stages"][1], docs_per_cluster=4)]   # no langid: every text reaches the stage
    result = run_pipeline(build_pipeline(config), progress=False, engine="local", num_cpus=1)
    figures = result.report["global_steps"]["semantic_dedup"]
    assert figures["giant_clusters_split"] >= 1
    data = read_manifest_files(tmp_path / "out", "data/").to_pylist()
    rejects = read_manifest_files(tmp_path / "out", "rejects/").to_pylist()
    assert len(data) + len(rejects) == len(rows) + len(odd)   # nothing lost
    kept = {r["id"] for r in data}
    named = [r["reject_reason"].removeprefix(steps.REASON_PREFIX) for r in rejects
             if (r["reject_reason"] or "").startswith(steps.REASON_PREFIX)]
    assert len(named) >= 50 and set(named) <= kept
    sims = {r["id"]: r[steps.MAX_SIM] for r in data}
    assert sims["emoji"] == 0.0 and sims["braille"] == 0.0
    other = {r["id"]: r["reject_reason"] for r in rejects if not r["reject_reason"].startswith(steps.REASON_PREFIX)}
    assert other == {"empty": "empty_text", "blank": "empty_text"}   # the reader's, before the stage
