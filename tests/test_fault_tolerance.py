"""Fault tolerance on a real Ray: a killed worker is retried by Ray Data, a killed driver is
resumed by the next run; both give exactly the output of a clean run."""
from __future__ import annotations

import json
import os
import subprocess

import psutil
import pytest
import yaml
from conftest import REPO, tokenmill_cmd
from pipeline_helpers import kill_run_after_first_chunk, make_pipeline, output_rows, run_while_killing, web_shards

from tokenmill.engine.run import run_pipeline

pytestmark = [pytest.mark.slow]

@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data):
    """Four shards of real web documents (~1,600 docs), so a run takes a while."""
    return web_shards(tmp_path_factory.mktemp("inputs"), shared_data)


@pytest.fixture(scope="module")
def clean_run(inputs, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("clean") / "out"
    pipe, _ = make_pipeline(inputs, out, batch_size=50)
    run_pipeline(pipe, progress=False)
    return output_rows(out)


def _stage_workers():
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        # a CPU pool runs as Ray Data tasks: the worker process is titled "ray::MapBatches(stage_task)"
        # while it runs one (an actor pool's would be "ray::MapWorker(MapBatches(StageActor))")
        if cmd.startswith("ray::") and ("stage_task" in cmd or "StageActor" in cmd):
            procs.append(p)
    return procs


def test_killed_worker_is_retried_and_output_matches_clean_run(inputs, clean_run, tmp_path, ray_local):
    out = tmp_path / "out"
    pipe, _ = make_pipeline(inputs, out, batch_size=50)
    # kill one stage worker once it has been working for a moment
    killed = run_while_killing(lambda: run_pipeline(pipe, progress=False), _stage_workers, settle=0.5)
    assert killed, "no stage worker process was found to kill"
    assert output_rows(out) == clean_run


def test_killed_driver_is_resumed_with_identical_output(inputs, clean_run, tmp_path):
    out = tmp_path / "out"
    _, data = make_pipeline(inputs, out, batch_size=50, files_per_chunk=1)
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(data))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    kill_run_after_first_chunk(tokenmill_cmd("run", str(cfg), "--no-progress", "--num-cpus", "2"), out, REPO, env)

    rerun = subprocess.run(tokenmill_cmd("run", str(cfg), "--no-progress", "--num-cpus", "2"), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "already done, skipped" in rerun.stderr
    assert output_rows(out) == clean_run
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["complete"]
