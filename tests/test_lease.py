"""The output lease (engine/durable/lease.py): one writer per output for every run, plain or
incremental. Waiting and refusing, taking over from a dead or expired holder and from an earlier
attempt of the same job, compare-and-swap renewal, renewal that survives transient store faults,
a lost lease that stops the run before it commits, and SIGTERM that releases it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from conftest import REPO
from pipeline_helpers import env_with_tests, start_holding_the_lease, write_jsonl_gz
from pydantic import BaseModel

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.durable.lease import Lease, LeaseHeld, LeaseLost
from tokenmill.engine.io.storage import Storage
from tokenmill.engine.run import run_pipeline
from tokenmill.engine.stage import Stage


def _lease(tmp_path, **kw) -> Lease:
    store = Storage(str(tmp_path))
    return Lease(store, store.path("_lease"), ttl_s=kw.pop("ttl_s", 30), say=kw.pop("say", lambda m: None), **kw)


def _write_record(tmp_path, generation: int, record: dict) -> None:
    folder = tmp_path / "_lease"
    folder.mkdir(exist_ok=True)
    (folder / f"g-{generation:012d}.json").write_text(json.dumps(record))


def test_a_held_lease_is_refused_after_the_wait_and_free_once_released(tmp_path):
    first = _lease(tmp_path).acquire()
    t0 = time.time()
    with pytest.raises(LeaseHeld, match="another run holds"):
        _lease(tmp_path).acquire(wait_s=0.3, poll_s=0.1)
    assert time.time() - t0 >= 0.3
    first.release()
    assert not _lease(tmp_path).holder()
    second = _lease(tmp_path).acquire()
    assert second.held() and second.generation == 3   # taken, released, taken
    second.release()
    assert len(list((tmp_path / "_lease").glob("g-*.json"))) <= 9   # old records are pruned


def test_a_waiting_run_takes_the_lease_when_the_holder_lets_go(tmp_path):
    first = _lease(tmp_path).acquire()
    threading.Timer(0.5, first.release).start()
    second = _lease(tmp_path).acquire(wait_s=30, poll_s=0.1)
    assert second.held()
    second.release()


def test_dead_expired_and_same_job_holders_are_taken_over_others_are_not(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"token": "old", "host": os.uname().nodename, "pid": int(dead.stdout), "since": time.time(),
              "expires": time.time() + 600, "holder": None}
    _write_record(tmp_path, 1, record)
    messages: list = []
    taker = _lease(tmp_path, say=messages.append).acquire()
    assert taker.held() and taker.generation == 2 and any("a run that is gone" in m for m in messages)
    taker.release()
    _write_record(tmp_path, 5, {**record, "token": "older", "host": "elsewhere", "expires": time.time() - 1})
    taker = _lease(tmp_path).acquire()
    assert taker.generation == 6
    taker.release()
    # a live holder on another host: refused, unless it is an earlier attempt of this very job
    _write_record(tmp_path, 9, {**record, "token": "pod-1", "host": "node-a", "pid": 7, "holder": "cron-en-2912"})
    with pytest.raises(LeaseHeld):
        _lease(tmp_path, holder="cron-en-2913").acquire(wait_s=0.2, poll_s=0.1)
    messages.clear()
    retry = _lease(tmp_path, holder="cron-en-2912", say=messages.append).acquire()
    assert retry.held() and any("an earlier attempt of cron-en-2912" in m for m in messages)
    retry.release()


def test_an_empty_record_is_taken_over_once_older_than_the_ttl(tmp_path):
    (tmp_path / "_lease").mkdir()
    empty = tmp_path / "_lease" / f"g-{3:012d}.json"
    empty.write_text("")
    with pytest.raises(LeaseHeld):
        _lease(tmp_path).acquire(wait_s=0.2, poll_s=0.1)   # young: its writer may still be writing
    os.utime(empty, (time.time() - 60, time.time() - 60))
    taker = _lease(tmp_path).acquire()
    assert taker.generation == 4
    taker.release()


def test_every_change_is_a_compare_and_swap(tmp_path):
    """Two runs that found the same free or stale generation: exactly one creates the next."""
    a, b = _lease(tmp_path), _lease(tmp_path)
    (tmp_path / "_lease").mkdir()
    assert a._create(1, a._record()) and not b._create(1, b._record())
    assert a._create(1, a._record())   # a create whose answer was lost finds its own token: still ours
    a.generation = 1
    assert a.held()
    # a renewal that finds the next generation taken loses the lease, and check() says so
    assert b._create(2, b._record())
    a._renew_once()
    assert not a.held() and "taken by another run" in a.lost
    with pytest.raises(LeaseLost):
        a.check()


def test_renewal_retries_a_failing_store_until_the_lease_would_expire(tmp_path, monkeypatch):
    """A store that fails the renewal (transiently or not) is tried again sooner; the lease is
    lost only once it would have expired without a renewal."""
    lease = _lease(tmp_path, ttl_s=30).acquire()
    real, calls = lease._create, []

    def failing(generation, record):
        calls.append(generation)
        raise TimeoutError("the store timed out")

    monkeypatch.setattr(lease, "_create", failing)
    wait = lease._renew_once()
    assert lease.lost is None and wait < 10 and calls
    lease._renewed_at = time.time() - 31          # no renewal for longer than the time to live
    lease._renew_once()
    assert lease.lost and "not renewed before it expired" in lease.lost
    monkeypatch.setattr(lease, "_create", real)
    with pytest.raises(LeaseLost):
        lease.check()


class SleepParams(BaseModel):
    seconds: float = 0.5


class Sleeper(Stage):
    """A slow stage: time for a test to act while a run is in its stream phase."""

    name = "sleeper"
    Params = SleepParams

    def __call__(self, batch):
        time.sleep(self.params.seconds)
        return batch


def _slow_config(tmp_path, seconds: float = 0.5, files: int = 6) -> dict:
    inputs = []
    for i in range(files):
        inputs.append(str(write_jsonl_gz(tmp_path / "in" / f"s{i}.jsonl.gz",
                                         [{"id": f"{i}-{j}", "text": f"document {i} {j} " * 20} for j in range(5)])))
    return {"name": "slow", "input": {"paths": inputs, "files_per_chunk": 1}, "output": {"path": str(tmp_path / "out")},
            "engine": "local", "local": {"num_cpus": 1},
            "stages": [{"type": "test_lease:Sleeper", "seconds": seconds}]}


def test_a_run_that_loses_its_lease_stops_without_committing(tmp_path):
    (tmp_path / "in").mkdir()
    pipe = build_pipeline(_slow_config(tmp_path))
    out = tmp_path / "out"

    def steal():
        lease = Lease(Storage(str(out)), str(out / "_lease"))
        deadline = time.time() + 60
        while not lease.holder() and time.time() < deadline:
            time.sleep(0.05)
        gen, _ = lease.latest()
        assert lease._create(gen + 1, lease._record())   # another run took the output

    thief = threading.Thread(target=steal)
    thief.start()
    with pytest.raises(LeaseLost, match="no longer holds"):
        run_pipeline(pipe, progress=False)
    thief.join()
    assert not (out / "_manifest.json").exists() and not (out / "data").exists()
    committed = list(out.glob("_work/*/p0-stream/chunk-*/_SUCCESS"))
    assert len(committed) <= 1   # at most the chunk being committed when the lease went


def test_sigterm_releases_the_lease_and_a_plain_rerun_finishes(tmp_path):
    (tmp_path / "in").mkdir()
    cfg = tmp_path / "slow.yaml"
    cfg.write_text(yaml.safe_dump(_slow_config(tmp_path, seconds=1.0)))
    out = tmp_path / "out"
    env = env_with_tests()
    cmd = [sys.executable, "-m", "tokenmill.engine.cli", "run", str(cfg), "--progress", "log"]
    proc = start_holding_the_lease(cmd, out, REPO, env)
    lease = Lease(Storage(str(out)), str(out / "_lease"))
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    said = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, said[-2000:]
    assert "lease is released" in said
    assert not lease.holder()                        # released: the next run need not wait for it to expire
    assert not (out / "_manifest.json").exists()
    done = subprocess.run(cmd + ["--lock-wait", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "_manifest.json").read_text())["complete"]
