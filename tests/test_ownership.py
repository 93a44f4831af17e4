"""A run deletes only what its pipeline wrote (engine/durable/ownership.py): a plain run over a
cron output, a file the user put under OUT/data, another pipeline's output are refused with exit 2
and every file stays; --force replaces them. Two plain runs at once on one output: one commits,
the other exits 75 (or waits and finds the output complete). A re-run with another config leaves
no file of the old one, and an old manifest stays true until the new one replaces it."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import REPO
from pipeline_helpers import env_with_tests, output_rows, start_holding_the_lease, write_jsonl_gz

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline


def _inputs(tmp_path: Path, files: int = 3) -> list[str]:
    (tmp_path / "in").mkdir(exist_ok=True)
    return [str(write_jsonl_gz(tmp_path / "in" / f"s{i}.jsonl.gz",
                               [{"id": f"{i}-{j}", "text": f"A document number {j} of shard {i}, in plain words. " * 8}
                                for j in range(20)] + [{"id": f"{i}-short", "text": "x"}]))
            for i in range(files)]


def _config(inputs: list[str], out: Path, name: str = "own", **output) -> dict:
    return {"name": name, "input": {"paths": inputs, "files_per_chunk": 1}, "output": {"path": str(out), **output},
            "engine": "local", "local": {"num_cpus": 1},
            "stages": [{"type": "length_filter", "min_chars": 20}, {"type": "exact_dedup"}]}


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "_lease" not in p.parts}


def _cli(cfg: dict, tmp_path: Path, *extra: str, name: str = "cfg.yaml") -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "tokenmill.engine.cli", "run", str(path), "--progress", "off", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_a_plain_run_refuses_an_incremental_output_and_deletes_nothing(tmp_path):
    inputs, out = _inputs(tmp_path), tmp_path / "out"
    run_pipeline(build_pipeline(_config(inputs[:2], out, incremental=True)), progress=False)
    run_pipeline(build_pipeline(_config(inputs, out, incremental=True)), progress=False)
    before = _snapshot(out)
    done = _cli(_config(inputs, out), tmp_path)
    assert done.returncode == 2, done.stderr
    assert "holds the output of incremental runs" in done.stderr and "--force" in done.stderr
    assert _snapshot(out) == before   # every file of both cron runs is still there, byte for byte


def test_foreign_files_and_another_pipelines_output_are_refused_force_replaces(tmp_path):
    inputs, out = _inputs(tmp_path), tmp_path / "out"
    mine = out / "data" / "language=en" / "my-notes.parquet"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"PAR1 the user's own file")
    (out / "README.txt").write_text("not in an output folder: never looked at")
    done = _cli(_config(inputs, out), tmp_path)
    assert done.returncode == 2 and "1 file(s) tokenmill did not write" in done.stderr, done.stderr
    assert "data/language=en/my-notes.parquet" in done.stderr
    assert mine.read_bytes() == b"PAR1 the user's own file" and not (out / "_manifest.json").exists()
    forced = _cli(_config(inputs, out), tmp_path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert not mine.exists() and (out / "README.txt").exists()
    # a manifest of another pipeline: refused, and nothing of it removed
    before = _snapshot(out)
    other = _cli(_config(inputs, out, name="someone-else"), tmp_path)
    assert other.returncode == 2 and "another pipeline ('own'" in other.stderr, other.stderr
    assert _snapshot(out) == before


def test_a_rerun_with_another_config_replaces_only_its_own_files(tmp_path):
    """The second config's files have new names; the first's go only after the new manifest
    names them as superseded, and a file the user added meanwhile is refused, not deleted."""
    inputs, out = _inputs(tmp_path), tmp_path / "out"
    first = run_pipeline(build_pipeline(_config(inputs, out)), progress=False).manifest
    cfg = _config(inputs, out)
    cfg["stages"][0]["min_chars"] = 30
    second = run_pipeline(build_pipeline(cfg), progress=False).manifest
    old = {f["path"] for f in first["files"]}
    new = {f["path"] for f in second["files"]}
    assert not old & new and {f["path"] for f in second["superseded"]} == old
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.parquet")}
    assert on_disk == new
    assert output_rows(out)[0]   # the new manifest reads: every file it lists is there
    # a killed commit left superseded files behind: the next run (already complete) removes them
    for f in first["files"][:2]:
        (out / f["path"]).parent.mkdir(parents=True, exist_ok=True)
        (out / f["path"]).write_bytes(b"left by a killed commit")
    again = run_pipeline(build_pipeline(cfg), progress=False)
    assert again.skipped and {str(p.relative_to(out)) for p in out.rglob("*.parquet")} == new


def test_two_plain_runs_at_once_one_commits_the_other_waits_or_exits_75(tmp_path):
    inputs, out = _inputs(tmp_path, files=4), tmp_path / "out"
    clean = tmp_path / "clean"
    run_pipeline(build_pipeline(_config(inputs, clean)), progress=False)
    cfg = _config(inputs, out)
    # slow enough that the first run still holds the lease when the third has started (a second and a
    # third Python process start meanwhile: seconds on a loaded machine; at 0.5 s it once lost that race)
    cfg["stages"].insert(0, {"type": "test_lease:Sleeper", "seconds": 2.0})
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = env_with_tests()
    cmd = [sys.executable, "-m", "tokenmill.engine.cli", "run", str(path), "--progress", "off"]
    first = start_holding_the_lease(cmd, out, REPO, env)
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 75 and "another run holds" in second.stderr, second.stderr
    third = subprocess.Popen(cmd + ["--lock-wait", "300"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    assert first.wait(timeout=300) == 0, first.stdout.read()[-2000:]
    said = third.communicate(timeout=300)[0]
    assert third.returncode == 0 and "waiting up to 300 s" in said and "already complete" in said, said[-2000:]
    assert output_rows(out) == output_rows(clean)
    assert json.loads((out / "_manifest.json").read_text())["complete"]


def test_a_report_is_told_from_its_head(tmp_path):
    """report.json/html of tokenmill are known from their first 64 KiB; a user's file of that
    name, small or large, is foreign (read whole only when the head does not tell)."""
    from tokenmill.engine.durable.ownership import Owned, foreign_files
    from tokenmill.engine.io.storage import Storage

    store = Storage(str(tmp_path))
    (tmp_path / "report.json").write_text(json.dumps({"fingerprint": "abc", "stages": ["x" * 100] * 2000},
                                                     indent=2, sort_keys=True))
    (tmp_path / "report.html").write_text("<html><title>tokenmill report</title></html>")
    assert foreign_files(store, Owned()) == []
    (tmp_path / "report.json").write_text(json.dumps({"a_user_key": ["y" * 100] * 2000, "fingerprint": "late"}))
    assert foreign_files(store, Owned()) == []   # the head does not tell; the whole file does
    (tmp_path / "report.json").write_text(json.dumps({"mine": ["z" * 100] * 2000}))
    (tmp_path / "report.html").write_text("<html>my own page</html>")
    assert foreign_files(store, Owned()) == ["report.json", "report.html"]


def test_a_cron_run_does_not_list_the_files_earlier_runs_committed_and_touches_none(tmp_path, monkeypatch):
    """After its first run an incremental output is not listed (its runs replace no file but their
    own killed attempt's, which a commit plan names): a file put beside the runs' files stays."""
    from tokenmill.engine.io.storage import Storage

    inputs, out = _inputs(tmp_path), tmp_path / "out"
    run_pipeline(build_pipeline(_config(inputs[:1], out, incremental=True)), progress=False)
    theirs = sorted((out / "data").iterdir())[0] / "theirs.parquet"
    theirs.write_bytes(b"not ours")
    listed = []
    real = Storage.find_info

    def counting(self, folder):
        listed.append(folder.rsplit("/", 1)[-1])
        return real(self, folder)

    monkeypatch.setattr(Storage, "find_info", counting)
    result = run_pipeline(build_pipeline(_config(inputs[:2], out, incremental=True)), progress=False)
    assert result.report["incremental"]["run"] == 2
    assert "data" not in listed and "rejects" not in listed
    assert theirs.read_bytes() == b"not ours"
