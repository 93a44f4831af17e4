"""Which documents the rephrase stage sends to which style, and in what pieces.

- ``chunks``: a document longer than ``max_tokens`` is cut at paragraph boundaries, then at line
  boundaries, then (a single over-long line) at word boundaries, and a single over-long word in
  halves, into pieces of at most ``max_tokens`` tokens each, in order (``chunk_index``).
- ``styles_for``: each document draws one style from the weighted ``mix``, by a hash of its id and
  the seed (so the draw does not depend on batches, workers or re-runs); with ``route_by``, the
  bucket its score falls in supplies the mix instead (Nemotron-CC: low-quality documents to
  Wikipedia-style paraphrase, high-quality ones to QA and distillation).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Optional

import numpy as np

_PARAGRAPHS = re.compile(r"\n\s*\n")


def _split(text: str, level: int) -> tuple[list[str], str]:
    if level == 0:
        return _PARAGRAPHS.split(text), "\n\n"
    return (text.split("\n"), "\n") if level == 1 else (text.split(" "), " ")


def _pieces(text: str, count: Callable[[str], int], max_tokens: int, level: int) -> list[str]:
    """``text`` as pieces of at most ``max_tokens``, splitting at the coarsest boundary that works.
    Each part is counted once; a piece grows while the sum of its parts' counts fits (tokenizers
    split at whitespace first, so the sum is close), then its own count decides: it gives parts
    back while over, takes more while they fit (a few counts of one piece, not one per part)."""
    if count(text) <= max_tokens:
        return [text]
    if level == 3:   # one word longer than the limit (a URL, a base64 blob): halves of it
        mid = len(text) // 2
        return _pieces(text[:mid], count, max_tokens, 3) + _pieces(text[mid:], count, max_tokens, 3)
    parts, sep = _split(text, level)
    if len(parts) == 1:
        return _pieces(text, count, max_tokens, level + 1)
    sizes, sep_tokens = [count(p) for p in parts], count(sep)
    out, i = [], 0
    while i < len(parts):
        j, n = i + 1, sizes[i]
        while j < len(parts) and n + sep_tokens + sizes[j] <= max_tokens:
            n += sep_tokens + sizes[j]
            j += 1
        while j - i > 1 and count(sep.join(parts[i:j])) > max_tokens:
            j -= 1
        while sizes[i] <= max_tokens and j < len(parts) and count(sep.join(parts[i:j + 1])) <= max_tokens:
            j += 1
        piece = sep.join(parts[i:j])
        out += _pieces(piece, count, max_tokens, level + 1) if sizes[i] > max_tokens else [piece]
        i = j
    return [p for p in out if p.strip()]


def chunks(text: str, max_tokens: int, count: Callable[[str], int]) -> list[str]:
    """The pieces of one document, in order; ``count(text)`` gives a text's tokens."""
    return _pieces(text, count, max_tokens, 0) if text.strip() else []


def _unit(ids: list[str], seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per id, from a hash of the id and the seed."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "little")
                     for i in ids], np.float64) / 2.0 ** 64


def _draw(u: np.ndarray, mix: dict[str, float]) -> list[str]:
    names = list(mix)
    cum = np.cumsum([mix[n] for n in names], dtype=np.float64)
    return [names[i] for i in np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(names) - 1)]


def styles_for(ids: list[str], mix: dict[str, float], seed: int = 0, scores: Optional[np.ndarray] = None,
               routes: Optional[list[tuple[float, dict[str, float]]]] = None) -> list[str]:
    """One style per document. ``routes``: (lower bound of the score bucket, its mix), ascending;
    a document takes the mix of the highest bucket whose bound its score reaches (the first
    bucket's below all bounds, or without a score)."""
    u = _unit(ids, seed)
    if not routes or scores is None:
        return _draw(u, mix)
    bounds = np.array([b for b, _ in routes])
    bucket = np.maximum(np.searchsorted(bounds, np.nan_to_num(scores, nan=-np.inf), side="right") - 1, 0)
    out: list[str] = [""] * len(ids)
    for b, (_, sub_mix) in enumerate(routes):
        idx = np.flatnonzero(bucket == b)
        for i, style in zip(idx, _draw(u[idx], sub_mix)):
            out[i] = style
    return out
