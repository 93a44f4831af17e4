"""``compat: datatrove``: the heuristics decide as datatrove 0.10.1's filters do.

datatrove's own decisions on the English dev pages (per family, and the four filters in a chain
as its pipeline runs them, C4 rewriting the text FineWeb sees) are stored in
tests/data/datatrove_decisions.json.gz by ``bench/heuristics_agreement.py --compat datatrove
--store ...`` (datatrove is in the bench extra, not in the test one); here the compat mode is
compared with them rule by rule.
"""
from __future__ import annotations

import gzip
import json
import random
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from heuristics_corpus import jsonl_rows

from tokenmill.engine.config import ConfigError, build_pipeline, load_config
from tokenmill.engine.stage import get_stage_class
from tokenmill.stages.heuristics import datatrove_compat, rules
from tokenmill.stages.heuristics.stage import ALL_FAMILIES, check_document
from tokenmill.stages.heuristics.words import DocView

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
STORED = REPO / "tests" / "data" / "datatrove_decisions.json.gz"
SOURCES = [DATA / "web_dev.jsonl", DATA / "quality_dev.jsonl", REPO / "configs" / "sample" / "web.jsonl.gz"]
FAMILIES = ("gopher_quality", "gopher_repetition", "c4", "fineweb")


def _texts() -> dict[str, str]:
    return {doc_id: r["text"] for path in SOURCES for doc_id, r in jsonl_rows(path)}


@pytest.fixture(scope="module")
def en():
    return load_config(REPO / "configs" / "quickstart.yaml", check_inputs=False).languages.get("en")


@pytest.fixture(scope="module")
def nlp():
    return datatrove_compat.SpacyText()


def _same(ours, theirs) -> bool:
    if ours is None or theirs is None:
        return ours is None and theirs is None
    fam_o, _, check_o = ours.rpartition(":")
    fam_t, _, check_t = theirs.rpartition(":")
    return fam_o == fam_t and check_o == datatrove_compat.DATATROVE_REASONS.get(check_t, check_t)


def _compare(stored: dict, texts: dict, en, nlp) -> tuple[Counter, list]:
    same, differ = Counter(), []
    for doc_id, theirs in stored.items():
        text = texts[doc_id]
        for fam in FAMILIES:
            ours = datatrove_compat.check_document(text, "en", en, [fam], nlp)
            ok = _same(ours, theirs[fam] and f"{fam}:{theirs[fam]}")
            same[fam] += ok
            if not ok:
                differ.append((doc_id, fam, ours, theirs[fam]))
        ours = datatrove_compat.check_document(text, "en", en, ALL_FAMILIES, nlp)
        ok = _same(ours, theirs["chain"])
        same["chain"] += ok
        if not ok:
            differ.append((doc_id, "chain", ours, theirs["chain"]))
    return same, differ


def _compare_on_two_cores(stored: dict, texts: dict, en, nlp) -> tuple[Counter, list]:
    """``_compare``, every other page in a child process (spaCy's tokenizer is most of the time)."""
    if len(stored) < 200:
        return _compare(stored, texts, en, nlp)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    items = sorted(stored.items())
    theirs = dict(items[1::2])
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        child = pool.submit(_compare_alone, theirs, {k: texts[k] for k in theirs}, en)
        same, differ = _compare(dict(items[0::2]), texts, en, nlp)
        same_child, differ_child = child.result(timeout=600)
    return same + same_child, differ + differ_child


def _compare_alone(stored: dict, texts: dict, en) -> tuple[Counter, list]:
    return _compare(stored, texts, en, datatrove_compat.SpacyText())


def _stored():
    assert STORED.exists(), f"{STORED} missing: bench/heuristics_agreement.py --compat datatrove --store {STORED}"
    return json.loads(gzip.open(STORED, "rt", encoding="utf-8").read())


@pytest.mark.parametrize("every", [pytest.param(8, id="every-8th-page"),
                                   pytest.param(1, id="every-page", marks=pytest.mark.slow)])
def test_compat_decides_every_stored_page_as_datatrove(en, nlp, every):
    stored = _stored()
    assert stored["datatrove"] == "0.10.1"
    texts = _texts()
    assert len(stored["decisions"]) > 1000 and set(stored["decisions"]) <= set(texts)
    decisions = {k: v for i, (k, v) in enumerate(sorted(stored["decisions"].items())) if i % every == 0}
    # the stored decisions are not trivial: datatrove drops pages by rules of every family
    dropped = Counter(d[f].split(":")[-1] if f == "chain" else f for d in decisions.values() for f in d if d[f])
    assert all(dropped[f] > 10 // every for f in FAMILIES), dropped
    same, differ = _compare_on_two_cores(decisions, texts, en, nlp)
    n = len(decisions)
    for key in (*FAMILIES, "chain"):
        assert same[key] / n >= 0.99, (key, same[key] / n, differ[:5])
    assert len(differ) <= n * 0.002, differ[:10]   # the bench measured 0 of 1,081 (and of 1,182 constructed)


# --------------------------------------------------------------------------- what the modes mean

COMMA_PROSE = ("The printed version of the Options for Knowledge guide, updated in 2019, lists, for each course, "
               "the level, the hours, the fee, the room, and, where it applies, the teacher. ")


def test_compat_counts_punctuation_as_words_where_tokenmill_does_not(en, nlp):
    """The issue's example: commas and full stops are words to datatrove's Gopher alphabetic rule."""
    text = COMMA_PROSE * 6
    assert rules.gopher_quality(DocView(text, "whitespace"), en.gopher_quality, frozenset(en.stopwords)) is None
    why = datatrove_compat.check_document(text, "en", en, ["gopher_quality"], nlp)
    assert why == "gopher_quality:max_non_alpha_words_ratio"
    words = nlp.words(text, "en")
    assert "," in words and "." in words and "\n" not in words


def test_compat_fineweb_sees_the_lines_c4_kept(en, nlp):
    """In datatrove's pipeline C4 rewrites the text: short unpunctuated menu lines it removed no
    longer count against FineWeb's short-line rule. Alone, FineWeb drops the page."""
    prose = [s.strip() + "." for s in COMMA_PROSE.split(". ") if s.strip()]
    body = [f"{prose[0]} Part {i} of the guide explains the rules for course number {i}." for i in range(6)]
    menu = [f"Menu item {i}" for i in range(14)]
    text = "\n".join(menu + body)
    assert datatrove_compat.check_document(text, "en", en, ["fineweb"], nlp) == "fineweb:short_line_ratio"
    assert datatrove_compat.check_document(text, "en", en, ["c4", "fineweb"], nlp) is None
    # tokenmill's own rules judge the whole page (it never edits a document): FineWeb drops it
    stop = frozenset(w.lower() for w in en.stopwords)
    assert check_document(text, en, ["c4", "fineweb"], stop) == "fineweb:short_line_ratio"


def test_compat_is_a_parameter_of_every_heuristics_stage(en):
    table = load_config(REPO / "configs" / "quickstart.yaml", check_inputs=False).languages
    text = (COMMA_PROSE * 6).strip()
    batch = pa.table({"id": ["a"], "text": pa.array([text], pa.large_string()), "language": ["en"]})
    for type_name in ("heuristics", "gopher_quality"):
        cls = get_stage_class(type_name)
        decided = {}
        for compat in ("tokenmill", "datatrove"):
            only = {"rules": ["gopher_quality"]} if type_name == "heuristics" else {}   # the text repeats itself
            stage = cls(cls.Params.model_validate({"compat": compat, **only}), table)
            stage.setup()
            decided[compat] = stage(batch)["reject_reason"].to_pylist()[0]
        assert decided == {"tokenmill": None, "datatrove": "gopher_quality:max_non_alpha_words_ratio"}, type_name


def _config(stage: dict) -> dict:
    return {"name": "c", "input": {"paths": [str(DATA / "web_dev.jsonl")]}, "output": {"path": "/tmp/c"},
            "stages": [stage]}


def test_bad_compat_value_fails_before_any_work():
    with pytest.raises(ConfigError) as e:
        build_pipeline(_config({"type": "heuristics", "compat": "fineweb"}))
    assert "compat" in str(e.value) and "datatrove" in str(e.value)


def test_compat_without_spacy_fails_with_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)   # an environment without spaCy: import fails
    with pytest.raises(ConfigError) as e:
        build_pipeline(_config({"type": "c4_quality", "compat": "datatrove"}))
    assert "compat" in str(e.value) and "tokenmill[compat]" in str(e.value)
    build_pipeline(_config({"type": "c4_quality"}))   # the default mode does not need it


def test_a_text_spacy_fails_on_is_rejected_not_raised(en, monkeypatch):
    """Fault injected into spaCy's pipeline for one document: that document is rejected with a
    reason, the others are decided as usual."""
    nlp = datatrove_compat.SpacyText()
    good = (COMMA_PROSE * 6).strip()
    real = nlp.nlp("en")

    class Broken:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, text):
            if "POISON" in text:
                raise ValueError("[E088] Text of length 2000001 exceeds maximum")
            return real(text)

    monkeypatch.setitem(nlp._nlp, "en", Broken())
    assert datatrove_compat.check_document(good + " POISON", "en", en, ALL_FAMILIES, nlp) == \
        "gopher_repetition:spacy_error"
    assert datatrove_compat.check_document(good, "en", en, ["gopher_quality"], nlp) == \
        "gopher_quality:max_non_alpha_words_ratio"


def test_a_language_datatrove_splits_otherwise_warns_and_still_decides(en, caplog):
    """Korean: datatrove uses Kiwi, so compat cannot be exact; it says so, once, and decides with
    spaCy's multi-language tokenizer rather than stopping."""
    nlp = datatrove_compat.SpacyText()
    with caplog.at_level("WARNING", logger=datatrove_compat.log.name):
        why = datatrove_compat.check_document("한국어 문장입니다. " * 3, "ko", en, ["gopher_quality"], nlp)
        datatrove_compat.check_document("다른 문장입니다. " * 3, "ko", en, ["gopher_quality"], nlp)
    assert why == "gopher_quality:min_doc_words"
    warned = [r.getMessage() for r in caplog.records if "'ko'" in r.getMessage()]
    assert len(warned) == 1 and "Kiwi" in warned[0]
    assert datatrove_compat.SpacyText().nlp("de").lang == "de"   # a language datatrove splits with spaCy: exact


# --------------------------------------------------------------------------- README's table, example by example

def _prose_lines(n: int) -> list[str]:
    subjects = ["Green apples", "Old rivers", "Quiet towns", "Bright lamps", "Small boats", "Tall trees",
                "Warm winds", "Long roads", "Fresh bread", "Heavy rains", "Young birds", "Clear lakes"]
    return [f"{subjects[i % 12]} grow quietly near distant hills number {i} while people watch them carefully."
            for i in range(n)]


CASE_STOP = " ".join(f"The {w} grow quickly near rivers with care." for w in
                     ["green apples", "old pears", "red plums", "tall trees", "small herbs", "wild roses",
                      "young vines", "sweet melons"])
_rng = random.Random(0)
CASE_NGRAM = " ".join(f"The {_rng.choice(['cat', 'dog', 'house', 'river', 'tree', 'car', 'book', 'lamp', 'road'])} "
                      f"{_rng.choice(['runs', 'sleeps', 'waits', 'shines', 'falls', 'grows', 'moves', 'stands'])}."
                      for _ in range(120))
CASE_BRACE = "\n".join(_prose_lines(6) + ["body {color: red}"])
CASE_CITATION = "\n".join(f"It rained all day in town {i}. [{i}]" for i in range(6))
CASE_QUOTE = "\n".join(f'Then the teacher number {i} said "yes, that is right."' for i in range(10))
CASE_SPACES = "\n".join(_prose_lines(10) + ["Share this page with all of your friends.",
                                            "   Share this page with all of your friends."])


@pytest.mark.parametrize("family,text,tokenmill,datatrove", [
    ("gopher_quality", CASE_STOP, None, "gopher_quality:min_stop_words"),
    ("gopher_repetition", CASE_NGRAM, None, "gopher_repetition:top_2_gram"),
    ("c4", CASE_BRACE, "c4:curly_bracket", None),
    ("c4", CASE_CITATION, None, "c4:too_few_sentences"),
    ("fineweb", CASE_QUOTE, None, "fineweb:line_punct_ratio"),
    ("fineweb", CASE_SPACES, "fineweb:char_dup_ratio", None),
], ids=["stop-words-any-case", "ngrams-of-words", "brace-anywhere", "citation-then-strip", "closing-quote",
        "stripped-duplicate-lines"])
def test_each_deliberate_difference_of_the_readme_table(en, nlp, family, text, tokenmill, datatrove):
    stop = frozenset(w.lower() for w in en.stopwords)
    assert check_document(text, en, [family], stop) == tokenmill
    assert datatrove_compat.check_document(text, "en", en, [family], nlp) == datatrove
