"""The text MinHash shingles are cut from: surface differences that do not change what a page says
(case, Unicode compatibility forms, the digits of a number, optionally accents) are erased first,
so two copies that differ only in them get the same shingles.

``normalized(texts, fold_diacritics=False)``, one Arrow array in, one out, in this order:

1. **NFKC** (Arrow's ``utf8_normalize``): compatibility forms become their plain letters --
   fullwidth ``ｗｏｒｄ`` -> ``word``, the ligature ``ﬁ`` -> ``fi``, superscript ``²`` -> ``2``, a
   non-breaking space -> a space -- and combining sequences are composed (``e`` + U+0301 -> ``é``).
2. **lower case** (Arrow's ``utf8_lower``, one code point to one).
3. **numbers folded**: every number -- a run of decimal digits of any script, with ``.``/``,``
   separated groups (``2,048.5``, ``٣٤``) -- becomes the single digit ``0``. ``Updated 2023`` and
   ``Updated 2024`` shingle alike; ``covid19`` becomes ``covid0``.
4. ``_`` becomes a space (it is punctuation, though regexes count it as a word character).
5. with ``fold_diacritics``: accents removed (NFD, every ``\\p{Mn}`` dropped, NFC): ``café`` ->
   ``cafe``. Off by default: in many scripts (Devanagari, Thai, Arabic vowels, Vietnamese) the
   marks are letters of the word, not decoration.

Punctuation, symbols and whitespace need no step of their own: shingles are built from *units* --
runs of letters, marks and digits (``signatures`` module) -- so ``don't``, ``don’t`` and ``don t``
give the same units, and a changed comma, quote or dash, extra spaces or a line break change no
shingle. In character mode (cjk/thai languages) normalised units are the letter, mark and digit
code points, so punctuation there is dropped as well.

Cost: lower-casing, the number regex and ``_`` run over every text (Arrow, ~350 MB/s); NFKC, the
slow step (~45 MB/s in utf8proc), runs only on the documents that hold a code point NFKC could
change (``_unstable``: a table over all code points), which in Latin-script web text is a few per
cent; the units are those of NFKC on every document.
"""
from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NUMBER = r"\p{Nd}+(?:[.,]\p{Nd}+)*"


_ASSIGNED_END = 0x32400     # past the last assigned block of planes 0-3; planes 4-13 are unassigned,
                            # 14 is tags and variation selectors (taken), 15-16 private use (stable)


def _single_code_points() -> tuple[np.ndarray, pa.LargeStringArray]:
    """The code points NFKC or a mark class could concern (all but the surrogates, unassigned
    planes and private use), and the same as an array of one-code-point strings (built from one
    UTF-8 buffer, without a Python string per code point)."""
    cps = np.concatenate([np.arange(0xD800), np.arange(0xE000, _ASSIGNED_END), np.arange(0xE0000, 0xE1000)])
    cps = cps.astype(np.uint32)
    data = cps.tobytes().decode("utf-32-le").encode("utf-8")
    widths = 1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)
    offsets = np.zeros(len(cps) + 1, dtype=np.int64)
    np.cumsum(widths, out=offsets[1:])
    arr = pa.LargeStringArray.from_buffers(len(cps), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))
    return cps, arr


@cache
def _unstable() -> np.ndarray:
    """bool per code point: True where NFKC may change the units of a text holding it -- the
    code point changes under NFKC (Arrow's utf8proc, the kernel both paths use) and it or its
    NFKC holds a letter, mark, digit or ``_`` (``…`` -> ``...`` changes no unit), or it can
    compose with what precedes it (marks, Hangul conjoining jamo). Conservative: a True only
    costs time. ~0.15 s once per process."""
    cps, singles = _single_code_points()
    nfkc = pc.utf8_normalize(singles, "NFKC")
    changed = pc.not_equal(nfkc, singles)
    wordish = pc.or_(pc.match_substring_regex(singles, r"[\pL\pM\pN_]"),
                     pc.match_substring_regex(nfkc, r"[\pL\pM\pN_]"))
    table = np.zeros(0x110000, dtype=bool)
    table[cps[pc.and_(changed, wordish).to_numpy(zero_copy_only=False)]] = True
    table[cps[pc.match_substring_regex(singles, r"\pM").to_numpy(zero_copy_only=False)]] = True
    table[0x1100:0x1200] = True          # Hangul jamo: L+V(+T) compose into syllables
    return table


def lead_code_points(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the lead bytes of multi-byte sequences in UTF-8 bytes ``b``, their code
    points as uint32). A sequence cut at the end cannot overrun: the bytes are padded."""
    li = np.flatnonzero(b >= 0xC0)
    bp = np.concatenate([b, np.zeros(3, np.uint8)])
    b0 = b[li].astype(np.uint32)
    c1, c2, c3 = ((bp[li + k] & 0x3F).astype(np.uint32) for k in (1, 2, 3))
    three, four = b0 >= 0xE0, b0 >= 0xF0
    cp = np.where(three, ((b0 & 0x0F) << 12) | (c1 << 6) | c2, ((b0 & 0x1F) << 6) | c1)
    return li, np.where(four, ((b0 & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3, cp)


def _needs_nfkc(arr: pa.LargeStringArray) -> np.ndarray:
    """bool per document: it holds a code point NFKC could change. ASCII documents never do; in
    the others only the lead bytes of multi-byte sequences are decoded."""
    need = np.zeros(len(arr), dtype=bool)
    ascii_docs = pc.fill_null(pc.string_is_ascii(arr), True).to_numpy(zero_copy_only=False)
    if ascii_docs.all():
        return need
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    li, cp = lead_code_points(np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]])
    hit = li[_unstable()[np.minimum(cp, 0x10FFFF)]] + offsets[0]
    need[np.searchsorted(offsets, hit, side="right") - 1] = True
    return need


def _nfkc(arr: pa.LargeStringArray) -> pa.LargeStringArray:
    """NFKC of every document, computed only where it can change one."""
    need = _needs_nfkc(arr)
    if not need.any():
        return arr
    mask = pa.array(need)
    return pc.replace_with_mask(arr, mask, pc.utf8_normalize(arr.filter(mask), "NFKC"))


def _fold_diacritics(arr: pa.LargeStringArray) -> pa.LargeStringArray:
    ascii_docs = pc.fill_null(pc.string_is_ascii(arr), True)
    if pc.all(ascii_docs).as_py():
        return arr
    stripped = pc.replace_substring_regex(pc.utf8_normalize(arr, "NFD"), r"\p{Mn}+", "")
    return pc.if_else(ascii_docs, arr, pc.utf8_normalize(stripped, "NFC"))


def as_large_strings(texts) -> pa.LargeStringArray:
    """Any text column (list, Array, ChunkedArray) as one large_string array; nulls become ""."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.large_string())
    if not isinstance(texts, pa.Array):
        texts = pa.array(texts, pa.large_string())
    if texts.type != pa.large_string():
        texts = texts.cast(pa.large_string())
    return pc.fill_null(texts, "")


def _after_nfkc(arr: pa.LargeStringArray, fold_diacritics: bool) -> pa.LargeStringArray:
    """Steps 2-5 (module docstring) of NFKC-normalised text."""
    arr = pc.replace_substring(pc.replace_substring_regex(pc.utf8_lower(arr), NUMBER, "0"), "_", " ")
    return _fold_diacritics(arr) if fold_diacritics else arr


def normalized(texts, *, fold_diacritics: bool = False) -> pa.LargeStringArray:
    """The normalised text of every document (module docstring); nulls become ""."""
    return _after_nfkc(_nfkc(as_large_strings(texts)), fold_diacritics)


def normalized_reference(text, *, fold_diacritics: bool = False) -> str:
    """``normalized`` of one document with NFKC applied to the whole text, whatever it holds
    (the definition ``signatures.shingles`` spells out; its units equal the fast path's)."""
    return _after_nfkc(pc.utf8_normalize(as_large_strings([text]), "NFKC"), fold_diacritics)[0].as_py()


def lowered(texts) -> pa.LargeStringArray:
    """Only lower-cased (``normalize: false``: the shingle text of tokenmill before normalisation)."""
    return pc.utf8_lower(as_large_strings(texts))
