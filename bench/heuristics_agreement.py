"""Benchmark (decisions, not speed): how often tokenmill's heuristics decide what datatrove 0.10.1's
filters decide -- the code FineWeb was made with, default settings -- on English web pages, per
rule family and per rule, with examples of each kind of disagreement.

    python bench/heuristics_agreement.py                       # web_dev + quality_dev + the sample pages
    python bench/heuristics_agreement.py --examples 3 --json bench/heuristics_agreement.json
    python bench/heuristics_agreement.py --compat datatrove     # tokenmill's compat: datatrove mode
    python bench/heuristics_agreement.py --compat datatrove --store tests/data/datatrove_decisions.json.gz

Needs the bench extra (datatrove[processing] 0.10.1 with spaCy for its English word tokenizer).

Documents: English pages (fastText lid.176 says ``en``) of shared/data/web_dev.jsonl,
shared/data/quality_dev.jsonl and configs/sample/web.jsonl.gz. Each family is checked on every
document on its own (not in a chain), on both sides:

- tokenmill: ``stages/heuristics/rules.py`` with the English language file's parameters
  (``gopher_quality``, ``gopher_repetition``, ``c4``, ``fineweb``); a reason is ``family:check``.
- datatrove: ``GopherQualityFilter()``, ``GopherRepetitionFilter()``, ``C4QualityFilter()``,
  ``FineWebQualityFilter()``, each ``filter(Document)``: True keeps, ``(False, reason)`` drops.

With ``--compat datatrove`` the tokenmill side is ``stages/heuristics/datatrove_compat.py`` (the
``compat: datatrove`` mode), and a drop counts as the same rule when datatrove's reason maps to
tokenmill's check name (``DATATROVE_REASONS``).

Printed: per family the share of documents where both keep or both drop (agreement), the share
where both name the same rule (same rule), the documents only datatrove drops and only tokenmill
drops, by the rule that dropped them, with ``--examples`` ids per rule; and the same for all four
families in a chain, run as each system runs it: datatrove passes one Document through
GopherRepetition -> GopherQuality -> C4 -> FineWeb (C4 rewrites the text FineWeb sees), tokenmill
runs its ``heuristics`` chain (``check_document``; in compat mode FineWeb sees C4's kept lines
too). Also printed: every family alone on the original page, a page dropped when any family drops
it (no C4 rewrite) -- the figure that compares the rules themselves (the issue quoted 89.1% on its
held-out pages).

``--store`` writes datatrove's decisions (per family and chain, by page id) for
tests/test_heuristics_compat.py, which compares the compat mode with them without datatrove.
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
sys.path.insert(0, str(REPO / "tests"))   # heuristics_corpus: the dev pages' reader and the constructed pages


def _records(path: Path):
    """Pages with some text, keyed as the tests key them (tests/heuristics_corpus.py)."""
    from heuristics_corpus import jsonl_rows

    return ({"id": doc_id, "text": r["text"]} for doc_id, r in jsonl_rows(path) if r["text"].strip())


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


def tokenmill_checks(compat: str):
    """(fn(family, text) -> check or None, fn(text) -> family:check of the chain or None), with the
    English language file's parameters."""
    from tokenmill.engine.config import build_pipeline
    from tokenmill.stages.heuristics import datatrove_compat, rules
    from tokenmill.stages.heuristics.stage import ALL_FAMILIES, check_document
    from tokenmill.stages.heuristics.words import DocView

    pipeline = build_pipeline({"name": "agree", "input": {"paths": [str(SOURCES[0])]}, "output": {"path": "/tmp/x"},
                               "stages": [{"type": "heuristics"}]})
    p = pipeline.languages.get("en")
    stop = frozenset(w.lower() for w in p.stopwords)
    if compat == "datatrove":
        nlp = datatrove_compat.SpacyText()

        def run_compat(family: str, text: str):
            why = datatrove_compat.check_document(text, "en", p, [family], nlp)
            return why.split(":", 1)[1] if why else None

        return run_compat, lambda text: datatrove_compat.check_document(text, "en", p, ALL_FAMILIES, nlp)

    def run(family: str, text: str):
        doc = DocView(text, p.word_tokenizer)
        if family == "gopher_quality":
            return rules.gopher_quality(doc, p.gopher_quality, stop)
        if family == "gopher_repetition":
            return rules.gopher_repetition(doc, p.gopher_repetition)
        if family == "c4":
            return rules.c4(doc, p.c4, p.terminal_punctuation)
        return rules.fineweb(doc, p.fineweb, p.terminal_punctuation)

    return run, lambda text: check_document(text, p, ALL_FAMILIES, stop)


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

    def verdict(res):
        if res is True or (isinstance(res, tuple) and res[0]):
            return None
        return res[1] if isinstance(res, tuple) else "dropped"

    def run(family: str, doc_id: str, text: str):
        return verdict(filters[family].filter(Document(text=text, id=doc_id)))

    def chain(doc_id: str, text: str):
        """One Document through the filters in FineWeb's order (C4 rewrites its text)."""
        doc = Document(text=text, id=doc_id)
        for family in ("gopher_repetition", "gopher_quality", "c4", "fineweb"):
            why = verdict(filters[family].filter(doc))
            if why:
                return f"{family}:{why}"
        return None

    return run, chain


def same_rule(tm_reason, dt_reason) -> bool:
    from tokenmill.stages.heuristics.datatrove_compat import DATATROVE_REASONS

    if tm_reason is None or dt_reason is None:
        return tm_reason is None and dt_reason is None
    fam_t, _, check_t = tm_reason.rpartition(":")
    fam_d, _, check_d = dt_reason.rpartition(":")
    return fam_t == fam_d and check_t == DATATROVE_REASONS.get(check_d, check_d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=3, help="document ids printed per disagreeing rule")
    ap.add_argument("--limit", type=int, default=0, help="only the first N English pages (0: all)")
    ap.add_argument("--compat", choices=["tokenmill", "datatrove"], default="tokenmill",
                    help="tokenmill's heuristics mode to compare (default: %(default)s)")
    ap.add_argument("--constructed", action="store_true",
                    help="also the constructed English pages of tests/heuristics_corpus.py (repeated halves, doubled "
                         "lines, repeated word windows: the repetition rules' edges)")
    ap.add_argument("--store", help="also write datatrove's decisions here (json.gz), for the compat test")
    ap.add_argument("--json", default=str(HERE.with_suffix(".json")))
    a = ap.parse_args()
    t0 = time.time()
    docs = english_pages()
    if a.constructed:
        from heuristics_corpus import documents

        docs += [{"id": key, "text": text} for key, lang, text in documents()
                 if lang == "en" and key.split("/")[0] in ("repeat3", "lines2", "ngram")]
    if a.limit:
        docs = docs[:a.limit]
    (tm, tm_chain), (dt, dt_chain) = tokenmill_checks(a.compat), datatrove_checks()
    per = {f: {"agree": 0, "same_rule": 0, "only_datatrove": Counter(), "only_tokenmill": Counter(),
               "examples": defaultdict(list)} for f in FAMILIES}
    chain = {"agree": 0, "same_rule": 0, "only_datatrove": 0, "only_tokenmill": 0}
    chain_examples = defaultdict(list)
    stored = {}
    either = 0   # each family alone on the page, a page dropped when any family drops it
    for d in docs:
        decided = {}
        any_t = any_d = False
        for f in FAMILIES:
            rt, rd = tm(f, d["text"]), dt(f, d["id"], d["text"])
            decided[f] = rd
            any_t, any_d = any_t or rt is not None, any_d or rd is not None
            s = per[f]
            s["same_rule"] += same_rule(rt and f"{f}:{rt}", rd and f"{f}:{rd}")
            if (rt is None) == (rd is None):
                s["agree"] += 1
                continue
            key, label = ("only_datatrove", f"{f}:{rd}") if rd is not None else ("only_tokenmill", f"{f}:{rt}")
            s[key][label] += 1
            if len(s["examples"][(key, label)]) < a.examples:
                s["examples"][(key, label)].append(d["id"])
        either += any_t == any_d
        ct, cd = tm_chain(d["text"]), dt_chain(d["id"], d["text"])
        decided["chain"] = cd
        stored[d["id"]] = decided
        chain["same_rule"] += same_rule(ct, cd)
        key = "agree" if (ct is None) == (cd is None) else ("only_datatrove" if cd else "only_tokenmill")
        chain[key] += 1
        if key != "agree" and len(chain_examples[key]) < a.examples:
            chain_examples[key].append(f"{d['id']} ({cd or ct})")
    n = len(docs)
    print(f"{n:,} English pages ({', '.join(s.name for s in SOURCES if s.exists())}); tokenmill mode "
          f"compat: {a.compat}; {time.time() - t0:.0f} s")
    print(f"all four families in a chain: agreement {chain['agree'] / n:.4f}, same rule {chain['same_rule'] / n:.4f}; "
          f"only datatrove drops {chain['only_datatrove']}, only tokenmill drops {chain['only_tokenmill']}")
    for key, ids in chain_examples.items():
        print(f"  {key}: e.g. {', '.join(ids)}")
    print(f"each family alone on the page (dropped when any drops): agreement {either / n:.4f}")
    out = {"docs": n, "compat": a.compat, "chain": chain, "families_alone_any": either / n, "families": {}}
    for f in FAMILIES:
        s = per[f]
        print(f"\n{f}: agreement {s['agree'] / n:.4f}, same rule {s['same_rule'] / n:.4f}")
        for key in ("only_datatrove", "only_tokenmill"):
            for label, count in s[key].most_common():
                print(f"  {key:<15} {count:>5}  {label}   e.g. {', '.join(s['examples'][(key, label)])}")
        out["families"][f] = {"agreement": s["agree"] / n, "same_rule": s["same_rule"] / n,
                              "only_datatrove": dict(s["only_datatrove"]), "only_tokenmill": dict(s["only_tokenmill"]),
                              "examples": {f"{k}:{lab}": v for (k, lab), v in s["examples"].items()}}
    Path(a.json).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {a.json}")
    if a.store:
        with gzip.open(a.store, "wt", encoding="utf-8", compresslevel=9) as fh:
            json.dump({"datatrove": "0.10.1", "language": "en", "decisions": stored}, fh, separators=(",", ":"), sort_keys=True)
        print(f"wrote datatrove's decisions on {n:,} pages to {a.store}")


if __name__ == "__main__":
    sys.exit(main())
