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
    (more epochs than the DCLM defaults: 600 documents; a small bucket table: a small file)."""
    from tokenmill.stages.quality.train import TrainArgs, train

    folder = tmp_path_factory.mktemp("quality")
    rows = [json.loads(line) for line in (shared_data / "quality_dev.jsonl").read_text().splitlines()]
    for label, name in (("high", "positive.jsonl"), ("low", "negative.jsonl")):
        (folder / name).write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows if r["label"] == label))
    train(TrainArgs(positive=[str(folder / "positive.jsonl")], negative=[str(folder / "negative.jsonl")],
                    out=str(folder / "model"), holdout=0.2, fasttext={"epoch": 25, "lr": 0.5, "bucket": 100_000}))
    return folder / "model"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, shared_data) -> Path:
    """A tiny causal LM (random weights, a tokenizer trained on the fly) for the rephrase tests."""
    from tiny_llm import make_tiny_llm

    return make_tiny_llm(tmp_path_factory.mktemp("tiny-llm") / "model", shared_data / "web_dev.jsonl")
