"""Every heuristic decision on the dev corpus (tests/heuristics_corpus.py) is the stored one:
optimisations of the rules may not move a single decision."""
from __future__ import annotations

import gzip
import json
from collections import Counter

from heuristics_corpus import DECISIONS, FAMILIES, decide, documents


def test_every_decision_on_the_dev_corpus_is_unchanged():
    stored = json.loads(gzip.open(DECISIONS, "rt", encoding="utf-8").read())
    assert tuple(stored["families"]) == FAMILIES
    docs = documents()
    assert len(docs) == len(stored["decisions"]) > 3000
    now = decide(docs)
    moved = Counter()
    examples = []
    for key, old in stored["decisions"].items():
        for fam, a, b in zip(FAMILIES, old, now[key]):
            if a != b:
                moved[(fam, a, b)] += 1
                if len(examples) < 5:
                    examples.append((key, fam, a, b))
    assert not moved, f"decisions moved: {dict(moved)}; e.g. {examples}"
    # the corpus reaches every family's rules, not only the first ones
    reasons = Counter(r.split(":")[1] for rs in stored["decisions"].values() for r in rs if r)
    for check in ("min_doc_words", "max_non_alpha_words_ratio", "min_stop_words", "dup_line_frac",
                  "top_2_gram", "too_few_sentences", "line_punct_ratio", "char_dup_ratio"):
        assert any(r == check for r in reasons), (check, reasons)
    assert any(r.startswith("duplicated_") for r in reasons), reasons
