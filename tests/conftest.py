"""Shared fixtures: paths to the repo and ../shared/data, one local Ray for in-process runs."""
from __future__ import annotations

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
