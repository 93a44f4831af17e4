"""The config a submitted job carries: the user's YAML read here (``extends:`` merged, every
relative path made absolute), validated here, and shipped as one self-contained file.

Local paths name the cluster's filesystem: the job's driver runs on the head node and its
workers on every node. So nothing is left relative to the head's working folder: paths in the
YAML are resolved against the YAML's own folder, as ``tokenmill run`` does, and ``--output``
against the current folder; each node must see them (a shared filesystem) unless they are
object-store URLs. Inputs need not exist on this machine, nor models on object stores be
readable from it: the cluster reads them (and the run checks them before any work). The
language files are config, not data: a ``languages.dir`` travels with the YAML.
"""
from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from tokenmill.engine.config import Pipeline, build_pipeline, read_yaml_with_extends

CONFIG_NAME = "pipeline.yaml"
LANGUAGES_NAME = "languages"


def is_url(path: str) -> bool:
    return "://" in path


def absolute(path: str) -> str:
    """A local path made absolute against the current folder; a URL as given."""
    return path if is_url(path) else os.path.abspath(os.path.expanduser(path))


@dataclass
class JobConfig:
    """The validated pipeline, the data to ship, and where its language files come from."""

    pipeline: Pipeline
    data: dict
    languages_dir: Optional[Path]

    @property
    def name(self) -> str:
        return self.pipeline.config.name

    @property
    def output(self) -> str:
        return self.pipeline.config.output.path

    def local_paths(self) -> list[str]:
        """Input and output paths that are on a filesystem (not object-store URLs)."""
        cfg = self.pipeline.config
        return [p for p in [*cfg.input.paths, cfg.output.path] if not is_url(p)]

    def write(self, folder: Path) -> Path:
        """Writes the shipped YAML (and the language files) into ``folder``; returns the YAML."""
        data = copy.deepcopy(self.data)
        if self.languages_dir is not None:
            target = folder / LANGUAGES_NAME
            target.mkdir(parents=True)
            for f in sorted(self.languages_dir.glob("*.yaml")):
                shutil.copy2(f, target / f.name)
            data["languages"]["dir"] = LANGUAGES_NAME     # relative to the shipped YAML
        path = folder / CONFIG_NAME
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path


def prepare(config: str, output: Optional[str] = None) -> JobConfig:
    """Reads and validates ``config`` (with ``output`` over ``output.path``); raises ConfigError."""
    source = Path(config)
    data = read_yaml_with_extends(source)
    if output:
        data["output"] = {**(data.get("output") or {}), "path": absolute(output)}
    pipeline = build_pipeline(copy.deepcopy(data), source.resolve(), check_inputs=False, check_remote=False)
    lang_dir = pipeline.config.languages.dir
    return JobConfig(pipeline, data, Path(lang_dir) if lang_dir else None)
