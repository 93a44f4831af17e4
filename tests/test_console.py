"""The console: tokenmill's own lines in a log (no Ray chatter; for the quickstart, progress lines
at most one per interval and 30 other lines),
a live display in a terminal, Ray's logs back with --verbose; the progress line's cadence and fields."""
from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
from conftest import tokenmill_cmd

from tokenmill.engine.report.console import Console, PhaseProgress

RAY_NOISE = re.compile(r"logging_progress|Running Dataset|streaming_executor|\(raylet\)|Token authentication|"
                       r"Skipping zero-size|worker processes have been started|INFO |WARNING ")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENMILL_PROGRESS_INTERVAL", "RAY_ADDRESS")}
    env.update(extra)
    return env


def _small_config(tmp_path: Path, shared_data: Path, docs: int = 30) -> Path:
    """A small run with two stream phases around a global step (the second reads committed parts,
    whose folders hold _SUCCESS markers that must never reach Ray as input)."""
    src = tmp_path / "in.jsonl"
    with open(shared_data / "web_dev.jsonl", encoding="utf-8") as fh:
        src.write_text("".join(fh.readline() for _ in range(docs)), encoding="utf-8")
    cfg = tmp_path / "small.yaml"
    cfg.write_text(json.dumps({"name": "small", "input": {"paths": [str(src)]}, "output": {"path": str(tmp_path / "out")},
                               "stages": [{"type": "langid"}, {"type": "exact_dedup"}, {"type": "heuristics"}],
                               "ray": {"num_cpus": 2}}))
    return cfg


def test_quickstart_log_output_is_short_and_tokenmills_own(quickstart_run):
    proc, out = quickstart_run
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout
    assert not [item for item in lines if RAY_NOISE.search(item)], proc.stdout
    # short: progress lines at most one per 2 s (--progress-interval) of each step, which the load
    # of the machine sets; the rest does not grow with the run's length
    ticks = re.compile(r"\[tokenmill\] (stream \d+|generate \d+|global \w+|write): (\d+:)?\d\d:\d\d")
    seconds = float(re.search(r"finished in ([\d.]+)s", proc.stdout).group(1))
    assert len([item for item in lines if ticks.match(item)]) <= seconds / 2 + 4, proc.stdout
    assert len([item for item in lines if not ticks.match(item)]) <= 30, proc.stdout
    # tokenmill's progress lines: phase, files, docs and tokens per second, rejects
    progress = [item for item in lines if item.startswith("[tokenmill] stream 0: ")]
    assert progress and re.search(r"files \d+/5, .* docs \(.*/s\), .* tokens \(.*/s\), \d+ rejected", progress[-1])
    # the same final summary, and where the engine's logs went (they exist there)
    assert "tokenmill: quickstart finished" in proc.stdout and f"report: {out}/report.html" in proc.stdout
    logs = next(item for item in lines if item.startswith("engine logs: ")).split(": ", 1)[1]
    assert Path(logs).is_dir() and any(Path(logs).iterdir())
    assert (out / "report.json").exists()


@pytest.mark.slow   # a tokenmill run child process on Ray
def test_verbose_brings_ray_logs_back(tmp_path, shared_data):
    cfg = _small_config(tmp_path, shared_data)
    proc = subprocess.run(tokenmill_cmd("run", str(cfg), "--verbose"), cwd=tmp_path, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    assert re.search(r"Running Dataset|execution finished", proc.stdout), proc.stdout
    assert "tokenmill: small finished" in proc.stdout


def _run_in_terminal(cmd: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run ``cmd`` with a pseudo-terminal as its stdout and stderr; return (exit code, everything written)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a 160x40 terminal
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks, deadline = [], time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow   # a tokenmill run child process on Ray
def test_terminal_gets_one_live_line(tmp_path, shared_data):
    cfg = _small_config(tmp_path, shared_data, docs=200)
    rc, screen = _run_in_terminal(tokenmill_cmd("run", str(cfg)), tmp_path)
    assert rc == 0, screen
    assert not RAY_NOISE.search(screen), screen
    # the live line is redrawn in place (carriage returns), shows the phase and a bar by input bytes
    redraws = [s for s in screen.split("\r") if s.startswith("stream 0")]
    assert redraws and any("%|" in s for s in redraws), screen
    assert "tokenmill: small finished" in screen


def test_log_mode_prints_at_most_one_line_per_interval():
    counters = {"files": 0, "bytes": 0, "docs": 0, "tokens": 0, "rejected": 0}
    stream = io.StringIO()
    console = Console("log", interval=10, stream=stream)
    console.poll = lambda: dict(counters)
    console.start_phase("stream 0", files_total=4, bytes_total=4000)
    t0 = console.phase.started
    for second in range(1, 31):  # 30 s of work, sampled every second
        counters.update(files=second // 8, bytes=second * 100, docs=second * 50, tokens=second * 5000, rejected=second)
        console.refresh(now=t0 + second)
    console._stop.set()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines            # at 10, 20 and 30 s
    assert lines[0] == ("[tokenmill] stream 0: 00:10, files 1/4, 500 docs (50/s), 50.0k tokens (5.0k/s), "
                        "10 rejected, 25% of input, ETA 00:30")
    counters.update(files=4, docs=2000)
    console.end_phase()   # a phase that printed lines ends with its totals
    assert stream.getvalue().splitlines()[-1].startswith("[tokenmill] stream 0: ")
    assert "files 4/4, 2.0k docs" in stream.getvalue().splitlines()[-1]
    assert len(stream.getvalue().splitlines()) == 4


def test_phase_counts_only_its_own_work():
    p = PhaseProgress("write", base={"files": 5, "bytes": 900, "docs": 100, "tokens": 10, "rejected": 7})
    p.update({"files": 5, "bytes": 900, "docs": 160, "tokens": 30, "rejected": 9})
    assert p.done == {"files": 0, "bytes": 0, "docs": 60, "tokens": 20, "rejected": 2}
    assert p.eta() is None  # no input bytes to measure by
    assert p.line(now=p.started + 2).startswith("write: 00:02, 60 docs (30/s), 20 tokens (10/s), 2 rejected")


def test_a_failing_poll_never_ends_a_run():
    stream = io.StringIO()
    console = Console("log", interval=0.1, stream=stream)

    def broken():
        raise ConnectionError("the metrics actor went away")

    console.poll = broken
    console.start_phase("stream 0", files_total=1)
    console.refresh(now=console.phase.started + 1)
    console.close()
    assert "[tokenmill] stream 0: 00:01" in stream.getvalue()
