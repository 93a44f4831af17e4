"""The calibration rules, each a small function of measured text:

- ``lid_threshold``: FineWeb-2's rule on the web sample's lid scores of the language,
  ``max(0.3, min(0.9, median - std))``, capped so that at most ``clean_share`` (5%) of the clean
  reference documents score below it;
- ``sentence_marks``: the punctuation that ends at least 2% of the reference's sentences joins the
  language's terminal punctuation (C4's sentence count and FineWeb's line rule use it);
- ``learned_stopwords``: a language without stopwords gets its reference's most frequent words;
- ``script_of``: the script most of the reference's letters are in (ISO 15924), and the word
  tokenizer that script needs (``cjk``, ``thai``, ``khmer``, ``lao``, ``myanmar``; else
  ``whitespace``), for a language without a file of its own;
- ``loosen``: while the heuristics reject more than ``max_reject`` of the clean reference
  documents, the check that rejects most of them is loosened just enough (a numeric threshold moved
  to the failing values, a C4 filter turned off), and each step is kept only if the corrupted
  copies are rejected as often as with the shipped values.
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

import numpy as np

FAMILIES = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
#: a failing check -> (family, parameter); ``None`` parameter: the check cannot be loosened
CHECK_PARAMS = {
    "too_few_sentences": ("c4", "min_sentences"), "lorem_ipsum": ("c4", "filter_lorem_ipsum"),
    "curly_bracket": ("c4", "filter_curly_bracket"), "line_punct_ratio": ("fineweb", "line_punct_thr"),
    "short_line_ratio": ("fineweb", "short_line_thr"), "char_dup_ratio": ("fineweb", "char_duplicates_ratio"),
    "list_ratio": ("fineweb", "new_line_ratio"),
}
_NGRAM = re.compile(r"^(top|duplicated)_(\d+)_(?:gram|n_grams)$")
_CLOSERS = "\"'”’»)]》」』）"
_EDGE = "".join(chr(c) for c in range(0x2000, 0x2070)) + "\"'“”‘’«»()[]{}<>.,;:!?¿¡…—–-·*/\\|#"


def fineweb2_lid_threshold(scores) -> float:
    """FineWeb-2's per-language LID threshold: ``max(0.3, min(0.9, median - std))``."""
    s = np.asarray(scores, np.float64)
    return float(max(0.3, min(0.9, np.median(s) - s.std())))


def lid_threshold(sample: list[float], reference: list[float], shipped: float, min_docs: int,
                  clean_share: float = 0.05) -> tuple[float | None, str]:
    """(threshold or None to keep ``shipped``, where it came from): FineWeb-2's rule on the sample's
    scores (the shipped value when the sample has fewer than ``min_docs`` of the language), capped
    at the ``clean_share`` quantile of the clean reference's scores; rounded down to 0.01."""
    if len(sample) >= min_docs:
        value, why = fineweb2_lid_threshold(sample), f"FineWeb-2 rule on {len(sample)} sample documents"
    else:
        value, why = shipped, f"shipped value ({len(sample)} sample documents, fewer than {min_docs})"
    if len(reference) >= min_docs:
        cap = float(np.quantile(np.asarray(reference, np.float64), clean_share, method="lower"))
        if cap < value:
            value, why = cap, why + f", capped at the {clean_share:.0%} quantile of the clean reference's scores"
    value = math.floor(value * 100 + 1e-9) / 100
    return (None, why) if value == shipped else (value, why)


def sentence_marks(sentences: list[str], share: float = 0.02) -> str:
    """Punctuation characters that end at least ``share`` of the sentences (closing quotes and
    brackets looked through)."""
    ends = Counter()
    for s in sentences:
        s = s.rstrip().rstrip(_CLOSERS + " ")
        if s and unicodedata.category(s[-1]).startswith("P"):
            ends[s[-1]] += 1
    return "".join(sorted(c for c, n in ends.items() if n >= share * max(1, len(sentences))))


def learned_stopwords(docs: list[str], n: int = 30, tokenizer: str = "whitespace") -> list[str]:
    """The ``n`` most frequent words of the documents (lower-cased; the tokenizer's words), in order
    of frequency."""
    from tokenmill.stages.heuristics.words import word_pattern

    split = (lambda d: (t.strip(_EDGE) for t in d.split())) if tokenizer == "whitespace" else \
        word_pattern(tokenizer).findall
    counts = Counter(w.lower() for d in docs for w in split(d)
                     if w and not any(unicodedata.category(c)[0] in "NPS" for c in w))
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


#: the first word of a letter's Unicode name -> ISO 15924 script code
SCRIPT_CODES = {
    "LATIN": "Latn", "CYRILLIC": "Cyrl", "GREEK": "Grek", "ARABIC": "Arab", "HEBREW": "Hebr", "ARMENIAN": "Armn",
    "GEORGIAN": "Geor", "DEVANAGARI": "Deva", "BENGALI": "Beng", "GURMUKHI": "Guru", "GUJARATI": "Gujr",
    "ORIYA": "Orya", "TAMIL": "Taml", "TELUGU": "Telu", "KANNADA": "Knda", "MALAYALAM": "Mlym", "SINHALA": "Sinh",
    "THAI": "Thai", "LAO": "Laoo", "TIBETAN": "Tibt", "MYANMAR": "Mymr", "KHMER": "Khmr", "HANGUL": "Hang",
    "CJK": "Hani", "HIRAGANA": "Jpan", "KATAKANA": "Jpan", "ETHIOPIC": "Ethi", "CHEROKEE": "Cher",
    "THAANA": "Thaa", "MONGOLIAN": "Mong", "TIFINAGH": "Tfng", "CANADIAN": "Cans", "VAI": "Vaii", "YI": "Yiii",
    "SYRIAC": "Syrc", "NKO": "Nkoo", "OL": "Olck", "CHAKMA": "Cakm", "BALINESE": "Bali", "JAVANESE": "Java",
}
#: scripts whose words are not separated by spaces -> the word tokenizer that splits them
SCRIPT_TOKENIZERS = {"Hani": "cjk", "Jpan": "cjk", "Thai": "thai", "Khmr": "khmer", "Laoo": "lao",
                     "Mymr": "myanmar"}


def script_of(docs: list[str], sample_chars: int = 200_000) -> tuple[str | None, str]:
    """(ISO 15924 code of the script most letters of the documents are in, or None when unknown;
    the word tokenizer it needs)."""
    counts: Counter = Counter()
    step = max(1, len(docs) // 1000)   # at most ~1,000 documents, each read up to its share of the sample
    for d in docs[::step]:
        for c in d[:max(200, sample_chars // max(1, len(docs[::step])))]:
            if c.isalpha():
                name = unicodedata.name(c, "")
                counts[SCRIPT_CODES.get(name.split(" ", 1)[0])] += 1
    top = counts.most_common(1)[0][0] if counts else None
    return top, SCRIPT_TOKENIZERS.get(top, "whitespace")


def param_of(check: str) -> tuple[str, str, int | None] | None:
    """(family, parameter, n-gram size or None) that a failing check (``family:name``) tests."""
    family, name = check.split(":", 1)
    if name in CHECK_PARAMS:
        return (*CHECK_PARAMS[name], None)
    m = _NGRAM.match(name)
    if m:
        return family, "top_n_grams" if m.group(1) == "top" else "dup_n_grams", int(m.group(2))
    if family in ("gopher_quality", "gopher_repetition") and name != "empty":
        return family, name, None
    return None


def failures(docs: list[str], params, stopwords: frozenset) -> list:
    from tokenmill.stages.heuristics.stage import check_document

    return [check_document(d, params, FAMILIES, stopwords) for d in docs]


def loosen_step(params: dict, check: str, fails: list, allowed: int) -> tuple[dict, str] | None:
    """A copy of ``params`` with ``check`` loosened so that enough of the documents it fails pass
    (all but ``allowed`` of every failure), and what was done; None when it cannot be loosened."""
    target = param_of(check)
    if target is None:
        return None
    family, name, n = target
    mine = [f for f in fails if f == check]
    new = {**params, family: dict(params[family])}
    if all(f.value is None for f in mine):   # a filter: turn it off
        new[family][name] = False
        return new, f"off: it rejected {len(mine)} clean reference documents"
    current = new[family][name][n] if n else new[family][name]
    k = min(len(mine), sum(f is not None for f in fails) - allowed)
    lower = mine[0].value < mine[0].threshold    # a minimum: values below it fail
    values = sorted((f.value for f in mine), reverse=lower)
    value = values[k - 1]
    if isinstance(current, int) and not isinstance(current, bool):
        value = math.floor(value) if lower else math.ceil(value)
    else:
        value = round(math.floor(value * 1e4) / 1e4 if lower else math.ceil(value * 1e4) / 1e4, 4)
    if n:
        new[family][name] = {**new[family][name], n: value}
    else:
        new[family][name] = value
    return new, f"{current} -> {value}: the shipped value rejected {len(mine)} clean reference documents"


def loosen(params: dict, clean: list[str], corrupt: list[str], max_reject: float,
           validate, max_steps: int = 12) -> tuple[dict, dict[str, str]]:
    """Loosen checks (``loosen_step``) while the heuristics reject more than ``max_reject`` of
    ``clean``; a step that lets more of ``corrupt`` through than the starting values do is undone
    and its check left alone. ``validate``: dict -> language parameters. Returns (params, notes by
    ``family.parameter``)."""
    notes: dict[str, str] = {}
    stop = lambda p: frozenset(p.get("stopwords") or [])
    base_corrupt = sum(f is not None for f in failures(corrupt, validate(params), stop(params)))
    frozen: set[str] = set()
    for _ in range(max_steps):
        fails = failures(clean, validate(params), stop(params))
        allowed = int(max_reject * len(clean))
        if sum(f is not None for f in fails) <= allowed:
            break
        ranked = [c for c, _ in Counter(str(f) for f in fails if f is not None).most_common() if c not in frozen]
        if not ranked:
            break
        check = ranked[0]
        step = loosen_step(params, check, fails, allowed)
        target = param_of(check)
        key = f"{target[0]}.{target[1]}" if target else check
        if step is None:
            notes[key] = f"kept: {check} cannot be loosened"
            frozen.add(check)
            continue
        candidate, why = step
        caught = sum(f is not None for f in failures(corrupt, validate(candidate), stop(candidate)))
        if caught < base_corrupt:
            notes[key] = f"kept: loosening it lets {base_corrupt - caught} more corrupted copies through"
            frozen.add(check)
            continue
        params, notes[key] = candidate, why
    return params, notes
