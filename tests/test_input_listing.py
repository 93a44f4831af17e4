"""Input listing on real trees of files: ``**`` globs and folder walks never follow a symlink into a
loop, a symlinked folder outside the tree is walked once, a file reached by two paths is taken
once, FIFOs, sockets and devices are skipped without being opened (and reported, up to the
report's ``file_errors``), plain trees list exactly what ``glob`` lists, and object-store listings
(a real S3 API, moto's server) keep working."""
from __future__ import annotations

import glob
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from pipeline_helpers import make_pipeline, web_docs

from tokenmill.engine.io.readers import list_input_files

FIFO_PROBLEM = "a FIFO (named pipe), not a regular file: skipped, never opened"


@pytest.fixture
def docs(shared_data) -> list[dict]:
    return web_docs(shared_data)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def listed(patterns: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    files, problems = list_input_files(patterns)
    return [f.path for f in files], problems


@pytest.fixture
def tree(tmp_path, docs, monkeypatch) -> Path:
    """data/a.jsonl, data/sub/b.jsonl, outside/x/c.jsonl (cwd: tmp_path, so paths stay short)."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data" / "a.jsonl", docs[:3])
    write_jsonl(tmp_path / "data" / "sub" / "b.jsonl", docs[3:6])
    write_jsonl(tmp_path / "outside" / "x" / "c.jsonl", docs[6:9])
    return tmp_path


class FifoWatch:
    """Notices whether anything opens a FIFO for reading: a writer's non-blocking open succeeds
    only while a reader has it open (and then closes at once, so that reader sees an end of file
    instead of hanging)."""

    def __init__(self, path: Path):
        self.path, self.opened, self._stop = path, False, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._stop.is_set():
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
                self.opened = True
            except OSError:   # ENXIO: no reader
                pass
            time.sleep(0.02)

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join(5)
        return self.opened


# -- symlinks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["data/**/*.jsonl", "data/**", "data", "data/*", "**/*.jsonl"])
def test_symlink_loops_are_not_followed(tree, pattern):
    """A link to a folder that holds it (data/sub/up -> data, data/sub/self -> .) made ``glob`` list
    one file dozens of times; here each file comes once and each loop is reported."""
    os.symlink("..", tree / "data" / "sub" / "up")
    assert len(glob.glob("data/**/*.jsonl", recursive=True)) > 10   # the failure this guards against
    os.symlink(".", tree / "data" / "sub" / "self")   # (with two loops, glob's paths grow exponentially)
    paths, problems = listed([pattern])
    expected = ["data/a.jsonl", "data/sub/b.jsonl"] + (["outside/x/c.jsonl"] if pattern.startswith("**") else [])
    assert paths == expected
    loops = sorted(p for p, msg in problems if msg.startswith("symlink loop"))
    assert loops == ["data/sub/self", "data/sub/up"], problems
    assert all(msg.startswith("symlink loop") for _, msg in problems)


def test_a_loop_through_a_symlinked_folder_outside_is_cut(tree):
    """data/ext -> outside (followed once), outside/x/back -> data (back into the walk: a loop)."""
    os.symlink("../outside", tree / "data" / "ext")
    os.symlink("../../data", tree / "outside" / "x" / "back")
    paths, problems = listed(["data/**/*.jsonl"])
    assert paths == ["data/a.jsonl", "data/ext/x/c.jsonl", "data/sub/b.jsonl"]
    assert [p for p, _ in problems] == ["data/ext/x/back"]


def test_a_symlinked_folder_is_followed_once(tree):
    """Two links to one folder outside the tree, and a link to a folder inside it: each real folder
    is walked once; the real path wins over a link when both are in the tree."""
    os.symlink("../outside", tree / "data" / "ext")
    os.symlink("../outside", tree / "data" / "ext2")
    os.symlink("sub", tree / "data" / "0sub")   # sorts before the real folder
    for pattern in ("data", "data/**/*.jsonl"):
        paths, problems = listed([pattern])
        assert paths == ["data/a.jsonl", "data/ext/x/c.jsonl", "data/sub/b.jsonl"], pattern
        assert problems == []
    files, _ = list_input_files(["data"])
    assert [f.source for f in files] == ["a.jsonl", "ext/x/c.jsonl", "sub/b.jsonl"]


def test_a_file_reached_by_two_paths_is_taken_once(tree):
    os.symlink("a.jsonl", tree / "data" / "0-link.jsonl")   # sorts first; the real file is taken
    paths, problems = listed(["data"])
    assert paths == ["data/a.jsonl", "data/sub/b.jsonl"] and problems == []
    paths, _ = listed(["data/a.jsonl", "./data/a.jsonl", str(tree / "data" / "a.jsonl"), "data/0-link.jsonl"])
    assert paths == ["data/a.jsonl"]
    # a link alone (its target not listed, or hidden) is input like any file
    paths, _ = listed(["data/0-link.jsonl"])
    assert paths == ["data/0-link.jsonl"]
    os.rename(tree / "data" / "sub" / "b.jsonl", tree / "data" / "sub" / ".b.jsonl")
    os.symlink(".b.jsonl", tree / "data" / "sub" / "visible.jsonl")
    paths, _ = listed(["data/sub"])
    assert paths == ["data/sub/visible.jsonl"]


def test_plain_trees_list_what_glob_lists(tree, docs):
    """Without symlinks the walk gives glob's answer (hidden names, ``**`` at any depth, a folder
    that a pattern matches standing for its files)."""
    write_jsonl(tree / "data" / ".hidden" / "h.jsonl", docs[:1])
    write_jsonl(tree / "data" / "sub" / "deep" / "more" / "d.jsonl", docs[:1])
    write_jsonl(tree / "data" / "sub.jsonl" / "in_dir.jsonl", docs[:1])
    (tree / "data" / "notes.txt").write_text("not input")
    for pattern in ("data/**/*.jsonl", "data/**", "data/**/deep/**", "data/*/*.jsonl", "data/**/d.json[l]",
                    "data/s*/**/*.jsonl", "data/**/.hidden/*"):
        reference = []
        for m in sorted(glob.glob(pattern, recursive=True)):
            reference += sorted(os.path.join(r, f) for r, _, fs in os.walk(m) for f in fs) if os.path.isdir(m) else [m]
        reference = list(dict.fromkeys(p for p in reference if not os.path.basename(p).startswith((".", "_"))
                                       and p.endswith(".jsonl")))
        paths, _ = listed([pattern])
        assert sorted(paths) == sorted(reference), pattern


# -- FIFOs, sockets, devices -----------------------------------------------------------------------


def test_fifo_socket_and_device_are_skipped_never_opened(tree):
    fifo = tree / "data" / "pipe.jsonl"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tree / "data" / "sub" / "sock.jsonl"))
    watch = FifoWatch(fifo)
    try:
        paths, problems = listed(["data", "data/pipe.jsonl", "/dev/null"])
        paths2, problems2 = listed(["data/**/*.jsonl"])
    finally:
        opened = watch.stop()
        sock.close()
    assert not opened, "the FIFO was opened"
    assert paths == paths2 == ["data/a.jsonl", "data/sub/b.jsonl"]
    assert problems == [("data/pipe.jsonl", FIFO_PROBLEM),
                        ("data/sub/sock.jsonl", "a socket, not a regular file: skipped, never opened"),
                        ("/dev/null", "a character device, not a regular file: skipped, never opened")]
    assert problems2 == problems[:2]


def test_a_fifo_among_the_inputs_is_in_the_reports_file_errors(tree, docs):
    """The run does not hang on a FIFO (today's bug): it lists it under file_errors and reads the rest."""
    fifo = tree / "data" / "pipe.jsonl"
    os.mkfifo(fifo)
    watch = FifoWatch(fifo)
    try:
        pipe, _ = make_pipeline([str(tree / "data")], tree / "out")
        from tokenmill.engine.run import run_pipeline

        report = run_pipeline(pipe, progress=False, engine="local", num_cpus=1).report
    finally:
        opened = watch.stop()
    assert not opened, "the FIFO was opened"
    assert report["file_errors"] == [{"path": str(fifo), "kind": "input", "error": FIFO_PROBLEM}]
    assert report["input"]["docs"] == 6
