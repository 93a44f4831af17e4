"""Shared fixtures: paths to the repo and ../shared/data, one local Ray for in-process runs."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
QUICKSTART = REPO / "configs" / "quickstart.yaml"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the in-process pipeline tests (the executor reuses it)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"../shared/data not found at {SHARED_DATA}")
    return SHARED_DATA


def tokenmill_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokenmill.engine.cli", *args]


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """The main job, once per session, as a user runs it: ``tokenmill run configs/quickstart.yaml``
    in a child process on an embedded Ray, progress lines every 2 s. (completed process, output)."""
    import subprocess

    out = tmp_path_factory.mktemp("quickstart") / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENMILL_PROGRESS_INTERVAL", "RAY_ADDRESS")}
    proc = subprocess.run(tokenmill_cmd("run", str(QUICKSTART), "--output", str(out), "--progress-interval", "2"),
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    return proc, out


@pytest.fixture
def sort_shuffle(ray_local):
    """The shuffle the executor picks for small runs (the hash shuffle starts actors per step)."""
    from ray.data.context import ShuffleStrategy

    ctx = ray_local.data.DataContext.get_current()
    before = ctx.shuffle_strategy
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    yield
    ctx.shuffle_strategy = before


@pytest.fixture(scope="session")
def quality_model(tmp_path_factory, shared_data) -> Path:
    """A fastText quality model trained on quality_dev (high vs low), as ``train-quality`` writes it
    (fixed settings, as before the search: more epochs than fastText's defaults; a small bucket
    table: a small file)."""
    from tokenmill.stages.quality.train import TrainArgs, train

    folder = tmp_path_factory.mktemp("quality")
    rows = [json.loads(line) for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()]
    for label, name in (("high", "positive.jsonl"), ("low", "negative.jsonl")):
        (folder / name).write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows if r["label"] == label))
    train(TrainArgs(positive=[str(folder / "positive.jsonl")], negative=[str(folder / "negative.jsonl")],
                    out=str(folder / "model"), holdout=0.2, fasttext={"epoch": 25, "lr": 0.5, "bucket": 100_000},
                    search=False, balance=False))
    return folder / "model"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, shared_data) -> Path:
    """A tiny causal LM (random weights, a tokenizer trained on the fly) for the rephrase tests."""
    from tiny_llm import make_tiny_llm

    return make_tiny_llm(tmp_path_factory.mktemp("tiny-llm") / "model", shared_data / "web_dev.jsonl")


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.slow)])
def engine(request) -> str:
    """The executor a pipeline test runs on: ``local`` (one process, no Ray: the fast lane) and
    ``ray`` (marked slow; the full suite runs both, and the two must agree)."""
    if request.param == "ray":
        request.getfixturevalue("ray_local")
    return request.param


class DatasetOpsMaker:
    """``DatasetOps`` of one executor and datasets of it from Arrow tables, for tests of the global
    algorithms written over those operations."""

    def __init__(self, kind: str, pool=None):
        self.kind, self.pool = kind, pool

    def ops(self, parts: int):
        if self.kind == "ray":
            from tokenmill.engine.executors.ray.ops import RayDatasetOps

            return RayDatasetOps(parts)
        from tokenmill.engine.executors.local.ops import LocalDatasetOps

        return LocalDatasetOps(parts, self.pool)

    def dataset(self, table, blocks: int = 1):
        if self.kind == "ray":
            import ray

            return ray.data.from_arrow(table).repartition(blocks)
        step = -(-table.num_rows // max(1, blocks)) or 1
        return [table.slice(i, step) for i in range(0, max(1, table.num_rows), step)]


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.slow)])
def datasets(request):
    """Dataset operations on the local executor (fast lane) and on Ray Data (slow)."""
    if request.param == "ray":
        request.getfixturevalue("ray_local")
        yield DatasetOpsMaker("ray")
        return
    yield request.getfixturevalue("local_datasets")


@pytest.fixture
def local_datasets():
    """The local executor's dataset operations alone (for the cases whose Ray twin adds only time)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        yield DatasetOpsMaker("local", pool)
