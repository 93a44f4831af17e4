"""Object-store paths work end to end: input read from and output written to S3, through a real
S3 API server (moto's standalone server) on 127.0.0.1. Reading goes through fsspec (s3fs), Ray
Data's reads and writes through pyarrow's S3FileSystem; both find the server through
AWS_ENDPOINT_URL, which the test puts in the driver's environment and in every Ray worker's."""
from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import make_pipeline, web_docs

from tokenmill.engine.durable.manifest import part_names
from tokenmill.engine.io.readers import list_input_files
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.run import fingerprint, run_pipeline

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

N_DOCS = 60
IN_GLOB = "s3://in-bucket/crawl/*.jsonl.gz"
OUT = "s3://out-bucket/run1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free loopback port; the AWS env points every client at it."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",   # no instance-metadata probes off the machine
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }
    saved = {k: os.environ.get(k) for k in env}
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.time() + 30
        while True:
            try:
                opener.open(f"{endpoint}/moto-api/", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"moto server did not start on {endpoint} (exit code {proc.poll()})")
                time.sleep(0.1)
        os.environ.update(env)
        s3fs.S3FileSystem.clear_instance_cache()   # an instance made for another server's endpoint
        yield endpoint, env
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_s3(s3_server):
    """A Ray whose workers get the AWS env (a Ray started before the env was set would not pass
    it on): the session's Ray is stopped for this module and started again afterwards."""
    import ray

    _, env = s3_server
    was_up = ray.is_initialized()
    if was_up:
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING", runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()
    if was_up:  # as conftest's ray_local started it, for the tests after this module
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")


@pytest.fixture(scope="module")
def s3(s3_server):
    fs = s3fs.S3FileSystem(endpoint_url=s3_server[0], key="testing", secret="testing", skip_instance_cache=True)
    return fs


def _parquet(s3, path: str):
    with s3.open(path, "rb") as fh:
        return pq.read_table(fh, partitioning=None)


@pytest.mark.slow   # runs on a Ray restarted with the S3 env
def test_object_store_input_and_output(ray_s3, s3, shared_data):
    docs = web_docs(shared_data)[:N_DOCS]
    assert len(docs) == N_DOCS
    s3.mkdir("in-bucket")
    s3.mkdir("out-bucket")
    half = N_DOCS // 2
    for i, part in enumerate((docs[:half], docs[half:])):
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part).encode()
        s3.pipe(f"in-bucket/crawl/shard-{i}.jsonl.gz", gzip.compress(body))

    pipe, _ = make_pipeline([IN_GLOB], OUT, batch_size=20)
    res = run_pipeline(pipe, progress=False)
    assert not res.skipped

    root = OUT.split("://", 1)[1]
    s3.invalidate_cache()
    for name in ("_manifest.json", "report.json", "report.html"):
        assert s3.exists(f"{root}/{name}"), name
    manifest = json.loads(s3.cat(f"{root}/_manifest.json"))
    report = json.loads(s3.cat(f"{root}/report.json"))
    assert manifest["complete"] is True
    assert manifest["inputs"] == [f"s3://in-bucket/crawl/shard-{i}.jsonl.gz" for i in range(2)]
    assert report["file_errors"] == [], report["file_errors"]   # every input was read, from the loopback server

    # the manifest lists exactly the Parquet files in place, each with its true row count
    listed = {f["path"]: f for f in manifest["files"]}
    on_store = {p[len(root) + 1:] for p in s3.find(root) if p.endswith(".parquet")}
    assert set(listed) == on_store
    data_files = [p for p in listed if p.startswith("data/")]
    assert data_files and all(p.split("/")[1].startswith("language=") and p.split("/")[2].startswith("part-")
                              for p in data_files), data_files
    kept_ids, rejected_ids = [], []
    for rel, f in listed.items():
        t = _parquet(s3, f"{root}/{rel}")
        assert t.num_rows == f["rows"], rel
        assert f["bytes"] == s3.size(f"{root}/{rel}")
        if rel.startswith("data/"):
            lang = rel.split("/")[1].split("=", 1)[1]
            assert set(t["language"].to_pylist()) == {lang}, rel
            kept_ids += t["id"].to_pylist()
        else:
            rejected_ids += t["id"].to_pylist()
    assert kept_ids, "nothing was kept"
    # every document is kept or rejected, exactly once
    assert len(kept_ids) + len(rejected_ids) == N_DOCS
    assert sorted(kept_ids + rejected_ids) == sorted(r["id"] for r in docs)
    assert report["input"]["docs"] == N_DOCS and report["output"]["docs"] == len(kept_ids)

    assert not s3.exists(f"{root}/_work"), s3.find(f"{root}/_work")
    everything = {p[len(root) + 1:] for p in s3.find(root)} - {""}   # "" is a folder marker ("run1/")
    lease = {p for p in everything if p.startswith("_lease/")}
    assert len(lease) == 1 and json.loads(s3.cat(f"{root}/{lease.pop()}"))["released"]   # the last record: released
    everything = {p for p in everything if not p.startswith("_lease/")}
    assert everything == set(listed) | {"_manifest.json", "report.json", "report.html"}, everything

    again = run_pipeline(make_pipeline([IN_GLOB], OUT, batch_size=20)[0], progress=False)
    assert again.skipped

    # changed input on the store changes the fingerprint, so a re-run would not skip it
    s3.pipe("in-bucket/crawl/shard-1.jsonl.gz", gzip.compress(json.dumps(docs[-1]).encode() + b"\n"))
    files, _ = list_input_files([IN_GLOB])
    assert fingerprint(pipe, files) != manifest["fingerprint"]


@pytest.mark.slow   # runs on a Ray restarted with the S3 env
def test_quality_model_trained_from_and_read_from_the_object_store(ray_s3, s3, shared_data, tmp_path):
    """train-quality reads its documents from S3 and writes the model folder there; the stage's
    model_path takes that S3 folder (copied once per actor)."""
    from tokenmill.engine.config import build_pipeline
    from tokenmill.stages.quality.train import TrainArgs, train

    rows = [json.loads(line) for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()]
    s3.mkdir("q-bucket")
    for label in ("high", "low"):
        s3.pipe(f"q-bucket/train/{label}.jsonl", "".join(json.dumps({"text": r["text"]}) + "\n"
                                                          for r in rows if r["label"] == label).encode())
    result = train(TrainArgs(positive=["s3://q-bucket/train/high.jsonl"], negative=["s3://q-bucket/train/low.jsonl"],
                             out="s3://q-bucket/models/q", holdout=0.2, fasttext={"epoch": 25, "lr": 0.5, "bucket": 50_000},
                             search=False))
    s3.invalidate_cache()
    assert result["roc_auc"] >= 0.97 and s3.exists("q-bucket/models/q/quality.json")
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows[:80]))
    res = run_pipeline(build_pipeline({"name": "q", "input": {"paths": [str(inp)]}, "output": {"path": str(tmp_path / "out")},
                                       "stages": [{"type": "quality_fasttext", "model_path": "s3://q-bucket/models/q",
                                                   "annotate_only": True, "keep_top": 0.5}]}), progress=False)
    assert res.report["global_steps"]["quality_fasttext"]["documents"] == {"und": 80}
    assert sum(map(sum, res.report["quality_scores"]["languages"].values())) == 80


def test_lease_on_the_object_store_is_exclusive(s3_server, s3):
    """The output lease is a conditional put (If-None-Match: *) on S3: a second taker is refused."""
    from tokenmill.engine.durable.lease import Lease, LeaseHeld, LeaseLost

    s3.mkdir("lease-bucket")
    store = Storage("s3://lease-bucket/out")
    path = store.path("_lease")
    first = Lease(store, path, ttl_s=60, say=lambda m: None).acquire()
    with pytest.raises(LeaseHeld):
        Lease(store, path, ttl_s=60, say=lambda m: None).acquire(wait_s=0.2, poll_s=0.1)
    # renewing and releasing are conditional creates too: a rival that wrote the next record wins
    rival = Lease(store, path, ttl_s=60, say=lambda m: None)
    assert rival._create(first.generation + 1, rival._record())
    assert not first._create(first.generation + 1, first._record())
    first._renew_once()
    with pytest.raises(LeaseLost):
        first.check()
    rival.generation = first.generation + 1
    rival.release()
    s3.invalidate_cache()
    assert not Lease(store, path).holder()
    Lease(store, path, ttl_s=60, say=lambda m: None).acquire().release()


@pytest.mark.slow   # runs on a Ray restarted with the S3 env
def test_incremental_runs_on_the_object_store(ray_s3, s3, shared_data):
    """Two cron-style runs on S3: the second takes only the new shard and adds its files beside the first's."""
    docs = web_docs(shared_data)[:40]
    s3.mkdir("incr-bucket")
    out = "s3://incr-bucket/curated"
    for i, part in enumerate((docs[:20], docs[20:])):
        s3.pipe(f"incr-bucket/crawl/shard-{i}.jsonl", "".join(json.dumps(r) + "\n" for r in part).encode())
        pipe, _ = make_pipeline(["s3://incr-bucket/crawl/*.jsonl"], out, batch_size=20,
                                output={"path": out, "incremental": True})
        res = run_pipeline(pipe, progress=False)
        assert res.report["incremental"]["run"] == i + 1 and res.report["incremental"]["input_files"] == 1
    s3.invalidate_cache()
    manifest = json.loads(s3.cat("incr-bucket/curated/_manifest.json"))
    assert manifest["part_runs"] == [[1, 2]]
    every = [f for part in part_names(manifest) for f in json.loads(s3.cat(f"incr-bucket/curated/{part}"))["files"]]
    names = [f["path"].rsplit("/", 1)[-1] for f in every]   # the sharded manifest: a part per run
    assert any(n.startswith("part-r000001-") for n in names) and any(n.startswith("part-r000002-") for n in names)
    assert sum(f["rows"] for f in every) == 40   # every document once, kept or rejected
    assert s3.exists("incr-bucket/curated/_ledger/run-000002.json")
    assert not s3.exists("incr-bucket/curated/_ledger/_lease.json")
    # the dedup indexes live on the store too, one committed run folder per run
    assert len([p for p in s3.find("incr-bucket/curated/_index/exact_dedup") if p.endswith("_SUCCESS")]) == 2


def test_transient_s3_faults_change_nothing_and_a_commit_survives_a_failed_move(s3_server, s3, shared_data,
                                                                                tmp_path, monkeypatch):
    """The fault-injecting filesystem over moto's S3 (``faulty://`` with ``inner: s3``): first reads
    of inputs, listings and moves fail transiently, and the commit's move of its manifest into place
    fails for good (the curated files are already in place: written there, never moved); the run is
    retried, and its output equals a clean run's on plain S3. The local executor: no Ray."""
    from pipeline_helpers import read_manifest_files

    from tokenmill.engine.config import build_pipeline
    from tokenmill.engine.io.faults import ENV

    s3.mkdir("fault-bucket")
    docs = web_docs(shared_data)[:45]
    for i in range(3):
        s3.pipe(f"fault-bucket/in/s{i}.jsonl.gz",
                gzip.compress("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in docs[i::3]).encode()))

    def config(url: str) -> dict:
        return {"name": "s3faults", "input": {"paths": [f"{url.split('://')[0]}://fault-bucket/in/*.jsonl.gz"],
                                              "files_per_chunk": 1},
                "output": {"path": f"{url}"}, "engine": "local", "local": {"num_cpus": 1},
                "io": {"backoff_seconds": 0.01},
                "stages": [{"type": "langid"}, {"type": "exact_dedup"}]}

    clean = run_pipeline(build_pipeline(config("s3://fault-bucket/clean")), progress=False)

    def schedule(rules: list[dict], n: int) -> None:
        path = tmp_path / f"faults-{n}.json"
        path.write_text(json.dumps({"inner": "s3", "state": str(tmp_path / f"state-{n}"), "rules": rules}))
        monkeypatch.setenv(ENV, str(path))

    schedule([{"op": "open_read", "match": "fault-bucket/in/*", "kind": "transient", "per_path": True},
              {"op": "ls", "match": "fault-bucket/out*", "kind": "transient", "skip": 2, "times": 2},
              {"op": "mv", "match": "fault-bucket/out/_manifest.json*", "kind": "permanent", "times": 1},
              {"op": "mv", "match": "fault-bucket/out/*", "kind": "transient", "skip": 3, "times": 2}], 0)
    with pytest.raises(PermissionError, match="injected permanent fault: mv"):
        run_pipeline(build_pipeline(config("faulty://fault-bucket/out")), progress=False)
    injected = [json.loads(line) for line in (tmp_path / "state-0" / "log.jsonl").read_text().splitlines()]
    assert sum(e["op"] == "open_read" for e in injected) == 3 and sum(e["kind"] == "permanent" for e in injected) == 1
    schedule([], 1)
    again = run_pipeline(build_pipeline(config("faulty://fault-bucket/out")), progress=False)
    s3.invalidate_cache()
    local = tmp_path / "copies"
    for name in ("clean", "out"):
        s3.get(f"fault-bucket/{name}/", str(local / name), recursive=True)
    kept = [read_manifest_files(local / name, "data/") for name in ("out", "clean")]
    assert sorted(kept[0]["id"].to_pylist()) == sorted(kept[1]["id"].to_pylist()) and kept[0].num_rows > 0
    assert sorted(kept[0]["text"].to_pylist()) == sorted(kept[1]["text"].to_pylist())
    assert again.report["output"] == clean.report["output"] and again.report["file_errors"] == []


def test_object_store_globs_and_folders_still_list(s3_server, s3, shared_data):
    """Input listing on an object store (the local walk's symlink and FIFO rules do not apply):
    globs and folders list every file once, markers left out."""
    docs = web_docs(shared_data)[:2]
    s3.mkdir("list-bucket")
    body = gzip.compress("".join(json.dumps(r) + "\n" for r in docs).encode())
    for name in ("crawl/a.jsonl.gz", "crawl/b.jsonl.gz", "crawl/deep/c.jsonl.gz", "crawl/_SUCCESS"):
        s3.pipe(f"list-bucket/{name}", body)
    files, problems = list_input_files(["s3://list-bucket/crawl/*.jsonl.gz"])
    assert [f.path for f in files] == ["s3://list-bucket/crawl/a.jsonl.gz", "s3://list-bucket/crawl/b.jsonl.gz"]
    assert problems == []
    files, problems = list_input_files(["s3://list-bucket/crawl"])
    assert [f.source for f in files] == ["a.jsonl.gz", "b.jsonl.gz", "c.jsonl.gz"] and problems == []
    assert [f.path for f in files][2] == "s3://list-bucket/crawl/deep/c.jsonl.gz"


@pytest.mark.slow   # the module's moto server
def test_a_mix_from_and_to_the_object_store_equals_one_on_local_disk(s3_server, s3, shared_data, tmp_path, monkeypatch):
    """tokenmill mix with its sources and its output (plan, exchange files, markers, shards) on S3."""
    from mix_helpers import curated_output, shard_prefixes, write_mix

    from tokenmill.engine.cli import main as cli_main

    curated_output(tmp_path / "curated", shared_data, docs=120)
    s3.mkdir("mix-bucket")
    s3.put(str(tmp_path / "curated") + "/", "mix-bucket/curated/", recursive=True)
    monkeypatch.chdir(tmp_path)   # a work folder opened from a bare path would appear here
    src = [{"name": "web", "path": "s3://mix-bucket/curated", "upsample": {"by": "dup_cluster_size", "curve": "fineweb2"}}]
    local = write_mix(tmp_path / "local.yaml", sources=src, output={"path": str(tmp_path / "out"), "max_tokens_per_file": 60_000})
    remote = write_mix(tmp_path / "s3.yaml", sources=src,
                       output={"path": "s3://mix-bucket/mix", "max_tokens_per_file": 60_000})
    assert cli_main(["mix", str(local)]) == 0 and cli_main(["mix", str(remote)]) == 0
    s3.invalidate_cache()
    manifest = json.loads(s3.cat("mix-bucket/mix/_manifest.json"))
    names = [p.name for p in shard_prefixes(tmp_path / "out")]
    assert [f["path"][:-4] for f in manifest["files"] if f["path"].endswith(".bin")] == names
    for name in names:
        assert s3.cat(f"mix-bucket/mix/{name}.bin") == (tmp_path / "out" / f"{name}.bin").read_bytes()
    assert not s3.exists("mix-bucket/mix/_mix_work") and not list(tmp_path.glob("mix-bucket*"))
