"""Word tokenizers for scripts without spaces between words (``stages/heuristics/segmenters.py``), on
real UDHR text of each language from ../shared/data/langid_dev.jsonl: Khmer (khmer-nltk), Lao
(LaoNLP), Myanmar (syllables by rule), and Tibetan, which the whitespace split already cuts into
syllables. No letter is lost or added, every piece is a real unit of its script, and the
heuristics see words of a plausible length instead of whole phrases."""
from __future__ import annotations

import json

import pytest
import regex as re

from tokenmill.stages.heuristics.segmenters import syllables
from tokenmill.stages.heuristics.words import DocView, split_words, word_pattern

SCRIPTS = {"km": ("khmer", "Khmer"), "lo": ("lao", "Lao"), "my": ("myanmar", "Myanmar")}


@pytest.fixture(scope="module")
def udhr(shared_data) -> dict[str, str]:
    rows = [json.loads(line) for line in (shared_data / "langid_dev.jsonl").read_text().splitlines()]
    return {lang: "\n".join(r["text"] for r in rows if r["lang"] == lang) for lang in (*SCRIPTS, "bo")}


def letters(text: str, script: str) -> str:
    return "".join(re.findall(rf"(?:(?=\p{{Script={script}}})[\p{{L}}\p{{M}}\p{{N}}])+", text))


@pytest.mark.parametrize("lang", sorted(SCRIPTS))
def test_each_tokenizer_splits_real_text_of_its_language_into_words(udhr, lang):
    name, script = SCRIPTS[lang]
    text = udhr[lang]
    words = word_pattern(name).findall(text)
    spaced = word_pattern("whitespace").findall(text)
    assert len(words) > 3 * len(spaced), (len(words), len(spaced))          # phrases became words
    mine = [w for w in words if re.match(rf"\p{{Script={script}}}", w)]
    assert "".join(mine) == letters(text, script)                            # nothing lost, nothing added
    mean = sum(map(len, mine)) / len(mine)
    assert 1.5 < mean < 8, mean                                              # word-sized pieces
    tokens = split_words(text, name)
    assert len(tokens) > len(words) and all(t.strip() for t in tokens)        # punctuation kept as symbol tokens


def test_known_words_come_out_whole(udhr):
    assert {"សិទ្ធិ", "មនុស្ស"} <= set(word_pattern("khmer").findall(udhr["km"]))      # rights, human
    assert {"ສິດ", "ແລະ"} <= set(word_pattern("lao").findall(udhr["lo"]))            # right, and
    assert {"လူ", "နှင့်"} <= set(word_pattern("myanmar").findall(udhr["my"]))         # person, and


@pytest.mark.parametrize("script, run, cuts", [
    ("Myanmar", "နှင့်ညှဉ်းပန်း", ["နှင့်", "ညှဉ်း", "ပန်း"]),                    # and / oppression: sylbreak's syllables
    ("Myanmar", "လူခပ်သိမ်းတို့သည်", ["လူ", "ခပ်", "သိမ်း", "တို့", "သည်"]),
    ("Khmer", "សិទ្ធិមនុស្ស", ["សិ", "ទ្ធិ", "ម", "នុ", "ស្ស"]),                 # clusters: a stacked consonant stays
    ("Lao", "ເຫດວ່າການຮັບຮູ້", ["ເຫ", "ດ", "ວ່າ", "ກາ", "ນ", "ຮັ", "ບ", "ຮູ້"]),   # a leading vowel keeps its consonant
])
def test_cuts_by_rule(script, run, cuts):
    assert syllables(run, script) == cuts


def test_a_segmenter_that_fails_on_a_run_falls_back_to_the_rule():
    from tokenmill.stages.heuristics.segmenters import Segmented

    def broken(run):
        raise RuntimeError("model error")
    words = Segmented("Myanmar", broken, words_only=True).findall("hello နှင့်ညှဉ်း world")
    assert words == ["hello", "နှင့်", "ညှဉ်း", "world"]


def test_word_shingles_refuse_a_segmenter_tokenizer():
    from tokenmill.stages.dedup.signatures import word_shingle_hashes

    with pytest.raises(ValueError, match="word shingles need a pattern tokenizer"):
        word_shingle_hashes(["some text"], 5, tokenizer="khmer")


def test_tibetan_whitespace_split_gives_syllables(udhr):
    words = word_pattern("whitespace").findall(udhr["bo"])
    assert len(words) > 200 and not any("\u0f0b" in w for w in words)        # the tsheg separates them
    assert sum(map(len, words)) / len(words) < 6


def test_heuristics_count_words_with_the_language_tokenizer(udhr):
    doc = udhr["my"]
    by_space, by_syllable = DocView(doc, "whitespace"), DocView(doc, "myanmar")
    assert len(by_syllable.words) > 3 * len(by_space.words)
    assert sum(map(len, by_syllable.words)) / len(by_syllable.words) < 5 < \
        sum(map(len, by_space.words)) / len(by_space.words)
