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


def reference(x, labels, near, margin, cos, m: float, eps: float, keep: str = "hard", indexed=None):
    """(max_sim, removed, index of the kept document each names) by the definition, one document
    at a time: earlier = before in (earlier runs' first, the keep rule, input) order; ties name the
    earliest; an earlier run's document is never removed."""
    n = len(x)
    indexed = np.zeros(n, bool) if indexed is None else indexed
    rule = {"hard": [cos], "easy": [-cos], "first": []}[keep]
    order = np.lexsort((np.arange(n), *rule, ~indexed))
    pos = np.empty(n, int)
    pos[order] = np.arange(n)
    sims = x @ x.T
    on = (near >= 0) & (margin < m)
    lo, hi = np.minimum(labels, near), np.maximum(labels, near)
    best, ptr = np.zeros(n, np.float32), np.full(n, -1)
    for j in order:
        earlier = pos < pos[j]
        inside = earlier & (labels == labels[j])
        across = earlier & on & on[j] & (lo == lo[j]) & (hi == hi[j]) & (labels != labels[j])
        for cand in (inside, across):
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


def _ours(datasets, x, labels, cos, near, margin, m: float, eps: float, keep: str = "hard", indexed=None):
    n = len(x)
    indexed = np.zeros(n, bool) if indexed is None else indexed
    t = pa.table({"row_key": [f"in.jsonl:{i:06d}" for i in range(n)], "id": [f"d{i}" for i in range(n)],
                  "url": pa.nulls(n, pa.string()), "node": pa.array(np.arange(n), pa.int64()),
                  steps.EMBEDDING: vectors.encode(x), steps.GROUP: pa.array(np.zeros(n, np.int64)),
                  steps.CLUSTER: pa.array(labels, pa.int32()), steps.COS: pa.array(cos, pa.float32()),
                  steps.NEAR: pa.array(near, pa.int32()), steps.MARGIN: pa.array(margin, pa.float32()),
                  "_indexed": pa.array(indexed)})
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
    (5, 80, 1.0, 0.1, "first", 0)])
def test_the_boundary_pass_gives_the_definitions_removals_and_names_in_more_cases(local_datasets, seed, k, m, eps,
                                                                                   keep, earlier):
    _check_definition(local_datasets, seed, k, m, eps, keep, earlier)


def _check_definition(datasets, seed, k, m, eps, keep, earlier):
    x = _groups_of_copies(seed)
    labels, cos, near, cos2 = kmeans.assign_two(x, kmeans.fit(x, k, seed=seed))
    margin = (cos.astype(np.float64) - cos2.astype(np.float64)).astype(np.float32)
    indexed = (np.arange(len(x)) % earlier == 3) if earlier else np.zeros(len(x), bool)
    best, gone, root = reference(x, labels, near, margin, cos, m, eps, keep, indexed)
    got, figures = _ours(datasets, x, labels, cos, near, margin, m, eps, keep, indexed)
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
    """Real pages and their copies in ~30 clusters, every document near a border: the local run."""
    import json

    from test_semantic_dedup import _config, _pages

    folder = tmp_path_factory.mktemp("borders")
    pages = folder / "pages.jsonl"
    pages.write_text("".join(json.dumps(r) + "\n" for r in _pages(shared_data)))

    def run(engine: str, **sem):
        from tokenmill.engine.config import build_pipeline
        from tokenmill.engine.run import run_pipeline

        config = _config(pages, folder / f"{engine}-{len(sem)}", eps=0.1, boundary=1.0, **sem)
        config["stages"][1]["docs_per_cluster"] = 4
        kw = {"num_cpus": 1} if engine == "local" else {}
        result = run_pipeline(build_pipeline(config), progress=False, engine=engine, **kw)
        return folder / f"{engine}-{len(sem)}", result.report["global_steps"]["semantic_dedup"]

    return run, run("local")


def test_pages_removed_across_a_border_name_a_kept_page(border_runs):
    from test_semantic_dedup import _outcome

    _, (out, figures) = border_runs
    got = _outcome(out)
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


def test_pairs_of_a_giants_sub_clusters_are_keyed_apart():
    """``mark`` on a giant's rows keys each by its pair of sub-clusters; a row of another cluster
    whose second-nearest is the giant is not near a border."""
    n = 6
    rows = pa.table({steps.GROUP: pa.array([1] * n, pa.int64()), steps.CLUSTER: pa.array([0, 0, 0, 0, 1, 1], pa.int32()),
                     steps.NEAR: pa.array([1, 1, 1, 1, 0, 0], pa.int32()), steps.MARGIN: pa.array([0.0] * n, pa.float32()),
                     steps.SUB: pa.array([0, 1, 2, 1, 0, 0], pa.int32()), steps.SUB_NEAR: pa.array([1, 0, 1, 2, -1, -1], pa.int32()),
                     steps.SUB_MARGIN: pa.array([0.001, 0.001, 0.5, 0.001, 0, 0], pa.float32())})
    giant = int(kmeans.pair_key(np.array([1]), np.array([0])).view(np.int64)[0])
    rows = rows.append_column("_gcluster", pa.array([giant] * 4 + [7, 7], pa.int64()))
    rows = rows.append_column(steps.COS, pa.array([0.5] * n, pa.float32()))
    marked = boundary.mark(rows, 0.01, giants=(giant,))
    flag, pair = marked[steps.BOUNDARY].to_pylist(), marked[boundary.PAIR].to_pylist()
    assert flag == [True, True, False, True, False, False]
    assert pair[0] == pair[1] != pair[3]   # sub-clusters {0, 1} together, {1, 2} apart
    unreadable = rows.set_column(rows.column_names.index(steps.COS), steps.COS, pa.array([0.0] * n, pa.float32()))
    assert not any(boundary.mark(unreadable, 0.01, giants=(giant,))[steps.BOUNDARY].to_pylist())
