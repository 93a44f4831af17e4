"""The heuristics' decision corpus: every dev document of shared/data, and documents built from it
to reach every rule, with each rule family's decision on each, stored in
tests/data/heuristics_decisions.json.gz. tests/test_heuristics_decisions.py recomputes them and
must find every one unchanged: a change that is meant to be faster (or cleaner) may not move a
single decision. A change that is meant to decide differently regenerates the file, and its commit
says why:

    python tests/heuristics_corpus.py          # rewrite tests/data/heuristics_decisions.json.gz

Documents (about 3,400), each with the language its parameters come from:

- ``web_dev``, ``quality_dev`` and ``configs/sample/web.jsonl.gz`` pages, as English;
- the same web_dev pages with their first half repeated three times, with every line doubled
  (line and paragraph repetition), and with a window of 8-16 of their words repeated 2-8 times
  in the middle of a line (n-gram repetition);
- ``langid_dev`` sentences of each of its languages, 30 per document, joined by a space, by a
  newline, or as blank-line paragraphs of three (in turn), with that language's parameters
  (languages without a file get the defaults).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DECISIONS = REPO / "tests" / "data" / "heuristics_decisions.json.gz"
FAMILIES = ("gopher_quality", "gopher_repetition", "c4", "fineweb")


def jsonl_rows(path: Path):
    """(id, row) of each JSON line with a text; the id is the row's, else ``<file name>:<line>``
    (the keys of the stored decisions here and in tests/data/datatrove_decisions.json.gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            row = json.loads(line)
            if isinstance(row.get("text"), str):
                yield str(row.get("id") or f"{path.name}:{i}"), row


def documents() -> list[tuple[str, str, str]]:
    """(key, language, text) of every document, in a fixed order."""
    docs: list[tuple[str, str, str]] = []
    for path in (DATA / "web_dev.jsonl", DATA / "quality_dev.jsonl", REPO / "configs" / "sample" / "web.jsonl.gz"):
        docs += [(f"{path.name}/{i}", "en", r["text"]) for i, r in jsonl_rows(path)]
    for i, (_, r) in enumerate(jsonl_rows(DATA / "web_dev.jsonl")):
        text = r["text"]
        half = text[: len(text) // 2]
        docs.append((f"repeat3/{i}", "en", "\n".join([half] * 3 + [text[len(text) // 2:]])))
        docs.append((f"lines2/{i}", "en", "\n".join(ln for line in text.split("\n") for ln in (line, line))))
        words = text.split(" ")
        mid = len(words) // 2
        window = words[20:28 + i % 9]
        docs.append((f"ngram/{i}", "en", " ".join(words[:mid] + window * (2 + i % 7) + words[mid:])))
    by_lang: dict[str, list[str]] = {}
    for _, r in jsonl_rows(DATA / "langid_dev.jsonl"):
        by_lang.setdefault(r["lang"], []).append(r["text"])
    for lang in sorted(by_lang):
        sents = by_lang[lang]
        for k, start in enumerate(range(0, len(sents), 30)):
            chunk = sents[start:start + 30]
            if k % 3 == 0:
                text = " ".join(chunk)
            elif k % 3 == 1:
                text = "\n".join(chunk)
            else:
                text = "\n\n".join(" ".join(chunk[j:j + 3]) for j in range(0, len(chunk), 3))
            docs.append((f"langid/{lang}/{k}", lang, text))
    return docs


def decide(docs) -> dict[str, list]:
    """key -> [reason or None per family in FAMILIES], with the repo's language files."""
    from tokenmill.engine.config import load_config
    from tokenmill.stages.heuristics.stage import check_document

    table = load_config(REPO / "configs" / "quickstart.yaml", check_inputs=False).languages
    stops: dict[str, frozenset] = {}
    out = {}
    for key, lang, text in docs:
        p = table.get(lang)
        if lang not in stops:
            stops[lang] = frozenset(w.lower() for w in p.stopwords)
        out[key] = [check_document(text, p, [fam], stops[lang]) for fam in FAMILIES]
    return out


def main() -> None:
    docs = documents()
    decisions = decide(docs)
    DECISIONS.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(DECISIONS, "wt", encoding="utf-8", compresslevel=9) as fh:
        json.dump({"families": FAMILIES, "decisions": decisions}, fh, separators=(",", ":"), sort_keys=True)
    dropped = sum(any(v) for v in decisions.values())
    print(f"{len(docs):,} documents, {dropped:,} dropped by some family -> {DECISIONS}")


if __name__ == "__main__":
    main()
