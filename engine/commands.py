"""The command registry: ``tokenmill`` subcommands that other packages add.

A package registers a function ``add(subparsers)`` under the ``tokenmill.commands`` entry-point
group (pyproject.toml); it adds its sub-parsers and sets ``func`` on each, which ``main`` calls with
the parsed arguments and whose return value is the exit status. The engine itself imports none of
them (``train-quality`` lives with the quality stages, ``submit``/``jobs``/``k8s`` in
``tokenmill.cluster``), and a user's package can add its own the same way.
"""
from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

GROUP = "tokenmill.commands"


def command_parsers() -> list[Callable]:
    """The ``add(subparsers)`` functions of every registered command, in name order."""
    return [ep.load() for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)]
