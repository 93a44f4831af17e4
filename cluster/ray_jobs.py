"""Talking to a Ray job server (the head's dashboard, ``ray[default]``): where it is, a client
whose failures are one-line ``JobServerError``s, following a job's logs to its end, and the exit
status that end maps to (0 succeeded, 1 failed or stopped)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import Optional

DEFAULT_URL = "http://127.0.0.1:8265"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# variables through which Ray's client would override an explicit address
_ADDRESS_VARS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


class JobServerError(Exception):
    """The job server cannot be reached or refused a request: one line for the user, exit 2."""


def job_server_url(address: Optional[str], environ=os.environ) -> str:
    """``--address``, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS when it is an http(s) URL,
    else the local default; a bare HOST:PORT gets http://."""
    url = address or environ.get("RAY_API_SERVER_ADDRESS") or ""
    if not url and environ.get("RAY_ADDRESS", "").startswith(("http://", "https://")):
        url = environ["RAY_ADDRESS"]
    url = url or DEFAULT_URL
    if "://" not in url:
        url = "http://" + url
    if not url.startswith(("http://", "https://")):
        raise JobServerError(f"address {url}: expected the job server's URL, http(s)://HEAD:8265 (the dashboard)")
    return url.rstrip("/")


def connect(url: str):
    """A ``JobSubmissionClient`` for ``url`` (checked to answer within 10 s)."""
    try:
        import requests
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise JobServerError("submitting needs Ray's job client: pip install 'ray[default]'") from None
    try:
        requests.get(f"{url}/api/version", timeout=10)
    except requests.RequestException as e:
        raise JobServerError(f"cannot reach a Ray job server at {url} ({type(e).__name__}); is the head up, "
                             "with its dashboard (ray[default])?") from None
    quiet_client_logs()
    try:
        with _without_env(_ADDRESS_VARS):
            return JobSubmissionClient(url)
    except Exception as e:   # ConnectionError, RuntimeError (version), AuthenticationError
        raise JobServerError(f"job server at {url}: {_first_line(e)}") from None


def quiet_client_logs() -> None:
    """Silences the Ray job client's INFO lines (uploading packages, websocket closed): tokenmill
    says what it ships and how a job ended."""
    import logging

    for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                 "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)


def call(what: str, fn, *args, **kwargs):
    """Calls a client method; its failures become a JobServerError naming ``what``."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        if "status code 404" in str(e):
            raise JobServerError(f"{what}: no such job") from None
        raise JobServerError(f"{what}: {_first_line(e)}") from None


def follow_logs(client, job_id: str, out=None) -> None:
    """Writes the job's logs to ``out`` (stdout) as they come, until the job ends."""
    out = out or sys.stdout

    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except Exception as e:   # the stream broke (head restarted, network, proxy): the job goes on
        print(f"tokenmill: the log stream of {job_id} ended early ({_first_line(e)}); waiting for the job",
              file=sys.stderr)


def wait_done(client, job_id: str, poll: float = 1.0):
    """The job's details once it has ended."""
    while True:
        info = call(f"job {job_id}", client.get_job_info, job_id)
        if status_of(info) in TERMINAL:
            return info
        time.sleep(poll)


def status_of(info) -> str:
    return str(info.status)   # JobStatus is a str enum whose str() is its value


def exit_code(info) -> int:
    """0 unless the job FAILED or was STOPPED (1); a job still running counts as 0."""
    return 1 if status_of(info) in ("FAILED", "STOPPED") else 0


def describe(info) -> str:
    """``ID: FAILED (Job entrypoint command failed with exit code 2)``: one line (Ray's message
    carries the last logs after its first line; ``jobs logs`` shows them)."""
    lines = (info.message or "").strip().splitlines()
    message = lines[0].split(", last available logs")[0] if lines else ""
    code = getattr(info, "driver_exit_code", None)
    if code not in (None, 0) and "exit code" not in message:
        message = f"{message}; driver exit code {code}" if message else f"driver exit code {code}"
    return f"{info.submission_id or info.job_id}: {status_of(info)}" + (f" ({message})" if message else "")


@contextlib.contextmanager
def _without_env(names):
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
