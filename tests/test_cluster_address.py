"""`tokenmill run CONFIG --address ...` runs the same pipeline on an existing multi-node Ray
cluster (ray.cluster_utils.Cluster: a head and a worker node) instead of an embedded Ray."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from conftest import REPO, tokenmill_cmd
from pipeline_helpers import make_pipeline, output_rows, web_docs, write_jsonl_gz

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

def test_run_on_existing_multinode_cluster(tmp_path, shared_data):
    from ray.cluster_utils import Cluster

    src = write_jsonl_gz(tmp_path / "docs.jsonl.gz", web_docs(shared_data)[:80])
    out = tmp_path / "out"
    _, data = make_pipeline([src], out)
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(data))

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    try:
        cluster.wait_for_nodes()
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        proc = subprocess.run(tokenmill_cmd("run", str(cfg), "--address", cluster.address, "--no-progress"),
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # the driver connected to the cluster (both nodes) and left it running
        assert "already" not in proc.stderr
        probe = subprocess.run([tokenmill_cmd()[0], "-c", f"import ray; ray.init(address={cluster.address!r}, logging_level='ERROR'); "
                                "print(sum(n['Alive'] for n in ray.nodes()))"],
                               env=env, capture_output=True, text=True, timeout=120)
        assert probe.stdout.strip().splitlines()[-1] == "2", probe.stderr[-2000:]
    finally:
        cluster.shutdown()
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][0]["docs_in"] == 80
    kept, rejected = output_rows(out)
    assert len(kept) + len(rejected) == 80 and len(kept) > 40
    assert "tokenmill: test finished" in proc.stdout
