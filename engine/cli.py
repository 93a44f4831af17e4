"""The ``tokenmill`` command: ``run`` a pipeline config, ``validate`` one without running it; the
other commands (``train-quality``, ``submit``/``jobs``, ``k8s render``) are registered by their own
packages (``commands.py``)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Optional

from tokenmill.engine import __version__
from tokenmill.engine.commands import command_parsers
from tokenmill.engine.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokenmill", description="Curate LLM pretraining text: language ID, "
                                "heuristic filters, dedup -> language-partitioned Parquet and a report.")
    p.add_argument("--version", action="version", version=f"tokenmill {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a pipeline config (embedded local Ray unless --address; or --engine spark)",
                       description="Run a pipeline config. Without --address an embedded local Ray starts (with "
                       "--engine spark and no --master, an embedded local Spark); re-running a finished run does "
                       "nothing; re-running after a kill finishes the work, on either engine.")
    r.add_argument("config", help="pipeline YAML, e.g. configs/quickstart.yaml")
    r.add_argument("--address", help="existing Ray cluster: 'auto' or ray://HOST:10001 (overrides ray.address)")
    r.add_argument("--engine", choices=["ray", "spark", "local"],
                   help="the engine (overrides the config's engine; default ray): local runs in this process, "
                   "no Ray or JVM (tiny runs, debugging)")
    r.add_argument("--master", help="Spark master: spark://HOST:7077, yarn, k8s://..., local[N] (overrides spark.master)")
    r.add_argument("--output", help="output folder or URL (overrides output.path)")
    r.add_argument("--num-cpus", type=int, help="CPUs for the embedded local Ray or Spark (default: all)")
    r.add_argument("--no-progress", action="store_true", help="no progress display (tokenmill's messages only)")
    r.add_argument("--progress", choices=["auto", "live", "log", "off"], default="auto",
                   help="auto (default): a live display in a terminal, a progress line every --progress-interval "
                   "seconds elsewhere (CI, kubectl logs); live, log or off to choose")
    r.add_argument("--progress-interval", type=float, default=float(os.environ.get("TOKENMILL_PROGRESS_INTERVAL", 10)),
                   metavar="SECONDS", help="seconds between progress lines when not in a terminal (default 10, or "
                   "$TOKENMILL_PROGRESS_INTERVAL)")
    r.add_argument("--verbose", "-v", action="store_true", help="also show the engine's own logs, warnings and progress")
    r.add_argument("--keep-work", action="store_true", help="keep intermediate phase files under OUT/_work")
    r.add_argument("--lock-wait", type=float, metavar="SECONDS",
                   help="how long to wait while another run holds the output (overrides "
                   "output.lock_wait_seconds; default 0: exit 75 at once)")
    r.add_argument("--lease-holder", metavar="NAME", default=os.environ.get("TOKENMILL_LEASE_HOLDER"),
                   help="the job this run is an attempt of (e.g. a Kubernetes Job's name): a lease held by an "
                   "earlier attempt of the same job, which can only be dead, is taken over at once "
                   "(default $TOKENMILL_LEASE_HOLDER)")
    r.add_argument("--force", action="store_true",
                   help="write to an output folder that holds another kind of run, another pipeline's output "
                   "or files tokenmill did not write, replacing them (without it such a folder is refused, exit 2)")
    v = sub.add_parser("validate", help="check a config without running it",
                       description="Validate a config: keys, stage types and parameters, language files, inputs.")
    v.add_argument("config")
    for add in command_parsers():   # train-quality, submit, jobs, k8s: registered by their packages
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if getattr(args, "func", None):   # a registered command
        return args.func(args)
    try:
        pipeline = load_config(args.config)
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return 2
    if args.command == "validate":
        cfg = pipeline.config
        print(f"{args.config}: ok ({len(pipeline.stages)} stages: {', '.join(s.name for s in pipeline.stages)}; "
              f"{len(pipeline.languages.languages_with_files())} language files from {pipeline.languages.folder}; "
              f"output {cfg.output.path})")
        return 0
    from tokenmill.engine.durable.lease import LeaseHeld, LeaseLost
    from tokenmill.engine.durable.ownership import ForeignOutput
    from tokenmill.engine.global_ops import GlobalStepError
    from tokenmill.engine.io.transient import is_transient
    from tokenmill.engine.report.console import Console
    from tokenmill.engine.run import run_pipeline

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    console = Console.auto("off" if args.no_progress else args.progress, args.progress_interval)
    _terminate_as_exit()
    try:
        run_pipeline(pipeline, address=args.address, output=args.output, num_cpus=args.num_cpus,
                     engine=args.engine, master=args.master, keep_work=args.keep_work, console=console,
                     verbose=args.verbose, lock_wait_s=args.lock_wait, force=args.force,
                     lease_holder=args.lease_holder)
    except ForeignOutput as e:
        print(f"output.path: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:   # found when the run starts (an index of another encoder, one that cannot be written)
        print(e.render(), file=sys.stderr)
        return 2
    except LeaseHeld as e:
        print(f"{e}; this run did nothing (exit 75: try again later, or pass --lock-wait SECONDS)", file=sys.stderr)
        return 75
    except LeaseLost as e:
        print(f"{e} (exit 75: finished phases are kept; run again to finish)", file=sys.stderr)
        return 75
    except GlobalStepError as e:
        print(f"the run stopped in a global step (exit 1): {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished phases are kept; run the same command again to finish", file=sys.stderr)
        return 130
    except OSError as e:
        if not is_transient(e):
            raise
        print(f"the run stopped on a storage error that did not go away after the retries (io.retries): "
              f"{type(e).__name__}: {e}; nothing of the unfinished work was committed and no input file "
              "was marked done: run the same command again to finish", file=sys.stderr)
        return 1
    except Exception as e:   # DamagedState, raised here or in an engine's worker (which wraps it)
        damage = _damage(e)
        if damage is None:
            raise
        print(f"the run stopped on damaged state that earlier runs left (exit 2): {damage}", file=sys.stderr)
        return 2
    except SystemExit as e:
        if e.code not in (143, 15):   # 15: Ray's own SIGTERM handler (ray.init replaces ours)
            raise
        print("terminated: finished phases are kept and the output's lease is released; run the same command "
              "again to finish", file=sys.stderr)
        return 143
    return 0


def _damage(exc: Optional[BaseException]) -> Optional[str]:
    """The message of a DamagedState that ``exc`` is, was raised from, or (an engine's wrapper of a
    worker's error: Ray Data, Spark) names in its text; None if none."""
    from tokenmill.engine.global_ops import DamagedState

    marker = f"{DamagedState.__name__}: "
    for _ in range(16):
        if exc is None:
            return None
        if isinstance(exc, DamagedState) and exc.args:
            return str(exc.args[0])
        text = str(exc)
        if marker in text:
            return text.split(marker)[-1].splitlines()[0].strip()
        exc = exc.__cause__ or exc.__context__
    return None


def _terminate_as_exit() -> None:
    """SIGTERM (Kubernetes stopping a pod, ``kill``) unwinds the run like Ctrl-C, so the output's
    lease is released and the engine shut down, instead of ending the process where it stands."""
    def stop(signum, frame):
        raise SystemExit(143)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    sys.exit(main())
