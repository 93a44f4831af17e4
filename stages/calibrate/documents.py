"""The texts calibration measures: clean reference text per language (sentences are joined into
documents), and corrupted copies of it of the kinds the heuristics exist to catch."""
from __future__ import annotations

import json
import random
import re
from collections import defaultdict

#: a language's texts count as sentences (and are joined into documents) below this median length
SENTENCE_CHARS = 400
#: a JSONL line longer than this is skipped (read in pieces, never held whole)
MAX_LINE_BYTES = 64 << 20
KINDS = ("repeated", "salad", "menu")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def read_reference(paths: list[str], text_field: str = "text", lang_field: str = "lang") -> dict[str, list[str]]:
    """Texts per language of JSONL/Parquet files with a language field (rows without either are skipped)."""
    out: dict[str, list[str]] = defaultdict(list)
    for text, lang in read_pairs(paths, text_field, lang_field):
        if isinstance(text, str) and text.strip() and isinstance(lang, str) and lang:
            out[lang].append(text)
    return dict(out)


def read_pairs(paths: list[str], text_field: str, lang_field: str | None):
    """(text, language or None) of every record of JSONL or Parquet files, local or URLs; a line
    that is not a JSON object is skipped."""
    import fsspec
    import pyarrow.parquet as pq

    for path in paths:
        with fsspec.open(path, "rb", compression="infer") as fh:
            if path.endswith(".parquet"):
                cols = [text_field] + ([lang_field] if lang_field else [])
                table = pq.read_table(fh, columns=cols)
                langs = table[lang_field].to_pylist() if lang_field else [None] * len(table)
                yield from zip(table[text_field].to_pylist(), langs)
                continue
            for line in bounded_lines(fh, path):
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    yield row.get(text_field), row.get(lang_field) if lang_field else None


def bounded_lines(fh, path: str, limit: int | None = None):
    """The lines of a binary file (``decode.iter_lines``); a line over ``limit`` bytes
    (``MAX_LINE_BYTES``) is streamed past, never held whole, and skipped with a warning naming the file."""
    import warnings

    from tokenmill.engine.io.decode import Oversized, iter_lines

    limit = limit or MAX_LINE_BYTES
    for line in iter_lines(iter(lambda: fh.read(1 << 20), b""), max_line=limit):
        if isinstance(line, Oversized):
            warnings.warn(f"{path}: a line over {limit:,} bytes was skipped", stacklevel=2)
            continue
        yield line


def as_documents(texts: list[str], seed: int, per_doc: int = 12, per_line: int = 3,
                 min_docs: int = 10) -> tuple[list[str], list[str]]:
    """(documents, sentences): texts whose median length is under ``SENTENCE_CHARS`` are sentences,
    shuffled (seeded, by content) and joined ``per_doc`` to a document (fewer, down to 6, where
    that makes ``min_docs`` documents), ``per_line`` to a line; longer texts are documents already
    (and give no sentences)."""
    texts = sorted(texts)
    lengths = sorted(len(t) for t in texts)
    if not texts or lengths[len(lengths) // 2] >= SENTENCE_CHARS:
        return texts, []
    per_doc = max(min(per_doc, 6), min(per_doc, len(texts) // max(1, min_docs)))
    random.Random(seed).shuffle(texts)
    docs = []
    for at in range(0, len(texts) - per_doc + 1, per_doc):
        part = texts[at:at + per_doc]
        docs.append("\n".join(" ".join(part[j:j + per_line]) for j in range(0, len(part), per_line)))
    return docs, texts


def corrupt(text: str, kind: str, rng: random.Random) -> str:
    """``repeated``: every line three times; ``salad``: the words, punctuation stripped, shuffled,
    in lines of 8-15; ``menu``: the words one to three to a line, capitalised, no punctuation."""
    if kind == "repeated":
        return "\n".join(line for line in text.split("\n") for _ in range(3))
    words = [w for w in _PUNCT.sub(" ", text).split() if w]
    rng.shuffle(words)
    lo, hi = (8, 15) if kind == "salad" else (1, 3)
    lines, at = [], 0
    while at < len(words):
        n = rng.randint(lo, hi)
        part = words[at:at + n] if kind == "salad" else [w[:1].upper() + w[1:] for w in words[at:at + n]]
        lines.append(" ".join(part))
        at += n
    return "\n".join(lines)


def corrupted(docs: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [corrupt(d, k, rng) for d in docs for k in KINDS]
