"""Heuristic filters (Gopher quality/repetition, C4, FineWeb) per language family.

Every rule fires on a document built to trip it and stays quiet on clean prose. Clean prose is
real: sentences from /work/shared/data/langid_dev.jsonl (lingua test sentences), arranged as
7 paragraphs of 4 sentences, one paragraph per line. Parameters come from the real
configs/languages/<iso>.yaml files.
"""
from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pyarrow as pa
import pytest

from tokenmill.engine.config import load_config
from tokenmill.engine.stage import get_stage_class
from tokenmill.stages.heuristics import rules
from tokenmill.stages.heuristics.stage import ALL_FAMILIES, check_document
from tokenmill.stages.heuristics.words import DocView, is_word, split_words

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEV = DATA / "langid_dev.jsonl"

# language families: Latin, Cyrillic, Arabic, Devanagari, CJK (zh, ja), Hangul, Thai
LANGS = ["en", "de", "fr", "es", "ru", "ar", "hi", "zh", "ja", "ko", "th"]
N_SENTENCES, PER_PARA = 28, 4


# --------------------------------------------------------------------------- fixtures / helpers

@cache
def _table():
    return load_config(REPO / "configs" / "quickstart.yaml", check_inputs=False).languages


def params(iso: str):
    return _table().get(iso)


def stop(p) -> frozenset:
    return frozenset(w.lower() for w in p.stopwords)


@cache
def _sentences() -> dict[str, list[str]]:
    assert DEV.exists(), f"dev data not found at {DEV}"
    out: dict[str, list[str]] = {}
    with open(DEV, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["id"].startswith("lingua-sentences-"):
                out.setdefault(row["lang"], []).append(row["text"])
    return out


def sentences(iso: str) -> list[str]:
    return _sentences()[iso]


def paragraphs(iso: str, n: int = N_SENTENCES, per: int = PER_PARA) -> list[str]:
    s = sentences(iso)[:n]
    return [" ".join(s[i:i + per]) for i in range(0, n, per)]


def clean_doc(iso: str) -> str:
    return "\n".join(paragraphs(iso))


def words_of(text: str, p) -> list[str]:
    return DocView(text, p.word_tokenizer).words


RULE_FN = {
    "gopher_quality": lambda doc, p: rules.gopher_quality(doc, p.gopher_quality, stop(p)),
    "gopher_repetition": lambda doc, p: rules.gopher_repetition(doc, p.gopher_repetition),
    "c4": lambda doc, p: rules.c4(doc, p.c4, p.terminal_punctuation),
    "fineweb": lambda doc, p: rules.fineweb(doc, p.fineweb, p.terminal_punctuation),
}


# --------------------------------------------------------------------------- documents built to trip

def trip_min_doc_words(iso, p):
    return sentences(iso)[0]  # one sentence


def trip_min_avg_word_length(iso, p):
    # s p a c e d - o u t text: every character its own token
    return "\n".join(" ".join(ch for ch in para if not ch.isspace()) for para in paragraphs(iso))


def trip_max_avg_word_length(iso, p):
    if p.word_tokenizer == "whitespace":  # glue every 5 tokens into one "word"
        lines = []
        for para in paragraphs(iso):
            toks = para.split()
            lines.append(" ".join("".join(toks[i:i + 5]) for i in range(0, len(toks), 5)))
        return "\n".join(lines)
    # cjk / thai words are at most 1 / 4 characters: add a block of long Latin tokens (code, URLs)
    n = len(words_of(clean_doc(iso), p))
    long_words = ["internationalization", "telecommunications", "characteristically", "incomprehensibilities"]
    return clean_doc(iso) + "\n" + " ".join(long_words[i % 4] for i in range(2 * n))


def trip_max_symbol_word_ratio(iso, p):
    w = words_of(clean_doc(iso), p)
    return clean_doc(iso) + "\n" + " ".join("#" + x for x in w[: len(w) // 3])  # hashtag spam


def trip_max_bullet_lines_ratio(iso, p):
    return "\n".join("• " + s for s in sentences(iso)[:N_SENTENCES])


def trip_max_ellipsis_lines_ratio(iso, p):
    strip = p.terminal_punctuation + ".。"
    return "\n".join(para.rstrip(strip) + "…" for para in paragraphs(iso))


def trip_max_non_alpha_words_ratio(iso, p):
    n = len(words_of(clean_doc(iso), p))
    numbers = [str(10000 + 37 * i) for i in range(n // 2 + 10)]  # distinct, all digits
    return clean_doc(iso) + "\n" + " ".join(numbers) + "."


def trip_min_stop_words(iso, p):
    sw = stop(p)
    joiner = " " if p.word_tokenizer == "whitespace" else ""
    lines = []
    for para in paragraphs(iso):
        toks = DocView(para, p.word_tokenizer).tokens
        lines.append(joiner.join(t for t in toks if t.lower() not in sw))
    return "\n".join(lines)


def trip_dup_para_frac(iso, p):
    ps = paragraphs(iso)
    return "\n\n".join(ps[:4] + [ps[0]] * 3)  # 3 of 7 paragraphs are copies


def trip_dup_line_frac(iso, p):
    s = sentences(iso)
    return "\n".join(s[:12] + [s[0]] * 8)  # 8 of 20 lines are copies


def trip_dup_line_char_frac(iso, p):
    s = sentences(iso)
    long = " ".join(s[20:28])
    return "\n".join(s[:12] + [long] * 3)  # only 2 of 15 lines copied, but long ones


def trip_top_2_gram(iso, p):
    pair = words_of(sentences(iso)[0], p)[:2]
    return clean_doc(iso) + "\n" + " ".join(pair * 150) + "."


def trip_duplicated_5_n_grams(iso, p):
    ps = paragraphs(iso)
    longest = max(sentences(iso)[:N_SENTENCES], key=len)
    ps[3] = ps[3] + " " + " ".join([longest] * 6)  # same line: no duplicate lines, only n-grams
    return "\n".join(ps)


def trip_lorem_ipsum(iso, p):
    return clean_doc(iso) + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit."


def trip_curly_bracket(iso, p):
    ps = paragraphs(iso)
    return "\n".join(ps[:3] + ["{{ page.title }}"] + ps[3:])


def trip_no_terminal_punctuation(iso, p):
    return "\n".join(para + " 2024" for para in paragraphs(iso))  # no line ends a sentence


def trip_short_line_ratio(iso, p):
    limit = p.fineweb.short_line_length
    lines, cur = [], []
    for w in words_of(clean_doc(iso), p):
        if cur and len(" ".join(cur + [w])) + 1 > limit:
            lines.append(" ".join(cur) + ".")
            cur = []
        cur.append(w)
    lines.append(" ".join(cur) + ".")
    return "\n".join(lines)


def trip_char_dup_ratio(iso, p):
    ps = paragraphs(iso)
    return "\n".join(ps + [ps[2]])


def trip_list_ratio(iso, p):
    return ("\n" * 80).join(paragraphs(iso))  # far more newlines than words


# (family, expected check, builder, languages where it applies)
NO_CJK = [item for item in LANGS if item not in ("zh", "ja")]  # cjk: min_avg_word_length is 1.0, cannot go lower
NO_TH = [item for item in LANGS if item != "th"]  # th: rule switched off in th.yaml
CASES = [
    ("gopher_quality", "min_doc_words", trip_min_doc_words, LANGS),
    ("gopher_quality", "min_avg_word_length", trip_min_avg_word_length, NO_CJK),
    ("gopher_quality", "max_avg_word_length", trip_max_avg_word_length, LANGS),
    ("gopher_quality", "max_symbol_word_ratio", trip_max_symbol_word_ratio, LANGS),
    ("gopher_quality", "max_bullet_lines_ratio", trip_max_bullet_lines_ratio, LANGS),
    ("gopher_quality", "max_ellipsis_lines_ratio", trip_max_ellipsis_lines_ratio, LANGS),
    ("gopher_quality", "max_non_alpha_words_ratio", trip_max_non_alpha_words_ratio, LANGS),
    ("gopher_quality", "min_stop_words", trip_min_stop_words, NO_TH),
    ("gopher_repetition", "dup_para_frac", trip_dup_para_frac, LANGS),
    ("gopher_repetition", "dup_line_frac", trip_dup_line_frac, LANGS),
    ("gopher_repetition", "dup_line_char_frac", trip_dup_line_char_frac, LANGS),
    ("gopher_repetition", "top_2_gram", trip_top_2_gram, LANGS),
    ("gopher_repetition", "duplicated_5_n_grams", trip_duplicated_5_n_grams, LANGS),
    ("c4", "lorem_ipsum", trip_lorem_ipsum, LANGS),
    ("c4", "curly_bracket", trip_curly_bracket, LANGS),
    ("c4", "too_few_sentences", trip_no_terminal_punctuation, NO_TH),
    ("fineweb", "line_punct_ratio", trip_no_terminal_punctuation, NO_TH),
    ("fineweb", "short_line_ratio", trip_short_line_ratio, LANGS),
    ("fineweb", "char_dup_ratio", trip_char_dup_ratio, LANGS),
    ("fineweb", "list_ratio", trip_list_ratio, LANGS),
]
TRIP_PARAMS = [
    pytest.param(iso, fam, check, build, id=f"{iso}-{fam}-{check}")
    for fam, check, build, langs in CASES for iso in langs
]


# --------------------------------------------------------------------------- clean prose is kept

@pytest.mark.parametrize("iso", LANGS)
def test_clean_prose_is_kept(iso):
    p = params(iso)
    text = clean_doc(iso)
    assert check_document(text, p, ALL_FAMILIES, stop(p)) is None
    doc = DocView(text, p.word_tokenizer)
    for fam, fn in RULE_FN.items():
        assert fn(doc, p) is None, fam


@pytest.mark.parametrize("iso", LANGS)
@pytest.mark.parametrize("start", [28, 52])
def test_other_clean_windows_are_kept(iso, start):
    """Not one lucky document: further windows of the dev sentences are kept too."""
    p = params(iso)
    s = sentences(iso)[start:start + N_SENTENCES]
    assert len(s) == N_SENTENCES
    text = "\n".join(" ".join(s[i:i + PER_PARA]) for i in range(0, N_SENTENCES, PER_PARA))
    assert check_document(text, p, ALL_FAMILIES, stop(p)) is None


@pytest.mark.parametrize("iso", LANGS)
def test_clean_prose_kept_as_blank_line_paragraphs_of_three(iso):
    p = params(iso)
    s = sentences(iso)[:27]
    text = "\n\n".join(" ".join(s[i:i + 3]) for i in range(0, 27, 3))
    assert check_document(text, p, ALL_FAMILIES, stop(p)) is None


# --------------------------------------------------------------------------- each rule fires

@pytest.mark.parametrize("iso,family,check,build", TRIP_PARAMS)
def test_rule_fires_on_document_built_to_trip_it(iso, family, check, build):
    p = params(iso)
    text = build(iso, p)
    # the rule function returns the bare check name ...
    assert RULE_FN[family](DocView(text, p.word_tokenizer), p) == check
    # ... check_document prefixes the family
    assert check_document(text, p, [family], stop(p)) == f"{family}:{check}"


@pytest.mark.parametrize("iso", ["en", "ru", "zh"])
def test_max_doc_words(iso):
    p = params(iso)
    base = clean_doc(iso)
    n = len(words_of(base, p))
    text = "\n".join([base] * (p.gopher_quality.max_doc_words // n + 1))
    assert len(words_of(text, p)) > p.gopher_quality.max_doc_words
    assert check_document(text, p, ["gopher_quality"], stop(p)) == "gopher_quality:max_doc_words"


@pytest.mark.parametrize("iso", ["en", "de", "ru", "ar", "hi", "zh", "ko", "th"])
def test_whole_pipeline_order_names_the_first_failing_family(iso):
    """With all families, a lorem-ipsum page (otherwise clean) is rejected by c4, bullets by gopher_quality."""
    p = params(iso)
    assert check_document(trip_lorem_ipsum(iso, p), p, ALL_FAMILIES, stop(p)) == "c4:lorem_ipsum"
    assert check_document(trip_max_bullet_lines_ratio(iso, p), p, ALL_FAMILIES, stop(p)) == \
        "gopher_quality:max_bullet_lines_ratio"
    assert check_document(trip_dup_para_frac(iso, p), p, ALL_FAMILIES, stop(p)) == "gopher_repetition:dup_para_frac"


# --------------------------------------------------------------------------- per-language switches

def test_thai_switches_off_sentence_punctuation_and_stopword_rules():
    p = params("th")
    assert p.word_tokenizer == "thai" and p.stopwords == [] and p.gopher_quality.min_stop_words == 0
    assert p.c4.min_sentences == 0 and p.fineweb.line_punct_thr == 0.0
    no_punct = trip_no_terminal_punctuation("th", p)
    assert rules.c4(DocView(no_punct, "thai"), p.c4, p.terminal_punctuation) is None
    assert rules.fineweb(DocView(no_punct, "thai"), p.fineweb, p.terminal_punctuation) is None
    assert check_document(trip_min_stop_words("th", p), p, ["gopher_quality"], stop(p)) is None
    # the same unpunctuated text under English parameters is rejected
    en = params("en")
    assert check_document(no_punct, en, ["fineweb"], stop(en)) == "fineweb:line_punct_ratio"


def test_cjk_word_length_limits_differ_from_latin():
    zh, en = params("zh"), params("en")
    # English prose: kept by en, too long per "word" for zh's character-word limits
    assert check_document(clean_doc("en"), en, ["gopher_quality"], stop(en)) is None
    assert check_document(clean_doc("en"), zh, ["gopher_quality"], stop(zh)) == "gopher_quality:max_avg_word_length"
    # Chinese prose is kept by zh; zh needs 100 character-words, not 50
    assert zh.gopher_quality.min_doc_words == 100
    short = "".join(sentences("zh"))[:80] + "。"
    assert len(words_of(short, zh)) < 100
    assert check_document(short, zh, ["gopher_quality"], stop(zh)) == "gopher_quality:min_doc_words"


def test_zh_short_line_length_is_per_language():
    zh, en = params("zh"), params("en")
    assert zh.fineweb.short_line_length == 15 and en.fineweb.short_line_length == 30
    # 21-character Chinese lines carry about a 40-character English line's content: not short for zh ...
    lines = [s[:20] + "。" for s in sentences("zh")[:40] if len(s) >= 24][:24]
    assert len(lines) == 24
    text = "\n".join(lines)
    assert check_document(text, zh, ["fineweb"], stop(zh)) is None
    # ... but all short with the Latin default of 30 characters
    zh30 = zh.model_copy(update={"fineweb": zh.fineweb.model_copy(update={"short_line_length": 30})})
    assert check_document(text, zh30, ["fineweb"], stop(zh)) == "fineweb:short_line_ratio"


def test_overridden_threshold_is_used():
    """A LanguageParams with a changed threshold changes the decision (the rules read params, not constants)."""
    p = params("en")
    tight = p.model_copy(update={"gopher_quality": p.gopher_quality.model_copy(update={"max_doc_words": 100})})
    assert check_document(clean_doc("en"), tight, ["gopher_quality"], stop(p)) == "gopher_quality:max_doc_words"
    assert check_document(clean_doc("en"), p, ["gopher_quality"], stop(p)) is None


# --------------------------------------------------------------------------- word splitter

def test_devanagari_words_are_whole_words():
    assert split_words("यह परीक्षण है") == ["यह", "परीक्षण", "है"]
    assert DocView("यह परीक्षण है।", "whitespace").words == ["यह", "परीक्षण", "है"]


def test_other_space_delimited_scripts():
    assert DocView("هذا نص عربي قصير.", "whitespace").words == ["هذا", "نص", "عربي", "قصير"]
    assert DocView("Это короткий текст.", "whitespace").words == ["Это", "короткий", "текст"]
    assert DocView("한국어 문장입니다.", "whitespace").words == ["한국어", "문장입니다"]
    assert DocView("Größe, Übermaß und café!", "whitespace").words == ["Größe", "Übermaß", "und", "café"]


def test_cjk_splits_into_single_characters():
    assert DocView("我们是中国人。", "cjk").words == list("我们是中国人")
    assert DocView("日本語のテキストです。", "cjk").words == list("日本語のテキストです")
    # non-CJK runs inside CJK text stay whole
    assert DocView("我用Python 3写代码", "cjk").words == ["我", "用", "Python", "3", "写", "代", "码"]
    for iso in ("zh", "ja"):
        han_kana = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")
        words = words_of(clean_doc(iso), params(iso))
        assert all(len(w) == 1 for w in words if han_kana.search(w))


def test_thai_makes_nonempty_pseudo_words():
    text = "ภาษาไทยเป็นภาษาที่สวยงาม"
    words = DocView(text, "thai").words
    assert words and all(1 <= len(w) <= 4 for w in words)
    assert "".join(words) == text
    clean = clean_doc("th")
    words = words_of(clean, params("th"))
    assert len(words) > 100 and all(w for w in words)
    thai = re.compile(r"^[\u0e00-\u0e7f]+$")
    assert all(len(w) <= 4 for w in words if thai.match(w))


def test_punctuation_runs_are_not_words():
    text = "Hello, world... -- !!! ok? «quoted» — fin"
    toks = split_words(text)
    assert toks == ["Hello", ",", "world", "...", "--", "!!!", "ok", "?", "«", "quoted", "»", "—", "fin"]
    assert DocView(text, "whitespace").words == ["Hello", "world", "ok", "quoted", "fin"]
    for sym in ("...", "…", "--", "—", "!!!", "«»", "#", "。", "、", "।"):
        assert not is_word(sym), sym
    assert DocView("。、！？……", "cjk").words == []
    assert DocView("... !!! ???", "thai").words == []


# --------------------------------------------------------------------------- regressions

def test_min_doc_words_zero_and_document_without_words():
    p = params("en")
    p0 = p.model_copy(update={"gopher_quality": p.gopher_quality.model_copy(update={"min_doc_words": 0})})
    why = check_document("!!! ??? ...", p0, ["gopher_quality"], stop(p0))
    assert isinstance(why, str) and why.startswith("gopher_quality:")


def test_c4_does_not_count_mid_sentence_brackets_as_sentences():
    p = params("en")
    one_sentence = "Buy (a) cheap (b) pills (c) online (d) now."
    assert rules.c4(DocView(one_sentence, "whitespace"), p.c4, p.terminal_punctuation) == "too_few_sentences"


# --------------------------------------------------------------------------- the rules as their papers state them

def _en_sentences(n: int, start: int = 0) -> list[str]:
    return sentences("en")[start:start + n]


def test_c4_line_rules_skip_lines_without_dropping_the_page():
    """C4 removes a line with "javascript", a policy phrase or an ellipsis at its end; it does not
    drop the page (only lorem ipsum and '{' do), so such lines just do not count as sentences."""
    p = params("en")
    five = _en_sentences(5)
    c4 = lambda text: rules.c4(DocView(text, "whitespace"), p.c4, p.terminal_punctuation)  # noqa: E731
    assert c4("\n".join(five)) is None
    js = "Please enable JavaScript in your browser to see this page."
    policy = "By using this site you agree to our privacy policy and terms."
    ellipsis = "And the story goes on and on and on..."
    for extra in (js, policy, ellipsis):
        assert c4("\n".join(five[:4] + [extra])) == "too_few_sentences", extra
        assert c4("\n".join(five + [extra])) is None, extra   # the line is skipped, the page kept
    off = p.c4.model_copy(update={"filter_javascript": False, "filter_policy": False})
    assert rules.c4(DocView("\n".join(five[:4] + [js]), "whitespace"), off, p.terminal_punctuation) is None


def test_c4_citations_are_removed_before_the_end_of_line_check():
    p = params("en")
    five = [s + "[12]" for s in _en_sentences(5)]
    assert rules.c4(DocView("\n".join(five), "whitespace"), p.c4, p.terminal_punctuation) is None
    no_end = p.c4.model_copy(update={"filter_no_terminal_punct": False})
    unpunctuated = "\n".join(s.rstrip(".!?") + " and more words" for s in _en_sentences(5))
    assert rules.c4(DocView(unpunctuated, "whitespace"), p.c4, p.terminal_punctuation) == "too_few_sentences"
    assert rules.c4(DocView(unpunctuated, "whitespace"), no_end, p.terminal_punctuation) is None


def test_gopher_hash_and_ellipsis_ratios_are_separate():
    """"symbol-to-word ratio greater than 0.1 for either the hash symbol or the ellipsis": 6% of
    each (12% together) keeps the page."""
    p = params("en")
    words = " ".join(_en_sentences(12)).split()[:100]
    text = " #" * 6 + " ..." * 6 + " " + " ".join(words)
    assert rules.gopher_quality(DocView(text, "whitespace"), p.gopher_quality, stop(p)) is None
    text = " ".join(words) + " #" * 11
    assert rules.gopher_quality(DocView(text, "whitespace"), p.gopher_quality, stop(p)) == "max_symbol_word_ratio"


def test_gopher_stop_words_are_distinct_words():
    """"at least two of the following words": one stop word said many times is not enough."""
    p = params("en")
    body = " ".join(f"Green{i} apples grow quickly" for i in range(20))
    one = body + " the" * 10 + "."
    two = body + " the" * 10 + " With."
    assert rules.gopher_quality(DocView(one, "whitespace"), p.gopher_quality, stop(p)) == "min_stop_words"
    assert rules.gopher_quality(DocView(two, "whitespace"), p.gopher_quality, stop(p)) is None


def test_fineweb_line_punctuation_needs_a_mark_and_thresholds_are_strict():
    p = params("en")
    fw = lambda text: rules.fineweb(DocView(text, "whitespace"), p.fineweb, p.terminal_punctuation)  # noqa: E731
    long = "a line that is certainly longer than thirty characters"
    # a closing bracket or quote alone ends no sentence; after a mark it does
    assert fw("\n".join([f"{long} (b)"] * 1 + [f"{long} {i}" for i in range(9)])) == "line_punct_ratio"
    assert fw("\n".join([f'{long} "end."'] + [f"{long} {i}" for i in range(7)])) is None
    # exactly 2/3 short lines is not more than 0.67 ... nor is 0.67 itself; 0.68 is
    p67 = p.fineweb.model_copy(update={"short_line_thr": 0.5})
    half = "\n".join([f"{long} {i}." for i in range(2)] + ["short one.", "short two."])
    assert rules.fineweb(DocView(half, "whitespace"), p67, p.terminal_punctuation) is None
    p49 = p.fineweb.model_copy(update={"short_line_thr": 0.49})
    assert rules.fineweb(DocView(half, "whitespace"), p49, p.terminal_punctuation) == "short_line_ratio"


# --------------------------------------------------------------------------- the Stage on Arrow

def _batch(rows):
    return pa.table({
        "id": pa.array([r[0] for r in rows], pa.string()),
        "text": pa.array([r[1] for r in rows], pa.large_string()),
        "source": pa.array(["test"] * len(rows), pa.string()),
        "url": pa.array([f"https://example.org/{r[0]}" for r in rows], pa.string()),
        "meta": pa.array(['{"k": 1}'] * len(rows), pa.string()),
        "language": pa.array([r[2] for r in rows], pa.string()),
    })


def _stage(type_name="heuristics", **kw):
    cls = get_stage_class(type_name)
    stage = cls(cls.Params.model_validate(kw), _table())
    stage.setup()
    return stage


def test_heuristics_stage_on_arrow_batch():
    rows = [  # id, text, language, expected reject_reason (None = kept)
        ("en-clean", clean_doc("en"), "en", None),
        ("de-clean", clean_doc("de"), "de", None),
        ("ru-lorem", trip_lorem_ipsum("ru", params("ru")), "ru", "c4:lorem_ipsum"),
        ("ar-clean", clean_doc("ar"), "ar", None),
        ("hi-bullets", trip_max_bullet_lines_ratio("hi", params("hi")), "hi", "gopher_quality:max_bullet_lines_ratio"),
        ("zh-clean", clean_doc("zh"), "zh", None),
        ("zh-dup", trip_dup_para_frac("zh", params("zh")), "zh", "gopher_repetition:dup_para_frac"),
        ("ja-clean", clean_doc("ja"), "ja", None),
        ("ko-list", trip_list_ratio("ko", params("ko")), "ko", "fineweb:list_ratio"),
        ("th-clean", clean_doc("th"), "th", None),
        ("en-nostop", trip_min_stop_words("en", params("en")), "en", "gopher_quality:min_stop_words"),
        ("fr-curly", trip_curly_bracket("fr", params("fr")), "fr", "c4:curly_bracket"),
        ("es-empty", "", "es", "gopher_quality:min_doc_words"),
    ]
    batch = _batch(rows)
    out = _stage()(batch)
    assert out.num_rows == batch.num_rows
    for col in ("id", "text", "source", "url", "meta", "language"):
        assert out[col].equals(batch[col]), col
    got = dict(zip(out["id"].to_pylist(), zip(out["reject_stage"].to_pylist(), out["reject_reason"].to_pylist())))
    for rid, _, _, want in rows:
        stage, reason = got[rid]
        if want is None:
            assert (stage, reason) == (None, None), rid
        else:
            assert (stage, reason) == ("heuristics", want), rid


def test_heuristics_stage_uses_each_rows_language():
    """The same English text: kept as en, rejected as zh (character words) in the same batch."""
    text = clean_doc("en")
    out = _stage()(_batch([("a", text, "en", None), ("b", text, "zh", None)]))
    assert out["reject_reason"].to_pylist() == [None, "gopher_quality:max_avg_word_length"]


def test_heuristics_stage_without_language_column_uses_defaults():
    batch = _batch([("a", clean_doc("en"), None, None)]).drop_columns(["language"])
    out = _stage()(batch)
    assert out["reject_reason"].to_pylist() == [None]
    assert out.column_names[:5] == ["id", "text", "source", "url", "meta"]


def test_heuristics_stage_keeps_earlier_rejects():
    batch = _batch([("a", "Lorem ipsum.", "en", None), ("b", "Lorem ipsum.", "en", None)])
    batch = batch.append_column("reject_stage", pa.array(["langid", None], pa.string()))
    batch = batch.append_column("reject_reason", pa.array(["low_language_score", None], pa.string()))
    out = _stage()(batch)
    assert out["reject_stage"].to_pylist() == ["langid", "heuristics"]
    assert out["reject_reason"].to_pylist()[0] == "low_language_score"
    assert out["reject_reason"].to_pylist()[1].startswith(("gopher_", "c4:", "fineweb:"))


def test_heuristics_stage_rules_subset_and_single_family_stages():
    doc = trip_lorem_ipsum("en", params("en"))
    batch = _batch([("a", doc, "en", None)])
    assert _stage(rules=["fineweb"])(batch)["reject_reason"].to_pylist() == [None]
    assert _stage(rules=["c4"])(batch)["reject_reason"].to_pylist() == ["c4:lorem_ipsum"]
    out = _stage("c4_quality")(batch)
    assert out["reject_stage"].to_pylist() == ["c4_quality"]
    assert out["reject_reason"].to_pylist() == ["c4:lorem_ipsum"]
    assert _stage("gopher_quality")(batch)["reject_reason"].to_pylist() == [None]
