"""``tokenmill jobs status|logs|stop|list``: a submitted run's state, logs and end, by job id.

Exit status: 0 ok (``status``, ``logs --follow``: the job is pending, running or succeeded;
``stop``: it has stopped or had already ended); 1 the job failed or was stopped (``stop``: it
did not stop within --timeout); 2 the job server cannot be reached or has no such job; 130
interrupted while following (the job keeps running).
"""
from __future__ import annotations

import functools
import sys
import time

from .ray_jobs import (
    TERMINAL,
    JobServerError,
    call,
    connect,
    describe,
    exit_code,
    follow_logs,
    job_server_url,
    status_of,
    wait_done,
)

ADDRESS_HELP = ("the Ray job server (the head's dashboard): http://HEAD:8265; default $RAY_API_SERVER_ADDRESS, "
                "$RAY_ADDRESS when it is an http(s) URL, else http://127.0.0.1:8265")


def address_option(parser) -> None:
    parser.add_argument("--address", help=ADDRESS_HELP)


def add_parser(sub) -> None:
    """Adds ``jobs`` and its subcommands (each sets ``func``)."""
    j = sub.add_parser("jobs", help="status, logs, stop of a submitted run; list the cluster's jobs",
                       description="Follow runs sent with 'tokenmill submit'. "
                       + __doc__.split("\n\n", 1)[1].replace("``", "'"))
    js = j.add_subparsers(dest="jobs_command", required=True)
    for name, func, text in (("status", _status, "the job's status and message"),
                             ("logs", _logs, "the job's logs so far (--follow: until it ends)"),
                             ("stop", _stop, "stop the job (its finished phases are kept; submit again to finish)")):
        p = js.add_parser(name, help=text, description=text)
        p.add_argument("job_id")
        address_option(p)
        p.set_defaults(func=func)
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends; exit with its status")
        if name == "stop":
            p.add_argument("--timeout", type=float, default=60, help="seconds to wait for it to stop (default 60)")
            p.add_argument("--no-wait", action="store_true", help="only ask it to stop")
    lst = js.add_parser("list", help="the cluster's submitted jobs", description="The cluster's submitted jobs, oldest first.")
    address_option(lst)
    lst.set_defaults(func=_list)


def guarded(fn):
    """A command whose JobServerError prints one line and exits 2 (no traceback); Ctrl-C exits 130."""
    @functools.wraps(fn)
    def run(args) -> int:
        try:
            return fn(args)
        except JobServerError as e:
            print(f"tokenmill: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("tokenmill: interrupted", file=sys.stderr)
            return 130
    return run


def follow_to_end(client, url: str, job_id: str) -> int:
    """Streams the job's logs until it ends; its exit status. Ctrl-C leaves the job running."""
    try:
        follow_logs(client, job_id)
        info = wait_done(client, job_id)
    except KeyboardInterrupt:
        print(f"\ntokenmill: stopped following; job {job_id} keeps running on the cluster\n"
              f"  follow: tokenmill jobs logs {job_id} --follow --address {url}\n"
              f"  stop:   tokenmill jobs stop {job_id} --address {url}", file=sys.stderr)
        return 130
    print(f"tokenmill: job {describe(info)}", file=sys.stderr)
    return exit_code(info)


def _client(args):
    url = job_server_url(args.address)
    return url, connect(url)


@guarded
def _status(args) -> int:
    _, client = _client(args)
    info = call(f"job {args.job_id}", client.get_job_info, args.job_id)
    print(describe(info))
    return exit_code(info)


@guarded
def _logs(args) -> int:
    url, client = _client(args)
    if args.follow:
        call(f"job {args.job_id}", client.get_job_info, args.job_id)   # no such job: one line, exit 2
        return follow_to_end(client, url, args.job_id)
    sys.stdout.write(call(f"job {args.job_id}", client.get_job_logs, args.job_id))
    return 0


@guarded
def _stop(args) -> int:
    _, client = _client(args)
    what = f"job {args.job_id}"
    if not call(what, client.stop_job, args.job_id):
        print(f"{describe(call(what, client.get_job_info, args.job_id))}: had already ended")
        return 0
    if args.no_wait:
        print(f"{args.job_id}: stop requested")
        return 0
    deadline = time.monotonic() + args.timeout
    info = call(what, client.get_job_info, args.job_id)
    while status_of(info) not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        info = call(what, client.get_job_info, args.job_id)
    print(describe(info))
    return 0 if status_of(info) in TERMINAL else 1


@guarded
def _list(args) -> int:
    _, client = _client(args)
    jobs = [j for j in call("list", client.list_jobs) if j.submission_id]
    for j in sorted(jobs, key=lambda j: j.start_time or 0):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.start_time / 1000)) if j.start_time else "-"
        meta = j.metadata or {}
        print(f"{j.submission_id}  {status_of(j):<9}  {started}  {meta.get('tokenmill_config', '')}  "
              f"{meta.get('tokenmill_output', '')}".rstrip())
    if not jobs:
        print("no submitted jobs", file=sys.stderr)
    return 0
