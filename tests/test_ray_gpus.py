"""A stage that asks for GPUs, run on a machine without any: on the Ray that ``tokenmill run``
starts itself it runs on CPU (as the local executor runs it) and says so once, instead of waiting
forever for a GPU no node has; the output equals the local executor's."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import REPO, tokenmill_cmd
from pipeline_helpers import read_manifest_files

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline

pytestmark = pytest.mark.slow   # a child tokenmill run on its own embedded Ray


def _config(tmp_path, shared_data, out) -> dict:
    src = tmp_path / "in.jsonl"
    with open(shared_data / "web_dev.jsonl", encoding="utf-8") as fh:
        src.write_text("".join(fh.readline() for _ in range(20)), encoding="utf-8")
    return {"name": "gpus", "input": {"paths": [str(src)]}, "output": {"path": str(out)},
            "stages": [{"type": "langid", "resources": {"num_gpus": 1}}, {"type": "exact_dedup"}]}


def test_a_gpu_stage_on_a_machine_without_gpus_runs_on_cpu_and_says_so(tmp_path, shared_data):
    cfg = tmp_path / "gpus.yaml"
    cfg.write_text(json.dumps(_config(tmp_path, shared_data, tmp_path / "ray")))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES")}
    env["CUDA_VISIBLE_DEVICES"] = ""   # no GPU for this Ray, whatever the machine has
    proc = subprocess.run(tokenmill_cmd("run", str(cfg), "--engine", "ray", "--progress", "off"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "GPU per worker asked" in line]
    assert len(said) == 1 and said[0].startswith("langid: 1 GPU per worker asked, this machine's Ray has 0: "
                                                 "running on CPU"), said
    run_pipeline(build_pipeline(_config(tmp_path, shared_data, tmp_path / "local")), progress=False, engine="local")
    ray_rows, local_rows = (read_manifest_files(tmp_path / e, "data/").sort_by("id").to_pylist() for e in ("ray", "local"))
    assert ray_rows == local_rows and len(ray_rows) >= 15
