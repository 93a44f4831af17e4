"""The prompt library of the rephrase stage: one versioned YAML file per style.

A style file holds ``name``, ``version`` (an integer, recorded with every synthetic document as
``prompt_version``), ``system`` and ``user`` (templates with ``{document}`` and
``{language_name}``: a non-English document is rephrased in its own language), and optionally
``split: qa`` (the output is cut into one record per question-and-answer pair). The shipped
styles live in ``styles/`` next to this module (Nemotron-CC's wikipedia, qa, distill,
extract_knowledge, knowledge_list; WRAP/FinePhrase's faq, tutorial, table, simple, erudite);
a user adds or overrides styles by naming a folder of such files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

SHIPPED = Path(__file__).resolve().parent / "styles"
FIELDS = {"name", "version", "system", "user", "split"}


@dataclass(frozen=True)
class Style:
    name: str
    version: int
    system: str
    user: str
    split: Optional[str] = None

    def messages(self, document: str, language_name: str) -> list[dict]:
        """The chat messages for one document (or chunk)."""
        values = {"document": document, "language_name": language_name}
        return [{"role": "system", "content": self.system.format(**values)},
                {"role": "user", "content": self.user.format(**values)}]


def _style(path: Path) -> Style:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - FIELDS
    missing = {"name", "version", "system", "user"} - set(data)
    if unknown or missing:
        raise ValueError(f"{path}: " + "; ".join(filter(None, [
            f"unknown keys {sorted(unknown)}" if unknown else "", f"missing keys {sorted(missing)}" if missing else ""])))
    if data.get("split") not in (None, "qa"):
        raise ValueError(f"{path}: split must be qa or absent, not {data['split']!r}")
    if not isinstance(data["version"], int):
        raise ValueError(f"{path}: version must be an integer")
    for key in ("system", "user"):
        try:
            data[key].format(document="", language_name="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"{path}: {key} may use only {{document}} and {{language_name}} ({e})") from e
    if "{document}" not in data["user"]:
        raise ValueError(f"{path}: user must contain {{document}}")
    return Style(str(data["name"]), data["version"], data["system"], data["user"], data.get("split"))


def load_styles(extra_dir: Optional[str] = None) -> dict[str, Style]:
    """The shipped styles, then those of ``extra_dir`` (same name: the user's file wins)."""
    styles: dict[str, Style] = {}
    for folder in [SHIPPED] + ([Path(extra_dir)] if extra_dir else []):
        if not folder.is_dir():
            raise ValueError(f"styles folder not found: {folder}")
        for path in sorted(folder.glob("*.yaml")):
            style = _style(path)
            styles[style.name] = style
    return styles
