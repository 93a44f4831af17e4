"""Dedup indexes across runs are compacted (``stages/dedup/index_store.py``): a cron output reads a
number of index folders logarithmic in its runs, past the 127 folders one run can tag, with the
same decisions as reading every run, and a killed compaction loses nothing.

Earlier runs' index folders are built quickly with the stages' own global step (the real
writer, the real merge) on the local engine's ``DatasetOps``; the run that reads them is a real
incremental run."""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pipeline_helpers import read_manifest_files, web_docs

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.executors.common import key_columns
from tokenmill.engine.executors.local.ops import LocalDatasetOps
from tokenmill.engine.global_ops import node_ids
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.run import run_pipeline
from tokenmill.stages.dedup import index_store
from tokenmill.stages.dedup.index_store import compact, folders_of, index_folders, index_state

HISTORY = 134   # index folders written before the real run: with run 1's, 135 runs


@pytest.fixture(scope="module")
def texts(shared_data) -> list[str]:
    out = [r["text"] for r in web_docs(shared_data) if len(r["text"].split()) > 60]
    assert len(out) >= 150
    return out


def _config(inputs: Path, out: Path) -> dict:
    return {"name": "cron", "input": {"paths": [str(inputs)]}, "engine": "local", "tokenizer": {"kind": "none"},
            "output": {"path": str(out), "incremental": True},
            "stages": [{"type": "exact_dedup"}, {"type": "minhash_dedup", "threshold": 0.7, "scope": "global"}]}


def _write_docs(path: Path, docs: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))


def _index_run(pipeline, out: Path, run_id: str, docs: list[tuple[str, str]], pool) -> None:
    """What a run with these documents leaves in ``out``'s indexes: each dedup stage's global step
    (merging earlier folders as a real run does, then writing this run's keys)."""
    for rs in pipeline.stages:
        params = rs.cls.incremental(rs.params, f"{out}/_index/{rs.name}")
        stage = rs.cls(params, pipeline.languages, rs.resources)
        stage.setup()
        batch = pa.table({"id": [i for i, _ in docs], "row_key": [f"{run_id}:{n}" for n in range(len(docs))],
                          "text": pa.array([t for _, t in docs], pa.large_string()),
                          "language": pa.nulls(len(docs), pa.string())})
        keys = stage(batch).select(key_columns(stage))
        keys = keys.append_column("node", node_ids(0, [True] * keys.num_rows))
        stage.global_step(LocalDatasetOps(2, pool, run_id=run_id), [keys])


def _near_copy(text: str) -> str:
    words = text.split()
    return " ".join(words[:-3] + ["tail", "words", "changed"])


@pytest.mark.slow
def test_run_after_135_indexed_runs_reads_few_folders_and_rejects_copies_of_the_first_and_latest(tmp_path, texts):
    landing, out = tmp_path / "in", tmp_path / "out"
    _write_docs(landing / "night-0001.jsonl", [("first-0", texts[0]), ("first-1", texts[1])])
    first = run_pipeline(build_pipeline(_config(landing, out)), progress=False)
    assert first.report["incremental"]["run"] == 1
    pipeline = build_pipeline(_config(landing, out))
    with ThreadPoolExecutor(2) as pool:
        for n in range(HISTORY):
            _index_run(pipeline, out, f"h{n:06d}", [(f"hist-{n}", texts[2 + n])], pool)
    for stage in ("exact_dedup", "minhash_dedup"):
        live, leftovers = folders_of(str(out / "_index" / stage))
        assert sum(f.count for f in live) == HISTORY + 1 and not leftovers
        assert len(live) <= 3 * (index_store.FANOUT - 1)   # log_8(135) levels, at most 7 folders each
        merged = [f for f in live if f.level > 0]
        assert merged and all(len(f.files()) == 1 for f in merged)   # a small index merges into one file
    _write_docs(landing / "night-0002.jsonl", [
        ("copy-of-first", texts[0]), ("near-first", _near_copy(texts[1])),
        ("copy-of-latest", texts[2 + HISTORY - 1]), ("near-oldest-history", _near_copy(texts[2])),
        ("new", texts[2 + HISTORY])])
    result = run_pipeline(build_pipeline(_config(landing, out)), progress=False)
    assert result.report["incremental"]["run"] == 2
    steps = result.report["global_steps"]
    assert steps["exact_dedup"]["indexed_runs"] == HISTORY + 1
    assert steps["minhash_dedup"]["indexed_runs"] == HISTORY + 1
    assert steps["minhash_dedup"]["index_folders"] <= 3 * (index_store.FANOUT - 1)
    rejects = read_manifest_files(out, "rejects/")
    reasons = dict(zip(rejects["id"].to_pylist(), rejects["reject_reason"].to_pylist()))
    assert reasons == {"copy-of-first": "duplicate_of:first-0", "near-first": "near_duplicate_of:first-1",
                       "copy-of-latest": f"duplicate_of:hist-{HISTORY - 1}",
                       "near-oldest-history": "near_duplicate_of:hist-0"}
    assert read_manifest_files(out, "data/")["id"].to_pylist().count("new") == 1


def _decisions(out: Path) -> tuple[list, dict]:
    data = read_manifest_files(out, "data/")
    rej = read_manifest_files(out, "rejects/")
    return sorted(data["id"].to_pylist()), dict(zip(rej["id"].to_pylist(), rej["reject_reason"].to_pylist()))


def test_compacted_indexes_give_the_decisions_of_reading_every_run(tmp_path, texts, monkeypatch):
    """The same 12 earlier runs, merged (fan-out 3: two levels) and not merged: the same decisions,
    the same fingerprint state."""
    runs = 12
    history = [[(f"h{n}-{k}", texts[3 * n + k]) for k in range(3)] for n in range(runs)]
    arrivals = [("a", texts[5]), ("b", _near_copy(texts[20])), ("c", texts[121]), ("d", _near_copy(texts[121])),
                ("e", _near_copy(texts[35]))]
    outcomes, states = [], []
    for fanout in (3, 10_000):
        monkeypatch.setattr(index_store, "FANOUT", fanout)
        landing, out = tmp_path / f"in-{fanout}", tmp_path / f"out-{fanout}"
        _write_docs(landing / "night.jsonl", arrivals)
        pipeline = build_pipeline(_config(landing, out))
        root = str(out / "_index" / "minhash_dedup")
        with ThreadPoolExecutor(2) as pool:
            for n, docs in enumerate(history):
                before = index_state([root])
                _index_run(pipeline, out, f"h{n:06d}", docs, pool)
                # merges (of earlier folders, during this run) keep the digest: it grew by this run's own only
                (own,) = [f for f in folders_of(root)[0] if f.name == f"run=h{n:06d}"]
                count, digest = (before[0][1], int(before[0][2], 16)) if before else (0, 0)
                assert index_state([root]) == [[root, count + 1, f"{(digest + own.digest) % index_store.DIGEST_MOD:032x}"]]
        states.append(sorted(r for f in folders_of(root)[0] for r in f.runs))
        result = run_pipeline(build_pipeline(_config(landing, out)), progress=False)
        outcomes.append(_decisions(out))
        folders = result.report["global_steps"]["minhash_dedup"]["index_folders"]
        assert folders == (runs if fanout > runs else len(folders_of(str(out / "_index" / "minhash_dedup"))[0]) - 1)
    assert states[0] == states[1] == sorted(f"run=h{n:06d}" for n in range(runs))
    assert outcomes[0] == outcomes[1]
    kept, rejected = outcomes[0]
    assert kept == ["c"] and set(rejected) == {"a", "b", "d", "e"}
    assert rejected["d"] == "near_duplicate_of:c"


def _key_folders(root: Path, runs: int, pool) -> None:
    ops = LocalDatasetOps(2, pool, run_id="x")
    for n in range(runs):
        folder = index_store.run_folder(str(root), f"r{n:06d}")
        ops.write_parquet([pa.table({"dedup_key": [f"{n:032x}"], "id": [f"doc-{n}"]})], folder)
        index_store.commit_marker(index_store.Storage(folder))


def _indexed_ids(root: Path, pool) -> list[str]:
    ops = LocalDatasetOps(2, pool, run_id="reader")
    return sorted(i for f in index_folders([str(root)]) for t in ops.read_parquet(f.files()) for i in t["id"].to_pylist())


@pytest.mark.parametrize("fault", ["marker", "removal"])
def test_a_killed_compaction_leaves_every_run_readable_once_and_the_next_one_finishes_it(tmp_path, monkeypatch, fault):
    """A merge fails at its commit (its marker cannot be written) or after it (a source folder
    cannot be removed): readers see every run exactly once either way, and the next merge clears
    what was left."""
    root = tmp_path / "index"
    state = tmp_path / "faults-state"
    match = "*gen=*_SUCCESS*" if fault == "marker" else "*run=r000002*"
    op = "mv" if fault == "marker" else "rm"
    schedule = tmp_path / "faults.json"
    schedule.write_text(json.dumps({"inner": "file", "state": str(state),
                                    "rules": [{"op": op, "match": match, "kind": "permanent", "times": 1}]}))
    monkeypatch.setenv("TOKENMILL_FAULTS", str(schedule))
    with ThreadPoolExecutor(2) as pool:
        _key_folders(root, index_store.FANOUT + 2, pool)
        want = sorted(f"doc-{n}" for n in range(index_store.FANOUT + 2))
        before = index_state([str(root)])
        with pytest.raises(PermissionError):
            compact(LocalDatasetOps(2, pool, run_id="x"), f"faulty://{root}")
        assert _indexed_ids(root, pool) == want
        assert index_state([str(root)]) == before
        live, leftovers = folders_of(str(root))
        # the merge without a marker, or the sources it had not removed yet (the one it could not remove on)
        assert len(leftovers) == (1 if fault == "marker" else index_store.FANOUT - 2)
        figures = compact(LocalDatasetOps(2, pool, run_id="x"), f"faulty://{root}")
        assert figures["index_leftovers_removed"] == len(leftovers)
        live, leftovers = folders_of(str(root))
        assert not leftovers and len(live) == 3 and _indexed_ids(root, pool) == want
        assert index_state([str(root)]) == before
        assert not any(p.name.startswith("run=r00000") and p.name < "run=r000008" for p in root.iterdir())


def test_a_run_never_reads_its_own_rows_from_a_merged_folder(tmp_path):
    """A plain run re-run with the same id after its folder was merged: its own rows are left out."""
    root = tmp_path / "index"
    with ThreadPoolExecutor(2) as pool:
        _key_folders(root, index_store.FANOUT, pool)
        compact(LocalDatasetOps(2, pool, run_id="x"), str(root))
        (merged,) = index_folders([str(root)], exclude="r000003")
        position = index_store.own_position(merged, "r000003")
        rows = pa.concat_tables(LocalDatasetOps(2, pool).read_parquet(merged.files()))
        left = index_store.without_run(rows, position)
    assert position == 3 and rows.num_rows == index_store.FANOUT
    assert sorted(left["id"].to_pylist()) == sorted(f"doc-{n}" for n in range(index_store.FANOUT) if n != 3)
    assert pc.min(rows[index_store.RUN_COLUMN]).as_py() == 0
    # the run's fingerprint state keeps the merged folder whole (re-committing its own folder does
    # not change it); what it reads and reports leaves its own rows out
    assert index_state([str(root)], exclude="r000003")[0][1] == index_store.FANOUT
    assert index_store.index_figures([merged], "r000003")["indexed_runs"] == index_store.FANOUT - 1


@pytest.mark.slow
def test_a_chunk_of_more_than_16384_parts_dedups_correctly(tmp_path):
    """One chunk of 16,500 one-row parts (the old node ids held 16,384 parts a chunk) through exact
    dedup's multi-step global step on the local engine: every copy is rejected for its first."""
    import pyarrow.parquet as pq

    from tokenmill.engine.executors.local.executor import LocalExecutor
    from tokenmill.engine.global_ops import part_bases
    from tokenmill.engine.jobs import GlobalJob
    from tokenmill.engine.worker import read_parquet_file

    n, distinct = 16_500, 8_000
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jsonl").write_text('{"text": "x"}\n')
    cfg = {"name": "parts", "input": {"paths": [str(tmp_path / "in")]}, "output": {"path": str(tmp_path / "out")},
           "tokenizer": {"kind": "none"}, "stages": [{"type": "exact_dedup", "index": {"write": str(tmp_path / "idx")}}]}
    pipeline = build_pipeline(cfg)
    rs = pipeline.stages[0]
    stage = rs.build(pipeline.languages)
    docs = pa.table({"id": [f"d{i}" for i in range(n)], "row_key": [f"f{i:05d}:0" for i in range(n)],
                     "text": pa.array([f"document {i % distinct} with some words" for i in range(n)], pa.large_string()),
                     "language": pa.nulls(n, pa.string()), "reject_stage": pa.nulls(n, pa.string())})
    keyed = stage(docs)
    folder = tmp_path / "parts"
    folder.mkdir()
    urls = []
    for i in range(n):
        path = folder / f"part-{i:08d}-n1.parquet"
        pq.write_table(keyed.slice(i, 1), path)
        urls.append(str(path))
    executor = LocalExecutor(pipeline, num_cpus=2)
    executor.start()
    try:
        executor.run_global(GlobalJob(rs, pipeline.languages, urls, str(tmp_path / "decisions"), 0,
                                      part_bases=part_bases([1] * n), chunk_bases=[0], run_id="t"))
    finally:
        executor.stop()
    files = sorted((tmp_path / "decisions").rglob("*.parquet"))
    assert files and all("_chunk=0" in str(f) for f in files), files[:3]
    decisions = pa.concat_tables([read_parquet_file(str(f)) for f in files])
    reasons = dict(zip(decisions["row_key"].to_pylist(), decisions["reject_reason"].to_pylist()))
    assert len(reasons) == n - distinct
    assert all(reasons[f"f{i:05d}:0"] == f"duplicate_of:d{i % distinct}" for i in range(distinct, n))


def test_a_run_that_lost_its_lease_changes_no_index_folder(tmp_path):
    """Compaction asks the lease before each change: a run that lost it merges and removes nothing."""
    root = tmp_path / "index"

    def lost() -> None:
        raise RuntimeError("lease lost")

    with ThreadPoolExecutor(2) as pool:
        _key_folders(root, index_store.FANOUT, pool)
        before = sorted(p.name for p in root.iterdir())
        ops = LocalDatasetOps(2, pool, run_id="x")
        ops.check = lost
        with pytest.raises(RuntimeError, match="lease lost"):
            compact(ops, str(root))
        assert sorted(p.name for p in root.iterdir()) == before
        assert _indexed_ids(root, pool) == sorted(f"doc-{n}" for n in range(index_store.FANOUT))


def test_a_merged_folder_of_the_first_kind_is_read_and_merged_again(tmp_path, monkeypatch):
    """Markers of the first kind listed every run with its token (``covers``): still read (a run
    folder they cover is a leftover), and merged into a marker of the new kind."""
    monkeypatch.setattr(index_store, "FANOUT", 2)
    root = tmp_path / "index"
    with ThreadPoolExecutor(2) as pool:
        _key_folders(root, 2, pool)
        tokens = {f.name: f.token for f in folders_of(str(root))[0]}
        shutil.copytree(root / "run=r000000", tmp_path / "aside")
        compact(LocalDatasetOps(2, pool, run_id="x"), str(root))
        shutil.copytree(tmp_path / "aside", root / "run=r000000")   # a source the merge had not removed yet
        (gen,) = [p for p in root.iterdir() if p.name.startswith("gen=")]
        marker = json.loads((gen / "_SUCCESS").read_text())
        old = {k: v for k, v in marker.items() if k not in ("sources", "runs", "count", "digest")}
        old["covers"] = [[name, tokens[name]] for name in ("run=r000000", "run=r000001")]
        (gen / "_SUCCESS").write_text(json.dumps(old))
        index_store._GEN_MARKERS.clear()
        live, leftovers = folders_of(str(root))
        assert [f.name for f in live] == [gen.name] and leftovers == ["run=r000000"]
        assert live[0].count == 2 and live[0].runs == ["run=r000000", "run=r000001"]
        assert index_state([str(root)]) == [[str(root), 2, f"{live[0].digest:032x}"]]
        for n in (2, 3):   # two more runs: merged (level 1), then merged with the old folder (level 2)
            folder = index_store.run_folder(str(root), f"r{n:06d}")
            LocalDatasetOps(2, pool, run_id="x").write_parquet(
                [pa.table({"dedup_key": [f"{n:032x}"], "id": [f"doc-{n}"]})], folder)
            index_store.commit_marker(Storage(folder))
        digest = sum(f.digest for f in folders_of(str(root))[0]) % index_store.DIGEST_MOD
        compact(LocalDatasetOps(2, pool, run_id="x"), str(root))
        (top,), leftovers = folders_of(str(root))
        assert not leftovers and top.level == 2 and "covers" not in top.marker
        assert top.runs == [f"run=r{n:06d}" for n in range(4)] and top.marker["runs"] == [[0, 3]]
        assert top.digest == digest and index_store.own_position(top, "r000002") == 2
        assert _indexed_ids(root, pool) == [f"doc-{n}" for n in range(4)]


def _damage(path: Path, how: str) -> None:
    if how == "cut":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "missing":
        path.unlink()
    else:   # overwritten with bytes of the same size: only reading it tells
        path.write_bytes(b"x" * path.stat().st_size)


@pytest.mark.parametrize("how", ["cut", "missing", "same size"])
def test_a_damaged_index_folder_stops_the_run_before_it_dedups_against_part_of_it(tmp_path, how, capsys):
    """An index file cut, lost or overwritten: the next run exits 2 naming the folder (and the file),
    writes no output (cut or lost: before any work, from the sizes its commit marker names;
    overwritten: when its global step reads it); once the folder is removed as the message says, the run finishes. A file a
    commit did not write, beside a committed folder's, is not read."""
    from tokenmill.engine.cli import main

    root = tmp_path / "index"
    with ThreadPoolExecutor(2) as pool:
        _key_folders(root, 3, pool)
    (victim,) = sorted((root / "run=r000001").glob("*.parquet"))
    shutil.copy(next((root / "run=r000002").glob("*.parquet")), root / "run=r000000" / "stray.parquet")
    assert sorted(Path(f).name for f in folders_of(str(root))[0][0].files()) == [
        p.name for p in sorted((root / "run=r000000").glob("*.parquet")) if p.name != "stray.parquet"]
    _damage(victim, how)
    _write_docs(tmp_path / "in.jsonl", [("new-0", "a document of its own words"), ("new-1", "another one entirely")])
    cfg = {"name": "d", "input": {"paths": [str(tmp_path / "in.jsonl")]}, "output": {"path": str(tmp_path / "out")},
           "stages": [{"type": "exact_dedup", "index": {"read": [str(root)]}}]}
    (tmp_path / "d.yaml").write_text(json.dumps(cfg))
    assert main(["run", str(tmp_path / "d.yaml"), "--engine", "local", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "run=r000001" in err and victim.name in err and "Traceback" not in err
    assert not list((tmp_path / "out").glob("data/**/*.parquet"))   # finished phases may stay, for the re-run
    shutil.rmtree(root / "run=r000001")
    assert main(["run", str(tmp_path / "d.yaml"), "--engine", "local", "--no-progress"]) == 0
    assert sorted(read_manifest_files(tmp_path / "out", "data/")["id"].to_pylist()) == ["new-0", "new-1"]


def test_a_damaged_merged_folder_is_named_before_the_merge_reads_it(tmp_path, monkeypatch):
    """A merged folder's marker names its files too: cut one and a reader, or the next merge, stops."""
    monkeypatch.setattr(index_store, "FANOUT", 2)
    root = tmp_path / "index"
    with ThreadPoolExecutor(2) as pool:
        _key_folders(root, 2, pool)
        compact(LocalDatasetOps(2, pool, run_id="x"), str(root))
        (gen,) = [p for p in root.iterdir() if p.name.startswith("gen=")]
        assert json.loads((gen / "_SUCCESS").read_text())["files"]
        _damage(next(gen.glob("*.parquet")), "cut")
        with pytest.raises(index_store.DamagedState, match=f"{gen.name} is damaged: .* bytes where its commit wrote"):
            index_folders([str(root)])
        with pytest.raises(index_store.DamagedState, match="remove it to drop its 2 runs"):
            compact(LocalDatasetOps(2, pool, run_id="x"), str(root))


def test_damage_is_found_inside_an_engines_wrapper_of_a_workers_error():
    """Ray Data and Spark hand a worker's DamagedState back as text inside their own errors."""
    from tokenmill.engine.cli import _damage

    wrapped = RuntimeError("ray::MapBatches(_read_files)\nTraceback ...\ntokenmill.engine.global_ops.DamagedState: "
                           "s3://b/index/run=x/a.parquet cannot be read as Parquet (bad): restore it\n\nmore")
    try:
        try:
            raise index_store.DamagedState("index folder f is damaged: a.parquet is missing")
        except index_store.DamagedState as inner:
            raise ValueError("during the step") from inner
    except ValueError as outer:
        chained = outer
    assert _damage(wrapped) == "s3://b/index/run=x/a.parquet cannot be read as Parquet (bad): restore it"
    assert _damage(chained) == "index folder f is damaged: a.parquet is missing"
    assert _damage(ValueError("a plain error")) is None
