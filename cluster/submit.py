"""``tokenmill submit`` and ``tokenmill jobs``: runs on a Ray cluster through the Ray Jobs API."""
from __future__ import annotations


def add_parsers(sub) -> None:
    """Adds ``submit`` and ``jobs`` to the ``tokenmill`` command (each sets ``func``)."""
