"""Writing calibrated language files: the same keys as configs/languages (every field spelled out),
each value that calibration set or kept on purpose followed by a comment saying why."""
from __future__ import annotations

import os

import yaml

HEADER = ("# {name} ({iso}): per-language parameters written by `tokenmill calibrate` ({source}).\n"
          "# Values without a comment are the shipped ones (configs/languages or the built-in defaults).\n")


class _Dumper(yaml.SafeDumper):
    """Mappings in block style (a comment per key), lists in flow style (stopwords on few lines)."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def render(params: dict, notes: dict[str, str], iso: str, source: str) -> str:
    """YAML of ``params`` with ``notes`` (keyed ``key`` or ``family.key``) as end-of-line comments."""
    body = yaml.dump(params, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    out, parent = [], None
    for line in body.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        key = line.strip().split(":", 1)[0] if ":" in line and not line.lstrip().startswith("- ") else None
        if indent == 0 and key:
            parent = key
        path = key if indent == 0 else f"{parent}.{key}" if key and indent == 2 else None
        note = notes.get(path) if path else None
        out.append(f"{line}  # {note}" if note else line)
    return HEADER.format(name=params.get("name") or iso, iso=iso, source=source) + "\n".join(out) + "\n"


def write_language_file(folder: str, iso: str, text: str) -> str:
    """``folder/<iso>.yaml`` written whole or not at all."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{iso}.yaml")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
