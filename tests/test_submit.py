"""`tokenmill submit` and `tokenmill jobs` against a real Ray head (`ray start --head` with the
dashboard's job server on a loopback port), started once for this module and private to it:
its temp folder is its own, so a plain `ray.init()` elsewhere (the other tests) never joins it.
Those are the slow lane's (``on_a_head``); what needs no Ray (where the job server is, which
``--env`` values may go over plain http, checked against a plain HTTP server that records every
request) is the fast lane's."""
from __future__ import annotations

import http.server
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import requests
import yaml
from conftest import REPO, tokenmill_cmd

SAMPLE = REPO / "configs" / "sample"
SAMPLE_INPUTS = [SAMPLE / "web.jsonl.gz", SAMPLE / "recrawl.jsonl"]   # 117 + 30 documents
ADDRESS_VARS = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")


def on_a_head(test):
    """A test that needs the module's Ray head (or starts a Ray of its own): slow, cluster."""
    return pytest.mark.slow(pytest.mark.cluster(test))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    """This process's environment without any Ray address; the venv's python first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ADDRESS_VARS}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    return env


class Head:
    def __init__(self, proc: subprocess.Popen, url: str, gcs: str, temp_dir: Path):
        self.proc, self.url, self.gcs, self.temp_dir = proc, url, gcs, temp_dir

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.url)

    def session_resources(self) -> Path:
        return (self.temp_dir / "session_latest").resolve() / "runtime_resources"


def _wait_for_job_server(proc, url: str, log: Path, ready: Path, timeout: float = 180) -> None:
    """Until the job server answers and `ray start` has written its address pointer (``ready``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/api/jobs/", timeout=2).status_code == 200 and ready.exists():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"the job server at {url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def _stop_head(proc: subprocess.Popen) -> None:
    """SIGTERM to `ray start` (it drains and stops what it started, a few seconds), then SIGKILL to
    whatever it started that is left (never `ray stop`: that would stop every Ray of this user)."""
    try:
        family = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    proc.terminate()
    _, alive = psutil.wait_procs(family, timeout=30)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def head():
    from ray._common.utils import get_ray_address_file

    temp_dir = Path(tempfile.mkdtemp(prefix="tmh", dir="/tmp"))   # short: Unix socket paths are limited
    gcs_port, dash_port = _free_port(), _free_port()
    ports = {f"--{name}-port": _free_port() for name in
             ("ray-client-server", "dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent", "metrics-export")}
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", "--include-dashboard=true", "--num-cpus=2",
           "--object-store-memory=500000000", f"--temp-dir={temp_dir}", "--disable-usage-stats",
           *[f"{k}={v}" for k, v in ports.items()]]
    log = temp_dir / "ray-start.log"
    with open(log, "w") as fh:
        # no drain on SIGTERM: Ray Data's detached actors would hold it for its whole 30 s
        env = {**_env(), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{dash_port}"
    try:
        _wait_for_job_server(proc, url, log, temp_dir / "ray_current_cluster")
        gcs = (temp_dir / "ray_current_cluster").read_text().strip()
        # the head's address pointer is in its own temp folder, not the default one ray.init() reads
        default_pointer = Path(get_ray_address_file(None))
        assert not (default_pointer.exists() and default_pointer.read_text().strip() == gcs)
        yield Head(proc, url, gcs, temp_dir)
    finally:
        _stop_head(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def tm(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(tokenmill_cmd(*args), cwd=cwd or REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _config(folder: Path, inputs: list, output: str, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"name": "submitted", "input": {"paths": [str(p) for p in inputs]}, "output": {"path": output},
            "stages": [{"type": "langid"}, {"type": "heuristics", "rules": ["gopher_repetition", "c4"]},
                       {"type": "exact_dedup"}], **extra}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _job_id(proc) -> str:
    job_id = proc.stdout.splitlines()[0]
    assert re.fullmatch(r"tokenmill-[\w.-]+-\d{8}-\d{6}-[0-9a-f]{4}", job_id), proc.stdout[:500]
    return job_id


def _unpacked(head: Head, kind: str, uri: str) -> Path:
    """Where the head unpacked a runtime-env package (gcs://_ray_pkg_<hash>.zip)."""
    name = uri.rsplit("/", 1)[-1].removesuffix(".zip")
    return head.session_resources() / f"{kind}_files" / name


@on_a_head
def test_submit_wait_runs_the_pipeline_on_the_cluster(head, tmp_path):
    # relative paths in the YAML resolve against its folder here, not against the job's folder there
    cfg = _config(tmp_path / "cfg", SAMPLE_INPUTS, "../out", languages={"dir": str(REPO / "configs" / "languages")})
    proc = tm("submit", str(cfg), "--address", head.url, "--wait", "--progress-interval", "1",
              "--env", "TOKENMILL_MARK=42", "--insecure", cwd=tmp_path)   # plain http on loopback
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_id = _job_id(proc)
    # the job's own log streamed here: tokenmill's progress lines and summary, then the status
    assert "[tokenmill] run submitted on ray" in proc.stdout
    assert re.search(r"\[tokenmill\] stream 0: \d\d:\d\d", proc.stdout)   # a log-mode progress line
    assert "tokenmill: submitted finished in" in proc.stdout
    assert f"job {job_id}: SUCCEEDED" in proc.stderr and "Traceback" not in proc.stderr

    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    assert stages["read"]["docs_in"] == 147
    assert stages["exact_dedup"]["docs_rejected"] >= 10       # recrawl.jsonl repeats web pages
    parts = sorted((out / "data").glob("language=*/part-*.parquet"))
    assert {"language=de", "language=en"} <= {p.parent.name for p in parts}
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    assert rows == report["output"]["docs"] == stages["exact_dedup"]["docs_out"] > 50

    # what travelled: the code as py_modules, a working folder with the config and language files only,
    # the asked-for variable and nothing else of this environment
    info = head.client().get_job_info(job_id)
    env = info.runtime_env
    assert env["env_vars"] == {"PYTHONUNBUFFERED": "1", "TOKENMILL_MARK": "42"}
    assert len(env["py_modules"]) == 1 and info.metadata["tokenmill_output"] == str(out)
    work = _unpacked(head, "working_dir", env["working_dir"])
    shipped = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    assert shipped[-1] == "pipeline.yaml" and all(re.fullmatch(r"languages/\w+\.yaml", p) for p in shipped[:-1])
    assert len(shipped) > 10
    sent = yaml.safe_load((work / "pipeline.yaml").read_text())
    assert sent["output"]["path"] == str(out) and sent["languages"]["dir"] == "languages"
    code = _unpacked(head, "py_modules", env["py_modules"][0]) / "tokenmill"
    assert sorted(p.name for p in code.iterdir()) == ["cluster", "engine", "languages", "stages"]
    files = [p for p in code.rglob("*") if p.is_file()]
    assert not [p for p in files if "__pycache__" in p.parts or p.suffix in (".pyc", ".parquet", ".gz", ".jsonl")]

    status = tm("jobs", "status", job_id, "--address", head.url)
    assert status.returncode == 0 and status.stdout.startswith(f"{job_id}: SUCCEEDED")
    logs = tm("jobs", "logs", job_id, "--address", head.url)
    assert logs.returncode == 0 and "tokenmill: submitted finished in" in logs.stdout
    listed = tm("jobs", "list", "--address", head.url)
    assert re.search(rf"^{job_id}\s+SUCCEEDED\s.*\ssubmitted\s+{re.escape(str(out))}$", listed.stdout, re.M)


@on_a_head
def test_the_job_imports_the_shipped_code(head, tmp_path):
    """tokenmill is a namespace package: the shipped copy must win over the cluster's own install."""
    from tokenmill.cluster.job_package import runtime_env, stage_code

    (tmp_path / "work").mkdir()
    code = stage_code(tmp_path / "code")
    probe = ("import tokenmill.engine.cli, tokenmill.stages.langid, tokenmill.cluster.submit, tokenmill.languages as l; "
             "print(tokenmill.engine.cli.__file__); print(tokenmill.stages.langid.__file__); "
             "print(tokenmill.cluster.submit.__file__); print(l.shipped_dir() / 'en.yaml')")
    client = head.client()
    job_id = client.submit_job(entrypoint=f'python -c "{probe}"', runtime_env=runtime_env(tmp_path / "work", code, {}))
    deadline = time.monotonic() + 120
    while str(client.get_job_status(job_id)) not in ("SUCCEEDED", "FAILED", "STOPPED") and time.monotonic() < deadline:
        time.sleep(0.5)
    logs = client.get_job_logs(job_id)
    assert str(client.get_job_status(job_id)) == "SUCCEEDED", logs[-3000:]
    paths = [line for line in logs.splitlines() if line.startswith("/")]
    assert len(paths) == 4, logs[-3000:]
    shipped_root = str(head.session_resources() / "py_modules_files")
    assert all(p.startswith(shipped_root) for p in paths), paths
    assert all(Path(p).is_file() for p in paths)
    assert str(REPO) not in logs


@on_a_head
def test_a_job_that_fails_on_the_cluster(head, tmp_path):
    # valid here (inputs are the cluster's to read), but nothing matches on the head: tokenmill run exits 2 there
    missing = tmp_path / "nowhere" / "*.jsonl.gz"
    cfg = _config(tmp_path, [missing], str(tmp_path / "out"))
    proc = tm("submit", str(cfg), "--address", head.url, "--wait", "--no-ship-code")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_id = _job_id(proc)
    assert "invalid config" in proc.stdout and "matches no file" in proc.stdout   # the run's own message, streamed
    assert proc.stderr.splitlines()[-1] == f"tokenmill: job {job_id}: FAILED (Job entrypoint command failed with " \
                                           "exit code 2)", proc.stderr[-2000:]
    status = tm("jobs", "status", job_id, "--address", head.url)
    assert status.returncode == 1 and status.stdout.startswith(f"{job_id}: FAILED")
    assert "py_modules" not in head.client().get_job_info(job_id).runtime_env   # --no-ship-code
    assert not (tmp_path / "out").exists()


def _lines(stream, q: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        q.put(line)
    q.put(None)


@on_a_head
def test_ctrl_c_leaves_the_job_running_and_jobs_stop_stops_it(head, tmp_path):
    # a stage of the user's own, shipped with --py-module, that sleeps: a job that runs until stopped
    pkg = tmp_path / "slowstage"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import time\nfrom pydantic import BaseModel\nfrom tokenmill.engine.stage import Stage\n\n\n"
        "class NoParams(BaseModel):\n    pass\n\n\n"
        "class Sleeps(Stage):\n    name = 'sleeps'\n    Params = NoParams\n\n"
        "    def __call__(self, batch):\n        time.sleep(3600)\n        return batch\n")
    cfg = _config(tmp_path / "cfg", SAMPLE_INPUTS, str(tmp_path / "out"), stages=[{"type": "slowstage:Sleeps"}])
    proc = subprocess.Popen(tokenmill_cmd("submit", str(cfg), "--address", head.url, "--wait", "--py-module", str(pkg)),
                            cwd=REPO, env={**_env(), "PYTHONPATH": str(tmp_path)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    q: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, q), daemon=True).start()
    seen, deadline = [], time.monotonic() + 120
    while not any("[tokenmill] stream: phase 0" in line for line in seen) and time.monotonic() < deadline:
        try:
            line = q.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
    assert any("[tokenmill] stream: phase 0" in line for line in seen), "".join(seen) + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    err = proc.stderr.read()
    job_id = seen[0].strip()
    assert f"job {job_id} keeps running" in err and f"tokenmill jobs stop {job_id}" in err and "Traceback" not in err

    running = tm("jobs", "status", job_id, "--address", head.url)
    assert running.returncode == 0 and running.stdout.startswith(f"{job_id}: RUNNING"), running.stdout + running.stderr
    stop = tm("jobs", "stop", job_id, "--address", head.url)
    assert stop.returncode == 0 and stop.stdout.startswith(f"{job_id}: STOPPED"), stop.stdout + stop.stderr
    after = tm("jobs", "status", job_id, "--address", head.url)
    assert after.returncode == 1 and after.stdout.startswith(f"{job_id}: STOPPED")


@on_a_head
def test_bad_config_or_env_sends_nothing(head, tmp_path):
    before = len(head.client().list_jobs())
    cfg = _config(tmp_path, SAMPLE_INPUTS, str(tmp_path / "out"), stages=[{"type": "no_such_stage"}])
    proc = tm("submit", str(cfg), "--address", head.url, "--wait")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "invalid config" in proc.stderr and "stages[0].type: unknown stage type 'no_such_stage'" in proc.stderr
    good = _config(tmp_path / "good", SAMPLE_INPUTS, str(tmp_path / "out"))
    env = tm("submit", str(good), "--address", head.url, "--env", "TOKENMILL_SURELY_UNSET_VAR")
    assert env.returncode == 2 and "--env TOKENMILL_SURELY_UNSET_VAR: not set here" in env.stderr
    assert len(head.client().list_jobs()) == before


@on_a_head
def test_unreachable_job_server_and_unknown_job(head, tmp_path):
    cfg = _config(tmp_path, SAMPLE_INPUTS, str(tmp_path / "out"))
    nobody = f"http://127.0.0.1:{_free_port()}"
    for args in (("submit", str(cfg), "--address", nobody, "--wait"), ("jobs", "status", "x", "--address", nobody),
                 ("jobs", "list", "--address", nobody)):
        proc = tm(*args)
        assert proc.returncode == 2, args
        assert proc.stderr.strip() == f"tokenmill: cannot reach a Ray job server at {nobody} (ConnectionError); " \
                                      "is the head up, with its dashboard (ray[default])?"
    for command in ("logs", "stop"):
        unknown = tm("jobs", command, "tokenmill-no-such-job", "--address", head.url)
        assert unknown.returncode == 2 and unknown.stderr.strip() == "tokenmill: job tokenmill-no-such-job: no such job"
    wrong = tm("jobs", "list", "--address", "ray://127.0.0.1:10001")
    assert wrong.returncode == 2 and "expected the job server's URL, http(s)://HEAD:8265" in wrong.stderr


@on_a_head
def test_a_plain_ray_init_elsewhere_does_not_join_the_head(head):
    probe = "import ray; ray.init(include_dashboard=False, logging_level='ERROR'); print(ray.get_runtime_context().gcs_address)"
    proc = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] != head.gcs


def test_job_server_address_resolution():
    from tokenmill.cluster.ray_jobs import JobServerError, job_server_url

    assert job_server_url(None, {}) == "http://127.0.0.1:8265"
    assert job_server_url("head:8265", {"RAY_ADDRESS": "http://other:8265"}) == "http://head:8265"
    assert job_server_url(None, {"RAY_ADDRESS": "https://ray.example.org/"}) == "https://ray.example.org"
    assert job_server_url(None, {"RAY_ADDRESS": "10.0.0.1:6379"}) == "http://127.0.0.1:8265"   # a GCS address
    assert job_server_url(None, {"RAY_API_SERVER_ADDRESS": "http://api:8265", "RAY_ADDRESS": "http://x:1"}) \
        == "http://api:8265"
    with pytest.raises(JobServerError):
        job_server_url("ray://head:10001", {})


# --- --env over plain http (no Ray: a plain HTTP server that records what reaches it) ---

class _Recorder(http.server.BaseHTTPRequestHandler):
    """Notes every request (method, path, body) and answers 404: no Ray job server."""

    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, body))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def recording_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_env_values_go_over_plain_http_only_with_insecure(recording_server, tmp_path, capsys, monkeypatch):
    from tokenmill.engine.cli import main

    for var in ADDRESS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOKENMILL_TEST_SECRET", "s3cr3t-value")
    cfg = _config(tmp_path, SAMPLE_INPUTS, str(tmp_path / "out"))
    url = f"http://127.0.0.1:{recording_server.server_port}"

    def submit(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["submit", str(cfg), *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    for env in (["--env", "TOKENMILL_TEST_SECRET"], ["--env", "B=2", "--env", "A=secret-too"]):
        code, out, err = submit("--address", url, *env, "--wait")
        assert code == 2 and out == "", err
        names = "TOKENMILL_TEST_SECRET" if len(env) == 2 else "A, B"
        assert err == f"tokenmill: --env {names}: {url} is plain http, so the values would cross the network " \
                      "unencrypted; use the job server's https:// address, or pass --insecure to send them anyway " \
                      "(e.g. through a kubectl port-forward); nothing was sent\n"
        assert "s3cr3t" not in err and "secret-too" not in err
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", url)       # the address from the environment: the same
    code, _, err = submit("--env", "A=1")
    assert code == 2 and "plain http" in err
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    assert recording_server.seen == []                      # nothing reached the server

    # the server answers: with --insecure the same submission goes out (and is refused: no Ray there)
    code, out, err = submit("--address", url, "--env", "A=1", "--insecure")
    assert code == 2 and out == "" and err.startswith(f"tokenmill: job server at {url}: "), err
    assert recording_server.seen and recording_server.seen[0][:2] == ("GET", "/api/version")


def test_env_transport_rule():
    from tokenmill.cluster.ray_jobs import JobServerError
    from tokenmill.cluster.submit import check_transport

    check_transport("https://ray.example.org", {"AWS_SECRET_ACCESS_KEY": "x"})   # https: fine
    check_transport("http://head:8265", {})                                       # nothing to protect
    check_transport("http://head:8265", {"A": "1"}, insecure=True)
    with pytest.raises(JobServerError, match=r"^--env A: http://head:8265 is plain http"):
        check_transport("http://head:8265", {"A": "1"})
