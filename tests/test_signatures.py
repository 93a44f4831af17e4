"""MinHash signatures (stages/dedup/signatures.py) on real documents.

datasketch is the oracle: in ``hash: datasketch`` mode the signatures are bit-identical to
``datasketch.MinHash`` over the same shingles (real web pages, empty, one-word and 1 MB documents,
several num_perm, seeds and schemes), and ``optimal_bands`` is datasketch's (bands, rows). The
fast path is checked against the one-document definition ``shingles()``: the same shingle sets,
equal sets give equal signatures, Jaccard estimates within binomial error of the exact Jaccard,
the same values in a fresh process and under any chunking.

Documents: shared/data/web_dev.jsonl (394 web pages, ~5 KB) and shared/data/langid_dev.jsonl
(sentences in many languages, with ``lang``).
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tokenmill.stages.dedup import signatures as sg
from tokenmill.stages.dedup.signatures import (
    MinHasher,
    band_keys,
    estimated_jaccard,
    optimal_bands,
    shingles,
    word_shingle_hashes,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@cache
def web() -> tuple[str, ...]:
    with open(DATA / "web_dev.jsonl", encoding="utf-8") as fh:
        return tuple(json.loads(line)["text"] for line in fh)


@cache
def by_lang() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(DATA / "langid_dev.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out.setdefault(row["lang"], []).append(row["text"])
    return out


def lang_texts(langs, per_lang: int = 60) -> list[str]:
    table = by_lang()
    return [t for lang in langs for t in table[lang][:per_lang]]


def paragraphs(lang: str, k: int = 12) -> list[str]:
    """Sentences of one language glued into paragraph-sized documents (k sentences each)."""
    sents = by_lang()[lang]
    return [" ".join(sents[i:i + k]) for i in range(0, len(sents) - k + 1, k)][:20]


@cache
def big_doc() -> str:
    """~1 MB: web pages concatenated (real text, many distinct shingles)."""
    out, size = [], 0
    for t in web() * 3:
        out.append(t)
        size += len(t.encode("utf-8"))
        if size >= 1 << 20:
            break
    return "\n".join(out)


EDGE = ["", "   \n\t ", "!!! ... ---", "Word", "two Words", "a b c d", "a b c d e", "A B C D E F"]


def distinct_per_doc(hashes, offsets) -> list[int]:
    return [len(np.unique(hashes[offsets[i]:offsets[i + 1]])) for i in range(len(offsets) - 1)]


# --------------------------------------------------------------------------- the definition

def test_shingles_definition():
    assert sorted(shingles("Hello, World!  foo", 2)) == [b"hello world", b"world foo"]
    assert shingles("One two", 5) == [b"one two"]                 # shorter than ngram: one shingle
    assert shingles("Word", 5) == [b"word"]
    assert shingles("", 5) == [] and shingles("!!! ...", 5) == [] and shingles(None, 5) == []
    assert sorted(shingles("a b a b a", 2)) == [b"a b", b"b a"]   # a set
    assert sorted(shingles("Ab c", 2, mode="char")) == [b"ab", b"bc"]  # whitespace removed
    assert shingles("Ab", 3, mode="char") == [b"ab"]
    assert sorted(shingles("日本語です", 1, tokenizer="cjk")) == sorted(c.encode() for c in "日本語です")
    assert shingles("ภาษาไทยง่าย", 1, tokenizer="thai") == shingles("ภาษา ไทยง ่าย", 1)   # 4-code-point pieces
    with pytest.raises(ValueError):
        shingles("x", 0)
    with pytest.raises(ValueError):
        shingles("x", 5, mode="line")
    with pytest.raises(ValueError):
        shingles("x", 5, tokenizer="nope")


# --------------------------------------------------------------------------- fast path = definition

def test_fast_hashes_are_the_shingle_sets_on_web_pages():
    docs = list(web()) + EDGE
    hashes, offsets = word_shingle_hashes(docs, 5)
    assert hashes.dtype == np.uint64 and offsets.dtype == np.int64 and len(offsets) == len(docs) + 1
    assert distinct_per_doc(hashes, offsets) == [len(shingles(t, 5)) for t in docs]


def test_fast_hash_is_a_function_of_the_shingle():
    """Each document's hash set equals the hashes of its shingles hashed one by one (a shingle's
    text is a document with exactly one shingle): the same shingle gets the same hash anywhere."""
    for docs, n, mode, tok in [(list(web()[:25]), 5, "word", "whitespace"),
                               (paragraphs("ja")[:5] + paragraphs("zh")[:5], 2, "word", "cjk"),
                               (paragraphs("th")[:6], 3, "word", "thai"),
                               (paragraphs("ru")[:5] + paragraphs("zh")[:3], 4, "char", "whitespace")]:
        hashes, offsets = word_shingle_hashes(docs, n, mode, tok)
        for i, t in enumerate(docs):
            own = [s.decode() for s in shingles(t, n, mode, tok)]
            alone, _ = word_shingle_hashes(own, n, mode, tok)
            assert set(alone.tolist()) == set(hashes[offsets[i]:offsets[i + 1]].tolist()), (mode, tok, i)


@pytest.mark.parametrize("langs,mode,tokenizer,ngrams", [
    (["en", "de", "fr", "ru", "el", "tr", "ar", "hi", "bn", "ko", "vi", "uk", "pl", "fa"], "word", "whitespace", (1, 3, 5)),
    (["zh", "ja"], "word", "cjk", (1, 2, 5)),
    (["th"], "word", "thai", (1, 3, 5)),
    (["zh", "ja", "th", "ko"], "char", "whitespace", (1, 3, 5)),
])
def test_fast_hashes_match_shingles_multilingual(langs, mode, tokenizer, ngrams):
    docs = lang_texts(langs) + EDGE
    for n in ngrams:
        hashes, offsets = word_shingle_hashes(pa.array(docs), n, mode, tokenizer)
        assert distinct_per_doc(hashes, offsets) == [len(shingles(t, n, mode, tokenizer)) for t in docs], n


def test_short_and_wordless_documents():
    docs = ["", None, "...", "Hello", "hello!", "Hello world", "hello, WORLD", "a b c d e f g"]
    hashes, offsets = word_shingle_hashes(docs, 5)
    assert np.diff(offsets).tolist() == [0, 0, 0, 1, 1, 1, 1, 3]
    sigs, empty = MinHasher(64, ngram=5).signatures(docs)
    assert empty.tolist() == [True, True, True, False, False, False, False, False]
    assert (sigs[empty] == np.iinfo(np.uint64).max).all()
    assert np.array_equal(sigs[3], sigs[4]) and np.array_equal(sigs[5], sigs[6])   # one shingle each, equal
    assert not np.array_equal(sigs[3], sigs[5])


def test_equal_shingle_sets_give_equal_signatures():
    """Case, punctuation and whitespace do not change the shingle set, so not the signature."""
    docs = list(web()[:40])
    variants = [" ".join(t.upper().split()) + " !!" for t in docs]
    assert all(set(shingles(a, 5)) == set(shingles(b, 5)) for a, b in zip(docs, variants))
    mh = MinHasher(112)
    sa, ea = mh.signatures(docs)
    sb, eb = mh.signatures(variants)
    assert np.array_equal(sa, sb) and not ea.any() and not eb.any()
    assert sa.shape == (40, 112) and sa.dtype == np.uint64


def mutate(text: str, rate: float, rng: random.Random) -> str:
    words = text.split()
    return " ".join(w if rng.random() >= rate else f"{rng.choice('xyzw')}{rng.randrange(10_000)}" for w in words)


def exact_jaccard(a: str, b: str) -> float:
    sa, sb = set(shingles(a, 5)), set(shingles(b, 5))
    return len(sa & sb) / len(sa | sb)


def test_fast_jaccard_estimate_is_accurate():
    """300 (page, mutated page) pairs spanning Jaccard 0..1: MinHash error as for ideal
    permutations (binomial: expected |error| ~ 0.8*sqrt(J(1-J)/128) ~ 0.02), no bias."""
    rng = random.Random(7)
    pages = web()
    a = [pages[i % len(pages)] for i in range(300)]
    b = [mutate(t, rng.choice([0.0, 0.01, 0.03, 0.05, 0.1, 0.2, 0.4]), rng) for t in a]
    mh = MinHasher(num_perm=128, seed=3)
    est = estimated_jaccard(mh.signatures(a)[0], mh.signatures(b)[0])
    exact = np.array([exact_jaccard(x, y) for x, y in zip(a, b)])
    assert exact.min() < 0.3 and exact.max() == 1.0
    err = est - exact
    assert np.abs(err).mean() < 0.05
    assert abs(err.mean()) < 0.01
    assert np.abs(err).max() < 0.2


def test_seeds_give_independent_permutations():
    docs = list(web()[:50])
    s1, _ = MinHasher(64, seed=1).signatures(docs)
    s2, _ = MinHasher(64, seed=2).signatures(docs)
    assert (s1 == s2).mean() < 0.01


# --------------------------------------------------------------------------- stability, chunking

GOLDEN_TEXT = "The quick brown fox jumps over the lazy dog"


def test_golden_values():
    """The hash family is part of the on-disk format (band indexes of earlier runs): pinned."""
    hashes, _ = word_shingle_hashes([GOLDEN_TEXT], 5)
    assert [hex(int(x)) for x in hashes] == ["0x7e09685ae5ca6d0d", "0xc9893870cab1fe56", "0x141be3c14d19097a",
                                            "0xdef78d486fd841a8", "0xf64555e357b1e067"]
    sigs, empty = MinHasher(4, seed=1).signatures([GOLDEN_TEXT])
    assert [hex(int(x)) for x in sigs[0]] == ["0x1a13e8cde1cae961", "0x42e8379159e54244", "0xd68df9eb3703ce8",
                                             "0x118e5db14ea09ae3"]
    assert [hex(int(x)) for x in band_keys(sigs, empty, 2, 2)[0]] == ["0xe2d8c76087ba9fe5", "0xf7286c7e82107c49"]


def test_same_signatures_in_a_fresh_process():
    docs = list(web()[:30]) + lang_texts(["ja", "th", "ru"], 5) + EDGE
    code = (
        "import json, sys, numpy as np\n"
        "from tokenmill.stages.dedup.signatures import MinHasher, word_shingle_hashes\n"
        "docs = json.load(sys.stdin)\n"
        "s, e = MinHasher(112, seed=5).signatures(docs)\n"
        "h, o = word_shingle_hashes(docs, 3, 'char')\n"
        "print(json.dumps([s.tolist(), e.tolist(), h.tolist(), o.tolist()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(docs), capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"})
    s, e, h, o = json.loads(out.stdout)
    sigs, empty = MinHasher(112, seed=5).signatures(docs)
    hashes, offsets = word_shingle_hashes(docs, 3, "char")
    assert s == sigs.tolist() and e == empty.tolist() and h == hashes.tolist() and o == offsets.tolist()


def test_chunking_and_input_forms_do_not_change_anything(monkeypatch):
    no_space = "y" * 40_000 + " tail words here " + "z" * 30_000    # no whitespace to cut at for long
    docs = list(web()[:40]) + [big_doc()[:200_000], no_space] + lang_texts(["th", "zh"], 10) + EDGE
    mh = MinHasher(112)
    ref_s, ref_e = mh.signatures(docs)
    ref_h, ref_o = word_shingle_hashes(docs, 5, "word", "thai")
    sliced = pa.array([None] + docs + ["tail"], pa.string()).slice(1, len(docs))
    chunked = pa.chunked_array([pa.array(docs[:30]), pa.array(docs[30:])])
    monkeypatch.setattr(sg, "CHUNK_BYTES", 1 << 14)      # the big document is cut into pieces
    monkeypatch.setattr(sg, "BLOCK_BYTES", 1 << 12)      # a few shingles per permutation block
    for form in (docs, sliced, chunked):
        s, e = mh.signatures(form)
        assert np.array_equal(s, ref_s) and np.array_equal(e, ref_e)
    h, o = word_shingle_hashes(docs, 5, "word", "thai")
    assert np.array_equal(h, ref_h) and np.array_equal(o, ref_o)


# --------------------------------------------------------------------------- datasketch oracle

def datasketch_rows(docs, num_perm, seed, scheme, ngram=5, mode="word", tokenizer="whitespace"):
    from datasketch import MinHash

    rows = []
    for t in docs:
        m = MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
        sh = shingles(t, ngram, mode, tokenizer)
        for i in range(0, len(sh), 20_000):          # bounded memory; min is order-free
            m.update_batch(sh[i:i + 20_000])
        rows.append(m.hashvalues)
    return np.array(rows)


@pytest.mark.parametrize("num_perm,seed,scheme,with_big", [
    (112, 1, None, True),          # datasketch 2.x default scheme (affine32, uint32 values)
    (128, 42, None, False),
    (64, 7, "legacy", True),        # pre-2.0 scheme: uint64 holding 32-bit values
    (32, 3, "affine64", False),
])
def test_datasketch_mode_is_bit_identical(num_perm, seed, scheme, with_big):
    docs = list(web()[:25]) + ["", "   ", "Word", "two words", "!!!"] + ([big_doc()] if with_big else [])
    sigs, empty = MinHasher(num_perm, seed, hash="datasketch", scheme=scheme).signatures(docs)
    expected = datasketch_rows(docs, num_perm, seed, scheme)
    assert sigs.dtype == expected.dtype and sigs.shape == expected.shape
    assert np.array_equal(sigs, expected)
    assert empty.tolist() == [len(shingles(t, 5)) == 0 for t in docs]


def test_datasketch_mode_char_shingles_and_arrow_input():
    docs = lang_texts(["ja", "zh", "th"], 15) + ["", "語"]
    sigs, _ = MinHasher(64, 9, hash="datasketch").signatures(pa.array(docs), mode="char", ngram=3)
    assert np.array_equal(sigs, datasketch_rows(docs, 64, 9, None, ngram=3, mode="char"))


def test_datasketch_and_fast_agree_on_similarity():
    rng = random.Random(1)
    a = list(web()[:60])
    b = [mutate(t, 0.05, rng) for t in a]
    fast, ds = MinHasher(128), MinHasher(128, hash="datasketch")
    jf = estimated_jaccard(fast.signatures(a)[0], fast.signatures(b)[0])
    jd = estimated_jaccard(ds.signatures(a)[0], ds.signatures(b)[0])
    assert abs(jf.mean() - jd.mean()) < 0.03


# --------------------------------------------------------------------------- normalised shingles

SURFACE_EDITS = [                  # (original, an edit that changes nothing a normalised shingle sees)
    ("The results, published in 2023, were clear.", "THE RESULTS -- published in 2024 -- were clear!"),
    ("Click here to find the file", "Click  here\n to ﬁnd the ﬁle"),                  # ligatures, spacing
    ("Call 555-1234 for the best deals in town", "Call 555-9876 for the best deals in town"),
    ("full width text is the same text", "ｆｕｌｌ ｗｉｄｔｈ ｔｅｘｔ is the same text"),
    ("Price: $1,299.99 only today and tomorrow", "Price: $1299 only today and tomorrow"),
    ("don't stop me now, I'm having such a good time", "don’t stop me now; I’m having such a good time"),
    ("x² plus y² equals r² here", "x2 plus y2 equals r2 here"),           # superscripts
    ("café au lait in the morning", "café au lait in the morning"),          # composed = decomposed
    ("snake_case names are split here", "snake case names are split here"),
]


@pytest.mark.parametrize("hash_kind", ["fast", "datasketch"])
def test_surface_edits_give_identical_signatures(hash_kind):
    """Case, punctuation, spacing, numbers and compatibility forms: the same signature, in both
    hash families; without normalisation the number and compatibility-form edits differ."""
    a, b = [x for x, _ in SURFACE_EDITS], [y for _, y in SURFACE_EDITS]
    mh = MinHasher(64, seed=3, hash=hash_kind)
    sa, sb = mh.signatures(a)[0], mh.signatures(b)[0]
    assert (sa == sb).all(axis=1).all(), [x for x, same in zip(a, (sa == sb).all(axis=1)) if not same]
    raw = MinHasher(64, seed=3, hash=hash_kind, normalize=False)
    differ = ~(raw.signatures(a)[0] == raw.signatures(b)[0]).all(axis=1)
    assert differ.tolist() == [True, True, True, True, True, False, True, True, True]   # all but the apostrophes


def test_normalisation_definition():
    assert sorted(shingles("Year 2023, page 7", 2)) == [b"0 page", b"page 0", b"year 0"]
    assert shingles("ＡＢＣ ﬁ x²", 5) == [b"abc fi x0"]
    assert shingles("v1.2.3 and 3,000", 5) == [b"v0 and 0"]
    assert shingles("Café", 1) == [b"caf\xc3\xa9"]
    assert shingles("Café", 1, fold_diacritics=True) == [b"cafe"]
    assert shingles("Year 2023", 5, normalize=False) == [b"year 2023"]
    assert sorted(shingles("日本、語。", 1, mode="char")) == sorted(c.encode() for c in "日本語")  # punctuation dropped
    assert sorted(shingles("日本、語", 1, mode="char", normalize=False)) == sorted(c.encode() for c in "日本、語")
    assert shingles("\u1100\u1161\u11a8", 1) == ["각".encode()]               # conjoining jamo compose


def test_fast_path_equals_the_definition_where_nfkc_changes_text():
    """NFKC runs only on documents that need it; the shingle sets must equal those of NFKC on
    every document (the reference), in every mode and with accents folded or not."""
    docs = lang_texts(["en", "ja", "ko", "ar", "hi", "vi", "th", "el"], 25) + [t for t, _ in SURFACE_EDITS]
    docs += [y for _, y in SURFACE_EDITS] + ["…only dots… and ＮＢＳＰ\u00a0here", "ﾊﾝｶｸ カタカナ", "\u2460\u2461 ⅻ ½"]
    docs += EDGE
    for mode, tok, n in [("word", "whitespace", 3), ("word", "cjk", 2), ("word", "thai", 3), ("char", "whitespace", 3)]:
        for fold in (False, True):
            hashes, offsets = word_shingle_hashes(docs, n, mode, tok, fold_diacritics=fold)
            for i, t in enumerate(docs):
                own = [x.decode() for x in shingles(t, n, mode, tok, fold_diacritics=fold)]
                mine = set(hashes[offsets[i]:offsets[i + 1]].tolist())
                assert len(mine) == len(own), (mode, tok, fold, t[:40])
                if mode == "word":    # a word shingle's text normalises to itself ("0 0"; in char mode "00" -> "0")
                    alone, _ = word_shingle_hashes(own, n, mode, tok, fold_diacritics=fold)
                    assert set(alone.tolist()) == mine, (mode, tok, fold, t[:40])


def test_minhash_params_normalisation_options():
    from tokenmill.stages.dedup.minhash import MinHashParams

    assert MinHashParams().normalize is True and MinHashParams().fold_diacritics is False
    with pytest.raises(ValueError, match="fold_diacritics"):
        MinHashParams(normalize=False, fold_diacritics=True)


# --------------------------------------------------------------------------- LSH parameters and keys

def test_optimal_bands_is_datasketchs():
    from datasketch.lsh import _optimal_param

    assert optimal_bands(0.9, 128) == (5, 25)          # the example in MinHashLSH's docstring
    for num_perm in (16, 32, 64, 112, 128, 256):
        for threshold in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
            expected = _optimal_param(threshold, num_perm, 0.5, 0.5)
            if expected[0] < 2:                          # MinHashLSH refuses a single band
                with pytest.raises(ValueError, match="num_perm"):
                    optimal_bands(threshold, num_perm)
                continue
            b, r = optimal_bands(threshold, num_perm)
            assert (b, r) == expected and b * r <= num_perm


def test_band_keys_equal_bands_share_a_key():
    sigs, empty = MinHasher(112).signatures(list(web()[:20]))
    keys = band_keys(sigs, empty, 14, 8)
    assert keys.shape == (20, 14) and keys.dtype == np.uint64
    other = sigs.copy()
    other[:, 8:16] += 1                                 # change band 1 only
    k2 = band_keys(other, empty, 14, 8)
    assert (k2[:, 1] != keys[:, 1]).all()
    assert np.array_equal(np.delete(k2, 1, axis=1), np.delete(keys, 1, axis=1))
    same = np.tile(sigs[:1, :8], (1, 14))               # the same values in every band
    k3 = band_keys(same, np.zeros(1, bool), 14, 8)
    assert len(set(k3[0].tolist())) == 14               # ... still 14 different keys
    assert not np.array_equal(band_keys(sigs, empty, 14, 8, salt=1), keys)
    assert len(np.unique(keys)) == keys.size            # 20 different pages: no shared band
    with pytest.raises(ValueError):
        band_keys(sigs, empty, 15, 8)


def test_band_keys_of_wordless_documents_never_collide():
    docs = ["", "...", None, "  ", "---"] * 40 + list(web()[:10]) + ["", "!"]
    mh = MinHasher(112)
    sigs, empty = mh.signatures(docs)
    assert empty.sum() == 202
    with pytest.raises(ValueError, match="row_ids"):
        band_keys(sigs, empty, 14, 8)
    for ids in (np.arange(len(docs), dtype=np.uint64) * np.uint64(7),
                [f"file.jsonl:{i}" for i in range(len(docs))],
                pa.array([f"row-{i}" for i in range(len(docs))])):
        keys = band_keys(sigs, empty, 14, 8, row_ids=ids)
        for j in range(14):                            # per band: every empty document alone
            column = keys[:, j]
            assert len(np.unique(column[empty])) == empty.sum()
            assert not np.isin(column[empty], column[~empty]).any()
    # datasketch-mode signatures (uint32) work too
    dsig, dempty = MinHasher(112, hash="datasketch").signatures(docs[-12:])
    k = band_keys(dsig, dempty, 14, 8, row_ids=np.arange(12))
    assert k.dtype == np.uint64 and len(np.unique(k[dempty][:, 0])) == 2


def test_estimated_jaccard():
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4]], dtype=np.uint64)
    b = np.array([[1, 2, 0, 0], [1, 2, 3, 4]], dtype=np.uint64)
    assert estimated_jaccard(a, b).tolist() == [0.5, 1.0]
    assert float(estimated_jaccard(a[0], b[0])) == 0.5


def test_bad_parameters():
    with pytest.raises(ValueError):
        MinHasher(0)
    with pytest.raises(ValueError):
        MinHasher(hash="md5")
    with pytest.raises(ValueError):
        MinHasher(scheme="legacy")                      # scheme is for hash="datasketch"
    with pytest.raises(ValueError):
        MinHasher().signatures(["x"], mode="line")
    with pytest.raises(ValueError):
        word_shingle_hashes(["x"], 5, tokenizer="nope")
