"""What a submitted job carries (its Ray runtime environment) and the command it runs.

- tokenmill's own code, so the cluster runs the client's version: the installed packages
  (``tokenmill.engine``, ``.stages``, ``.cluster``, ``.languages``) copied without caches into a
  ``tokenmill/`` folder (an implicit namespace package, as installed) and shipped as a
  ``py_modules`` entry; Ray puts it ahead of anything installed on the cluster. With
  ``ship_code=False`` the cluster's own install runs (production images).
- a working folder holding only the config (and its language files).
- the environment variables asked for, and nothing of the local environment besides.

Never data or models: those are read where the config points.
"""
from __future__ import annotations

import importlib
import re
import shlex
import shutil
from pathlib import Path
from typing import Optional

PACKAGES = ("engine", "stages", "cluster", "languages")
NO_COPY = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*")
# unbuffered output: the job's log (and kubectl logs) gets each line when it is written
BASE_ENV = {"PYTHONUNBUFFERED": "1"}


def stage_code(folder: Path) -> Path:
    """Copies the installed tokenmill packages to ``folder/tokenmill``; returns that folder."""
    root = folder / "tokenmill"
    for name in PACKAGES:
        source = Path(importlib.import_module(f"tokenmill.{name}").__file__).parent
        shutil.copytree(source, root / name, ignore=NO_COPY)
    return root


def parse_env(items: list[str], environ: dict) -> dict[str, str]:
    """``KEY=VALUE`` as given; a bare ``KEY`` takes this machine's value (asked for by name)."""
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"--env {item!r}: expected KEY=VALUE or KEY")
        if not sep:
            if key not in environ:
                raise ValueError(f"--env {key}: not set here (give KEY=VALUE)")
            value = environ[key]
        env[key] = value
    return env


def runtime_env(working_dir: Path, code: Optional[Path], env_vars: dict[str, str],
                py_modules: tuple[str, ...] = ()) -> dict:
    """The job's runtime environment: the config folder, the code (unless None), the variables."""
    modules = ([str(code)] if code else []) + list(py_modules)
    env = {"working_dir": str(working_dir), "env_vars": {**BASE_ENV, **env_vars}}
    if modules:
        env["py_modules"] = modules
    return env


def entrypoint(config_name: str, progress_interval: Optional[float] = None, verbose: bool = False,
               keep_work: bool = False) -> str:
    """``tokenmill run`` on the cluster the job belongs to, with one progress line at a time."""
    cmd = ["python", "-m", "tokenmill.engine.cli", "run", config_name, "--address", "auto", "--engine", "ray",
           "--progress", "log"]
    if progress_interval is not None:
        cmd += ["--progress-interval", str(progress_interval)]
    cmd += ["--verbose"] * verbose + ["--keep-work"] * keep_work
    return shlex.join(cmd)
