"""A decontamination test set from the shared dev data (tests and ``bench/decontaminate.py``).

Eval items are passages (25 to 60 words) cut from the book rows of ``quality_dev.jsonl`` (Austen,
Chesterton, Melville, State of the Union speeches). Web pages of ``web_dev.jsonl`` become:

- *contaminated*: a page with one item's passage pasted at its start, middle or end, the copy
  edited as people and scrapers do: letter case changed, punctuation dropped, added or swapped
  (curly quotes, dashes), spacing changed (double spaces, tabs, non-breaking spaces, the passage
  broken over lines);
- *clean*: a page with another passage of the same book pasted the same way (text that is not an
  eval item but comes from the same source), or a near miss: 12 consecutive words of an item (one
  fewer than the n-gram), or an item's words in another order.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

WORD = re.compile(r"\S+")
UNIT = re.compile(r"[^\W_]+")


def book_rows(shared_data: Path) -> list[dict]:
    rows = [json.loads(line) for line in open(shared_data / "quality_dev.jsonl", encoding="utf-8")]
    return [r for r in rows if r["label"] == "high" and any(k in r["source"] for k in ("gutenberg", "moby", "sotu"))]


def web_pages(shared_data: Path) -> list[dict]:
    return [json.loads(line) for line in open(shared_data / "web_dev.jsonl", encoding="utf-8")]


def _window(words: list[str], length: int, rng: random.Random, avoid: list[tuple[int, int]]) -> tuple[int, int]:
    """A window of ``length`` words at least 20 words from every window in ``avoid``."""
    for _ in range(50):
        start = rng.randrange(0, max(1, len(words) - length))
        if all(start + length + 20 <= lo or start >= hi + 20 for lo, hi in avoid):
            return start, start + length
    return -1, -1


def edited(text: str, rng: random.Random) -> str:
    """The passage as a page might hold it: case, punctuation and spacing changed."""
    out = []
    for w in text.split():
        r = rng.random()
        if r < 0.15:
            w = w.upper()
        elif r < 0.3:
            w = w.lower()
        elif r < 0.4:
            w = w.capitalize()
        if rng.random() < 0.15:
            w = w.strip(",.;:!?\"'")
        if rng.random() < 0.1:
            w += rng.choice([",", ".", ";", " -", "!"])
        w = w.replace('"', rng.choice(['"', "\u201c", "''"])).replace("'", rng.choice(["'", "\u2019"]))
        out.append(w)
    seps = [" ", "  ", "\n", "\t", "\u00a0", " \n "]
    return "".join(w + rng.choices(seps, weights=[70, 8, 8, 4, 5, 5])[0] for w in out).strip()


def _paste(page: str, passage: str, where: str) -> str:
    if where == "start":
        return passage + "\n" + page
    if where == "end":
        return page + "\n" + passage
    cut = page.find("\n", len(page) // 2)
    cut = len(page) // 2 if cut < 0 else cut
    return page[:cut] + " " + passage + " " + page[cut:]


def build(shared_data: Path, seed: int = 0, per_book: int = 1) -> tuple[list[dict], list[dict]]:
    """(eval items, documents); each document has ``label``: contaminated / other_passage /
    near_miss / page, and ``item`` (the item it holds or was cut beside)."""
    rng = random.Random(seed)
    items, docs = [], []
    pages = web_pages(shared_data)
    for b, row in enumerate(book_rows(shared_data)):
        words = WORD.findall(row["text"])
        taken: list[tuple[int, int]] = []   # every item's window, and every other passage's
        for k in range(per_book):
            length = rng.randint(25, 60)
            lo, hi = _window(words, length, rng, taken)
            if lo < 0 or len(words) < length + 60:
                continue
            taken.append((lo, hi))
            item_id = f"{row['id']}-{k}"
            passage = " ".join(words[lo:hi])
            items.append({"id": item_id, "passage": passage, "source": row["source"]})
            page = pages[(b * per_book + k) % len(pages)]["text"]
            where = rng.choice(["start", "middle", "end"])
            docs.append({"id": f"pos-{item_id}", "text": _paste(page, edited(passage, rng), where),
                         "label": "contaminated", "item": item_id})
            olo, ohi = _window(words, length, rng, taken)
            if olo >= 0:
                taken.append((olo, ohi))
                other = " ".join(words[olo:ohi])
                docs.append({"id": f"neg-{item_id}", "text": _paste(page, edited(other, rng), where),
                             "label": "other_passage", "item": item_id})
            units = UNIT.findall(passage)   # 12 words as the n-grams count them (``don't``: 2)
            start = rng.randrange(0, len(units) - 12)
            near = "Quoted: " + " ".join(units[start:start + 12]) + " (unquote)"   # no word of the page completes a 13-gram
            docs.append({"id": f"near-{item_id}", "text": _paste(page, near, where),
                         "label": "near_miss", "item": item_id})
            shuffled = words[lo:hi]
            rng.shuffle(shuffled)
            docs.append({"id": f"shuf-{item_id}", "text": _paste(page, " ".join(shuffled), where),
                         "label": "near_miss", "item": item_id})
    for p in pages:
        docs.append({"id": f"page-{p['id']}", "text": p["text"], "label": "page", "item": None})
    return items, docs


def write_eval(items: list[dict], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps({"id": it["id"], "passage": it["passage"]}, ensure_ascii=False) + "\n")
    return path
