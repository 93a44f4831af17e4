"""Benchmark (decisions, not speed): how often tokenmill's heuristics decide what datatrove 0.10.1's
filters decide -- the code FineWeb was made with, default settings -- on English web pages, per
rule family and per rule, with examples of each kind of disagreement.

    python bench/heuristics_agreement.py                       # web_dev + quality_dev + the sample pages
    python bench/heuristics_agreement.py --examples 3 --json bench/heuristics_agreement.json

Needs the bench extra (datatrove[processing] 0.10.1 with spaCy for its English word tokenizer).

Documents: English pages (fastText lid.176 says ``en``) of shared/data/web_dev.jsonl,
shared/data/quality_dev.jsonl and configs/sample/web.jsonl.gz. Each family is checked on every
document on its own (not in a chain), on both sides:

- tokenmill: ``stages/heuristics/rules.py`` with the English language file's parameters
  (``gopher_quality``, ``gopher_repetition``, ``c4``, ``fineweb``); a reason is ``family:check``.
- datatrove: ``GopherQualityFilter()``, ``GopherRepetitionFilter()``, ``C4QualityFilter()``,
  ``FineWebQualityFilter()``, each ``filter(Document)``: True keeps, ``(False, reason)`` drops.

Printed: per family the share of documents where both keep or both drop (agreement), the
documents only datatrove drops and only tokenmill drops, by the rule that dropped them, with
``--examples`` ids per rule; and the same over all four families in a chain (a document is kept
when every family keeps it), the figure the issue quotes (89.1% on its held-out pages).
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
DATA = REPO.parent / "shared" / "data"
SOURCES = [DATA / "web_dev.jsonl", DATA / "quality_dev.jsonl", REPO / "configs" / "sample" / "web.jsonl.gz"]
FAMILIES = ("gopher_quality", "gopher_repetition", "c4", "fineweb")


def _records(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            r = json.loads(line)
            if isinstance(r.get("text"), str) and r["text"].strip():
                yield {"id": str(r.get("id") or f"{path.name}:{i}"), "text": r["text"]}


def english_pages() -> list[dict]:
    """The pages tokenmill's langid stage (fastText lid.176) labels ``en``."""
    import pyarrow as pa

    from tokenmill.engine.config import build_pipeline

    recs = [r for src in SOURCES if src.exists() for r in _records(src)]
    pipeline = build_pipeline({"name": "agree", "input": {"paths": [str(SOURCES[0])]}, "output": {"path": "/tmp/x"},
                               "stages": [{"type": "langid"}]})
    stage = pipeline.stages[0].build(pipeline.languages)
    stage.setup()
    langs, _ = stage.predict(pa.array([r["text"] for r in recs], pa.large_string()))
    return [r for r, lang in zip(recs, langs) if lang == "en"]


def tokenmill_checks():
    """family -> fn(text) -> reason or None, with the English language file's parameters."""
    from tokenmill.engine.config import build_pipeline
    from tokenmill.stages.heuristics import rules
    from tokenmill.stages.heuristics.words import DocView

    pipeline = build_pipeline({"name": "agree", "input": {"paths": [str(SOURCES[0])]}, "output": {"path": "/tmp/x"},
                               "stages": [{"type": "heuristics"}]})
    p = pipeline.languages.get("en")
    stop = frozenset(w.lower() for w in p.stopwords)

    def run(family: str, text: str):
        doc = DocView(text, p.word_tokenizer)
        if family == "gopher_quality":
            return rules.gopher_quality(doc, p.gopher_quality, stop)
        if family == "gopher_repetition":
            return rules.gopher_repetition(doc, p.gopher_repetition)
        if family == "c4":
            return rules.c4(doc, p.c4, p.terminal_punctuation)
        return rules.fineweb(doc, p.fineweb, p.terminal_punctuation)

    return run


def datatrove_checks():
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    filters = {"gopher_quality": GopherQualityFilter(), "gopher_repetition": GopherRepetitionFilter(),
               "c4": C4QualityFilter(), "fineweb": FineWebQualityFilter()}

    def run(family: str, doc_id: str, text: str):
        res = filters[family].filter(Document(text=text, id=doc_id))
        if res is True or (isinstance(res, tuple) and res[0]):
            return None
        return res[1] if isinstance(res, tuple) else "dropped"

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=3, help="document ids printed per disagreeing rule")
    ap.add_argument("--limit", type=int, default=0, help="only the first N English pages (0: all)")
    ap.add_argument("--json", default=str(HERE.with_suffix(".json")))
    a = ap.parse_args()
    t0 = time.time()
    docs = english_pages()
    if a.limit:
        docs = docs[:a.limit]
    tm, dt = tokenmill_checks(), datatrove_checks()
    per = {f: {"agree": 0, "only_datatrove": Counter(), "only_tokenmill": Counter(), "examples": defaultdict(list)}
           for f in FAMILIES}
    chain = {"agree": 0, "only_datatrove": 0, "only_tokenmill": 0}
    for d in docs:
        drop_t, drop_d = False, False
        for f in FAMILIES:
            rt, rd = tm(f, d["text"]), dt(f, d["id"], d["text"])
            drop_t |= rt is not None
            drop_d |= rd is not None
            s = per[f]
            if (rt is None) == (rd is None):
                s["agree"] += 1
                continue
            key, label = ("only_datatrove", f"{f}:{rd}") if rd is not None else ("only_tokenmill", f"{f}:{rt}")
            s[key][label] += 1
            if len(s["examples"][(key, label)]) < a.examples:
                s["examples"][(key, label)].append(d["id"])
        chain["agree" if drop_t == drop_d else ("only_datatrove" if drop_d else "only_tokenmill")] += 1
    n = len(docs)
    print(f"{n:,} English pages ({', '.join(s.name for s in SOURCES if s.exists())}); {time.time() - t0:.0f} s")
    print(f"all four families in a chain: agreement {chain['agree'] / n:.4f}; only datatrove drops "
          f"{chain['only_datatrove']}, only tokenmill drops {chain['only_tokenmill']}")
    out = {"docs": n, "chain": chain, "families": {}}
    for f in FAMILIES:
        s = per[f]
        print(f"\n{f}: agreement {s['agree'] / n:.4f}")
        for key in ("only_datatrove", "only_tokenmill"):
            for label, count in s[key].most_common():
                print(f"  {key:<15} {count:>5}  {label}   e.g. {', '.join(s['examples'][(key, label)])}")
        out["families"][f] = {"agreement": s["agree"] / n, "only_datatrove": dict(s["only_datatrove"]),
                              "only_tokenmill": dict(s["only_tokenmill"]),
                              "examples": {f"{k}:{lab}": v for (k, lab), v in s["examples"].items()}}
    Path(a.json).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    sys.exit(main())
