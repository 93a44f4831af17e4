"""``tokenmill submit`` and ``tokenmill jobs``: runs on a Ray cluster through the Ray Jobs API.

``submit`` validates the config here (a bad one exits 2 and nothing is sent), ships tokenmill's
code and the config (``job_package``; never data or models), starts ``tokenmill run`` on the
cluster as a Ray job and prints its id. With ``--wait`` it streams the job's logs and exits with
the job's end: 0 succeeded, 1 failed or stopped; 2 when the job server cannot be reached or
refuses the job; 130 on Ctrl-C, which leaves the job running. ``--env`` values (credentials,
often) go only to an https:// job server unless ``--insecure`` says plain http is fine; otherwise
it exits 2 before anything is sent.
"""
from __future__ import annotations

import os
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path

from tokenmill.engine.config import ConfigError

from . import jobs_cli
from .job_config import JobConfig, absolute, prepare
from .job_package import entrypoint, parse_env, runtime_env, stage_code
from .ray_jobs import JobServerError, call, connect, job_server_url


def add_parsers(sub) -> None:
    """Adds ``submit`` and ``jobs`` to the ``tokenmill`` command (each sets ``func``)."""
    _submit_parser(sub)
    jobs_cli.add_parser(sub)


def _submit_parser(sub) -> None:
    s = sub.add_parser("submit", help="run a config on a Ray cluster as a Ray job (prints the job id)",
                       description=__doc__.split("\n\n", 1)[1].replace("``", "'"))
    s.add_argument("config", help="pipeline YAML; local paths in it must exist on the cluster's nodes")
    jobs_cli.address_option(s)
    s.add_argument("--wait", action="store_true", help="stream the job's logs; exit 0 if it succeeds, 1 if not")
    s.add_argument("--job-id", help="the job's id (default tokenmill-NAME-DATE-TIME-XXXX; must be new)")
    s.add_argument("--output", help="output folder or URL (overrides output.path; a local path is made absolute)")
    s.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="an environment variable for the job (repeatable); a bare KEY sends this machine's "
                        "value. Nothing else of the local environment is sent.")
    s.add_argument("--insecure", action="store_true",
                   help="send --env values to a plain http:// job server too (they cross the network unencrypted; "
                   "default: only to https://)")
    s.add_argument("--no-ship-code", action="store_true",
                   help="run the tokenmill installed on the cluster instead of shipping this one's code")
    s.add_argument("--py-module", action="append", default=[], metavar="PATH",
                   help="a local Python package or .whl to ship too (e.g. your own stages; repeatable)")
    s.add_argument("--progress-interval", type=float, metavar="SECONDS",
                   help="seconds between the job's progress lines (default: tokenmill run's, 10)")
    s.add_argument("--verbose", "-v", action="store_true", help="the job also logs the engine's own output")
    s.add_argument("--keep-work", action="store_true", help="keep intermediate phase files under OUT/_work")
    s.set_defaults(func=submit)


@jobs_cli.guarded
def submit(args) -> int:
    try:
        job = prepare(args.config, args.output)
        env_vars = parse_env(args.env, os.environ)
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"tokenmill: {e}", file=sys.stderr)
        return 2
    url = job_server_url(args.address)
    check_transport(url, env_vars, args.insecure)
    client = connect(url)
    job_id = _send(client, job, env_vars, args)
    print(job_id)
    _say_submitted(job, job_id, url, args)
    return jobs_cli.follow_to_end(client, url, job_id) if args.wait else 0


def check_transport(url: str, env_vars: dict, insecure: bool = False) -> None:
    """``--env`` values travel in the job's runtime environment: over plain http anyone on the way
    reads them. A ``JobServerError`` (exit 2, nothing sent) unless the URL is https or the user
    said ``--insecure``."""
    if env_vars and url.startswith("http://") and not insecure:
        names = ", ".join(sorted(env_vars))
        raise JobServerError(f"--env {names}: {url} is plain http, so the values would cross the network unencrypted; "
                             "use the job server's https:// address, or pass --insecure to send them anyway (e.g. "
                             "through a kubectl port-forward); nothing was sent")


def _send(client, job: JobConfig, env_vars: dict, args) -> str:
    """Stages the config (and the code) in a temporary folder and submits the job."""
    with tempfile.TemporaryDirectory(prefix="tokenmill-submit-") as tmp:
        work = Path(tmp, "config")
        work.mkdir()
        config = job.write(work)
        code = None if args.no_ship_code else stage_code(Path(tmp, "code"))
        env = runtime_env(work, code, env_vars, tuple(absolute(p) for p in args.py_module))
        cmd = entrypoint(config.name, args.progress_interval, args.verbose, args.keep_work)
        job_id = args.job_id or default_job_id(job.name)
        return call(f"submit {job_id}", client.submit_job, entrypoint=cmd, runtime_env=env, submission_id=job_id,
                    metadata={"tokenmill_config": job.name, "tokenmill_output": job.output})


def default_job_id(name: str) -> str:
    """``tokenmill-NAME-YYYYmmdd-HHMMSS-xxxx``: sortable, and unique on a cluster."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:40] or "run"
    return f"tokenmill-{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _say_submitted(job: JobConfig, job_id: str, url: str, args) -> None:
    code = "the tokenmill installed there" if args.no_ship_code else "this tokenmill's code"
    lines = [f"tokenmill: submitted {job.name} as job {job_id} to {url} (shipped: the config and {code})"]
    local = job.local_paths()
    if local:
        lines.append(f"  local paths are the cluster's: every node must see {', '.join(local)}")
    if not args.wait:
        lines += [f"  follow: tokenmill jobs logs {job_id} --follow --address {url}",
                  f"  status: tokenmill jobs status {job_id} --address {url}",
                  f"  stop:   tokenmill jobs stop {job_id} --address {url}"]
    print("\n".join(lines), file=sys.stderr, flush=True)
