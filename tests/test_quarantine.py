"""A file whose tasks are killed again and again (a worker taken by the out-of-memory killer) is
quarantined after ``io.quarantine_after`` kills (engine/durable/attempts.py): listed in
file_errors with the reason, while every other file's documents come out, and the run goes on.
The kill is real: a stage SIGKILLs its own worker process when it meets the poison document."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from pipeline_helpers import output_rows, read_manifest_files, write_jsonl_gz
from pydantic import BaseModel

from tokenmill.engine.config import build_pipeline
from tokenmill.engine.run import run_pipeline
from tokenmill.engine.stage import Stage


class NoParams(BaseModel):
    pass


class KillsOnPoison(Stage):
    """Dies the way the out-of-memory killer ends a process: SIGKILL, no clean-up."""

    name = "kills_on_poison"
    Params = NoParams

    def __call__(self, batch):
        if any("POISON" in (t or "") for t in batch["text"].to_pylist()):
            os.kill(os.getpid(), signal.SIGKILL)
        return batch


def _inputs(folder: Path, poison: bool) -> list[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(4):
        rows = [{"id": f"{i}-{j}", "text": f"Ordinary document {j} of file {i}. " * 10} for j in range(15)]
        if poison and i == 2:
            rows[7]["text"] = "POISON " * 50
        paths.append(str(write_jsonl_gz(folder / f"f{i}.jsonl.gz", rows)))
    return paths


def _config(inputs: list[str], out: Path, stages: list[dict]) -> dict:
    return {"name": "q", "input": {"paths": inputs, "files_per_chunk": 2}, "output": {"path": str(out)},
            "engine": "local", "local": {"num_cpus": 2}, "io": {"quarantine_after": 2}, "stages": stages}


def test_a_file_that_kills_its_worker_is_quarantined_and_the_run_goes_on(tmp_path):
    inputs = _inputs(tmp_path / "in", poison=True)
    out = tmp_path / "out"
    report = run_pipeline(build_pipeline(_config(inputs, out, [{"type": "test_quarantine:KillsOnPoison"}])),
                          progress=False).report
    errors = report["file_errors"]
    assert [(e["path"].rsplit("/", 1)[-1], e["kind"]) for e in errors] == [("f2.jsonl.gz", "quarantined")]
    assert "2 tasks reading this file were killed" in errors[0]["error"]
    kept = {r[0] for r in output_rows(out)[0]}
    assert kept == {f"{i}-{j}" for i in (0, 1, 3) for j in range(15)}   # nothing of the other files lost
    assert not (out / "_work").exists()   # the marks went with the work folder


def test_kills_below_the_limit_are_retried_and_lose_nothing(tmp_path):
    """A worker killed once (then the stage lets the document through): the task runs again and
    the output equals a run without kills."""
    marker = tmp_path / "killed-once"
    inputs = _inputs(tmp_path / "in", poison=False)
    os.environ["TOKENMILL_TEST_KILL_ONCE"] = str(marker)
    try:
        run_pipeline(build_pipeline(_config(inputs, tmp_path / "out", [{"type": "test_quarantine:KillsOnce"}])),
                     progress=False)
    finally:
        del os.environ["TOKENMILL_TEST_KILL_ONCE"]
    assert marker.exists()
    clean = build_pipeline(_config(inputs, tmp_path / "clean", [{"type": "length_filter"}]))
    run_pipeline(clean, progress=False)
    kept = [sorted(read_manifest_files(tmp_path / o, "data/")["id"].to_pylist()) for o in ("out", "clean")]
    assert kept[0] == kept[1] and len(kept[0]) == 60


class KillsOnce(Stage):
    """Kills its worker the first time any worker of the run gets file 1's documents."""

    name = "kills_once"
    Params = NoParams

    def __call__(self, batch):
        marker = os.environ.get("TOKENMILL_TEST_KILL_ONCE")
        if marker and any("of file 1." in (t or "") for t in batch["text"].to_pylist()):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return batch
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

