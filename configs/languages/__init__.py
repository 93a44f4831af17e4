"""The per-language parameter files (``<iso>.yaml``), installed as package data
(``tokenmill.languages``) so that a pipeline without ``languages.dir`` gets them from any install,
editable or not. ``shipped_dir()`` is the folder that holds them."""
from pathlib import Path


def shipped_dir() -> Path:
    return Path(__file__).resolve().parent
