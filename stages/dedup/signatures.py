"""MinHash signatures for near-duplicate detection: shingles, 64-bit shingle hashes, permutations,
band keys. Pure NumPy over Arrow; no Python loop per shingle or per document on the fast path.

Shingles (the definition; ``shingles()`` spells it out one document at a time, the fast path
``word_shingle_hashes()`` computes the same sets for a whole batch):

- The text is normalised (``normalize=True``, the default; ``normalize.py``: NFKC, lower case,
  every number folded to ``0``, ``_`` as a space, accents stripped only with ``fold_diacritics``),
  or with ``normalize=False`` only lower-cased (Arrow's ``utf8_lower``, utf8proc's simple case
  mapping, one code point to one), by the same Arrow kernels in both paths, so they agree on
  every script. Null text is "".
- ``mode="word"``: the units are the words of ``stages/heuristics/words.py``'s ``_WORDS[tokenizer]``
  over that text: ``whitespace`` = maximal runs of ``[\\p{L}\\p{M}\\p{N}_]``; ``cjk`` =
  every Han/kana code point alone, other word runs as above; ``thai`` = Thai runs cut into
  4-code-point pieces from the start of each run, other word runs as above. A shingle is
  ``" ".join`` of ``ngram`` consecutive words. Punctuation, symbols and whitespace are never part
  of a unit, so changing them changes no shingle.
- ``mode="char"``: the units are the code points of that text that are letters, marks or digits
  (normalised), or that are not ``\\p{White_Space}`` (``normalize=False``); a shingle is
  ``"".join`` of ``ngram`` consecutive units (the tokenizer is not used).
- A document with 1 <= units < ``ngram`` has one shingle: all its units joined. A document with no
  units has no shingle; its signature row is all-max and ``empty`` is true, and it never matches
  anything (see ``band_keys``).

Hash family of ``hash: fast`` (64-bit, stable across processes, machines and NumPy versions: no
salted ``hash()``, no RNG streams; all arithmetic is modulo 2^64):

- ``fmix64`` = MurmurHash3's 64-bit finalizer (an avalanching bijection of [0, 2^64)).
- unit hash: ``u = fmix64(sum_k c_k * P^k + L * C_UNIT)`` over the unit's L UTF-8 bytes c_0..c_{L-1},
  for every unit of a chunk at once from prefix sums (``(G[e] - G[s]) * P^-s``, G the running sum
  of ``c_i * P^i``; P is odd, so invertible mod 2^64). The text is never decoded: only the lead
  bytes of multi-byte code points, to classify them with tables built from the regexes above.
- shingle hash: ``s = fmix64(sum_k u_k * Q^(L-1-k) + L * C_SHINGLE)`` over its L units (a rolling
  polynomial vectorised over the whole batch, as ``heuristics.rules._Grams``). Equal shingle
  strings give equal hashes; distinct ones collide with probability ~2^-64 (the polynomial over
  bytes is not collision-resistant against crafted input: a collision only merges two units).
- permutation i of ``num_perm``: ``h_i(s) = a_i * s + b_i mod 2^64`` with ``a_i`` odd (a
  bijection, so permuting adds no collisions; datasketch's "affine64" construction), ``a_i, b_i``
  from splitmix64 of ``seed``. Signature value i = the minimum of ``h_i`` over the document's
  shingles: a NumPy broadcast over (num_perm x shingles) in blocks of at most ``BLOCK_BYTES``, the
  per-document minimum with ``np.minimum.reduceat``. Signatures are uint64; an empty document's row
  is 2^64-1.

``hash: datasketch`` gives signatures bit-identical to ``datasketch.MinHash(num_perm, seed,
scheme)`` updated with the UTF-8 bytes of each shingle of ``shingles()`` (default scheme: datasketch
2.x's default, "affine32", uint32 values; "affine64" and "legacy" (pre-2.0, uint64 holding 32-bit
values) too). SHA-1 runs per shingle (``hashlib``); the permutations and minima are the same
blocked NumPy broadcast. It is the compatibility mode, several times slower than ``fast``.

Memory: text is tokenised in chunks of whole documents of at most ``CHUNK_BYTES`` (a larger
document is cut after ASCII whitespace into pieces of about that size; ~30 bytes of temporaries
per text byte), permutations run in blocks of at most ``BLOCK_BYTES``; ~16 MiB of cached powers
and 4 x 1.1 MB code point tables stay per process.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex as re

from tokenmill.stages.heuristics.words import _CJK, _THAI, _W, _WORDS

from .normalize import lead_code_points, lowered, normalized, normalized_reference

CHUNK_BYTES = 1 << 20          # text bytes tokenised at once (whole documents)
BLOCK_BYTES = 8 << 20          # permuted values materialised at once (num_perm x shingles)
MAX64 = np.uint64(0xFFFFFFFFFFFFFFFF)

_U = np.uint64
_P = _U(0x9E3779B97F4A7C15)           # unit polynomial base (odd)
_Q = _U(0xD6E8FEB86659FD93)           # shingle polynomial base (odd)
_C_UNIT = _U(0x2545F4914F6CDD1D)      # length terms, band/row/empty/salt domain constants
_C_SHINGLE = _U(0x94D049BB133111EB)
_C_BAND = _U(0xBF58476D1CE4E5B9)
_C_ROW = _U(0xFF51AFD7ED558CCD)
_C_EMPTY = _U(0xC4CEB9FE1A85EC53)
_C_SALT = _U(0x9FB21C651E98DF25)
_F1, _F2 = _U(0xFF51AFD7ED558CCD), _U(0xC4CEB9FE1A85EC53)   # MurmurHash3 fmix64
_SM_GAMMA, _SM1, _SM2 = _U(0x9E3779B97F4A7C15), _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)  # splitmix64
_S33 = _U(33)

_WHITE = r"\p{White_Space}"
_NON_SPACE = re.compile(rf"[^{_WHITE}]")
_MODES = ("word", "char")
Texts = Union[Sequence[Optional[str]], pa.Array, pa.ChunkedArray]


# -- 64-bit mixing ---------------------------------------------------------------------------------
def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, element-wise (a bijection of uint64); returns a new array."""
    h = np.asarray(h, dtype=np.uint64)
    h = h ^ (h >> _S33)
    h *= _F1
    h ^= h >> _S33
    h *= _F2
    h ^= h >> _S33
    return h


def _mul(x: int, c: np.uint64) -> np.uint64:
    """x * c mod 2^64 as a NumPy scalar (Python ints: no scalar overflow warnings)."""
    return _U((int(x) * int(c)) & 0xFFFFFFFFFFFFFFFF)


def splitmix64(seed: int, count: int) -> np.ndarray:
    """The first ``count`` outputs of splitmix64 seeded with ``seed`` (mod 2^64)."""
    z = _U(seed & 0xFFFFFFFFFFFFFFFF) + _SM_GAMMA * np.arange(1, count + 1, dtype=np.uint64)
    z = (z ^ (z >> _U(30))) * _SM1
    z = (z ^ (z >> _U(27))) * _SM2
    return z ^ (z >> _U(31))


_P_INV = _U(pow(int(_P), -1, 1 << 64))          # P is odd, so invertible modulo 2^64
_POW_CACHE: dict[int, np.ndarray] = {}
_POW_CACHE_MAX = 1 << 20                         # entries kept per base (8 MiB); longer: computed per call


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """base^0 .. base^(n-1) mod 2^64 (cached up to _POW_CACHE_MAX entries, grown by doubling)."""
    pw = _POW_CACHE.get(int(base))
    if pw is not None and len(pw) >= n:
        return pw[:n]
    size = n if n > _POW_CACHE_MAX else min(_POW_CACHE_MAX, max(n, 2 * len(pw) if pw is not None else 1 << 16))
    pw = np.full(size, base, dtype=np.uint64)
    pw[0] = 1
    np.cumprod(pw, out=pw)
    if size <= _POW_CACHE_MAX:
        _POW_CACHE[int(base)] = pw
    return pw[:n]


# -- code point classes ----------------------------------------------------------------------------
@cache
def _classes(kind: str) -> np.ndarray:
    """uint8 class per code point (0..0x10FFFF): 0 not part of any unit, 1 a word-run code point,
    2 a code point that is a unit alone (CJK), 3 a Thai code point (runs cut every 4). Built from
    the very regexes ``shingles()`` uses, so both paths tokenise alike. kind: a tokenizer or "char"."""
    cps = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype(np.uint32)
    text = cps.tobytes().decode("utf-32-le")

    def mask(pattern: str) -> np.ndarray:
        m = np.zeros(0x110000, dtype=bool)
        for match in re.finditer(pattern + "+", text):
            m[cps[match.start():match.end()]] = True
        return m

    if kind == "char":
        return (~mask(f"[{_WHITE}]")).astype(np.uint8)
    if kind == "char-normalized":
        return mask(_W).astype(np.uint8)
    table = mask(_W).astype(np.uint8)
    if kind == "cjk":
        table[mask(f"[{_CJK}]")] = 2
    elif kind == "thai":
        table[mask(f"[{_THAI}]")] = 3
    elif kind != "whitespace":
        raise ValueError(f"unknown tokenizer {kind!r}; expected one of {sorted(_WORDS)}")
    return table


#: tokenizers the byte-class fast path implements (the others: ``segmenters.py``)
_FAST_TOKENIZERS = ("whitespace", "cjk", "thai")


def _check(ngram: int, mode: str, tokenizer: str) -> None:
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if tokenizer not in _WORDS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; expected one of {sorted(_WORDS)}")
    if mode == "word" and tokenizer not in _FAST_TOKENIZERS:
        raise ValueError(f"word shingles need a pattern tokenizer ({', '.join(_FAST_TOKENIZERS)}); {tokenizer!r} "
                         "segments with a model: use char shingles (minhash_char_ngram), as minhash_dedup does")


# -- the reference definition, one document ---------------------------------------------------------
def _lower_one(text: Optional[str]) -> str:
    return pc.utf8_lower(pa.array([text or ""], pa.large_string()))[0].as_py()


_CHAR_UNIT = re.compile(_W)


def shingles(text: str, ngram: int, mode: str = "word", tokenizer: str = "whitespace", *,
             normalize: bool = True, fold_diacritics: bool = False) -> list[bytes]:
    """The shingle set of one document as UTF-8 bytes (deduplicated; order not meaningful).
    The definition the fast path agrees with (module docstring); ``normalize``: the text of
    ``normalize.normalized`` (NFKC on the whole text here), else only lower-cased."""
    _check(ngram, mode, tokenizer)
    low = normalized_reference(text, fold_diacritics=fold_diacritics) if normalize else _lower_one(text)
    if mode == "word":
        units, sep = _WORDS[tokenizer].findall(low), " "
    else:
        units, sep = (_CHAR_UNIT if normalize else _NON_SPACE).findall(low), ""
    if not units:
        return []
    if len(units) < ngram:
        return [sep.join(units).encode("utf-8")]
    return list({sep.join(units[i:i + ngram]).encode("utf-8") for i in range(len(units) - ngram + 1)})


# -- the fast path: Arrow text -> unit hashes -> shingle hashes ------------------------------------
def _buffers(arr: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes as uint8, int64 byte offsets of len(arr)+1) without copying."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    values = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    return values, offsets


def _chunks(offsets: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Document ranges [lo, hi) of at most ``limit`` bytes (a larger document alone)."""
    n = len(offsets) - 1
    lo = 0
    while lo < n:
        hi = int(np.searchsorted(offsets, offsets[lo] + limit, side="right")) - 1
        hi = min(max(hi, lo + 1), n)
        yield lo, hi
        lo = hi


@cache
def _byte_table(kind: str) -> bytes:
    """Class of each ASCII byte as a ``bytes.translate`` table; 0 for bytes >= 0x80 (filled from
    their code point by ``_byte_classes``)."""
    table = np.zeros(256, dtype=np.uint8)
    table[:128] = _classes(kind)[:128]
    return table.tobytes()


def _byte_classes(b: np.ndarray, kind: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Per UTF-8 byte, the class of the code point it belongs to (continuation bytes carry their
    lead's class), and a lead-byte mask (None when all bytes are ASCII). Only the leads of
    multi-byte sequences are decoded."""
    if not (b >= 0xC0).any():
        return np.frombuffer(bytearray(b.tobytes()).translate(_byte_table(kind)), dtype=np.uint8), None
    cls = np.frombuffer(bytearray(b.tobytes() + b"\0\0\0").translate(_byte_table(kind)), dtype=np.uint8)
    li, cp = lead_code_points(b)
    three, four = b[li] >= 0xE0, b[li] >= 0xF0
    c = _classes(kind)[cp]
    cls[li] = c
    cls[li + 1] = c
    cls[li[three] + 2] = c[three]
    cls[li[four] + 3] = c[four]
    return cls[:len(b)], (b & 0xC0) != 0x80


def _unit_starts(cls: np.ndarray, lead: Optional[np.ndarray], seg_starts: np.ndarray, mode: str,
                 tokenizer: str) -> np.ndarray:
    """Bytes where a unit begins: in char mode every unit code point; in word mode a class change,
    a segment start, every CJK code point, every 4th code point of a Thai run."""
    if mode != "word":                                 # "char", "char-normalized"
        return cls != 0 if lead is None else (cls != 0) & lead
    prev = np.empty_like(cls)
    prev[:1] = 0
    prev[1:] = cls[:-1]
    start = cls != prev
    start[seg_starts] = True
    if tokenizer == "cjk":
        start |= cls == 2
    start &= cls != 0
    if lead is not None:
        start &= lead
        if tokenizer == "thai":
            thai = (cls == 3) & lead
            cpi = np.cumsum(lead)                      # code point index (+1) of every byte
            run0 = np.maximum.accumulate(np.where(start & thai, cpi, 0))
            start |= thai & (((cpi - run0) & 3) == 0)
    return start


def _units(values: np.ndarray, offs: np.ndarray, mode: str, tokenizer: str) -> tuple[np.ndarray, np.ndarray]:
    """Unit hashes of segments whose units never cross segment boundaries (whole documents).
    values: lower-cased UTF-8 bytes; offs: byte offsets of the segments (len s+1).
    Returns (uint64 unit hashes in order, int64 units per segment). A unit [s, e) hashes its
    bytes c_i as sum c_i P^(i-s) = (G[e] - G[s]) * P^-s with G the prefix sums of c_i P^i."""
    lo = int(offs[0])
    b, offs = values[lo:int(offs[-1])], offs - lo
    n = len(b)
    cls, lead = _byte_classes(b, tokenizer if mode == "word" else mode)
    start = _unit_starts(cls, lead, offs[:-1][offs[:-1] < n], mode, tokenizer)
    inside = cls != 0
    last = inside.copy()                              # the last byte of a unit
    last[:-1] &= ~inside[1:] | start[1:]
    s, e = np.flatnonzero(start), np.flatnonzero(last) + 1
    g = np.zeros(n + 1, dtype=np.uint64)
    np.multiply(b, _powers(_P, n), out=g[1:])
    np.cumsum(g, out=g)
    poly = g[e]
    poly -= g[s]
    poly *= _powers(_P_INV, n)[s]
    lens = (e - s).astype(np.uint64)
    poly += lens * _C_UNIT
    counts = np.diff(np.searchsorted(s, offs))
    return fmix64(poly), counts


def _split_points(values: np.ndarray, lo: int, hi: int, limit: int) -> np.ndarray:
    """Byte offsets cutting one big document [lo, hi) into pieces of about ``limit`` bytes, cut
    just after an ASCII whitespace byte (never inside a unit, in either mode)."""
    ws = lo + 1 + np.flatnonzero(np.isin(values[lo:hi - 1], np.frombuffer(b" \t\n\r\x0b\x0c", np.uint8)))
    cuts, at = [lo], lo
    while hi - at > limit:
        k = int(np.searchsorted(ws, at + limit, side="right")) - 1
        if k < 0 or ws[k] <= at:
            k = int(np.searchsorted(ws, at, side="right"))   # no whitespace within: the next one
            if k >= len(ws) or ws[k] >= hi:
                break
        at = int(ws[k])
        cuts.append(at)
    cuts.append(hi)
    return np.asarray(cuts, dtype=np.int64)


def _chunk_units(values, offsets, lo, hi, mode, tokenizer, limit):
    """Unit hashes and per-document unit offsets (rebased to 0) of documents [lo, hi)."""
    offs = offsets[lo:hi + 1]
    if hi - lo == 1 and offs[1] - offs[0] > limit:      # one big document: tokenise in pieces
        cuts = _split_points(values, int(offs[0]), int(offs[1]), limit)
        parts = [_units(values, cuts[i:i + 2], mode, tokenizer) for i in range(len(cuts) - 1)]
        units = np.concatenate([p[0] for p in parts])
        return units, np.array([0, len(units)], dtype=np.int64)
    units, counts = _units(values, offs, mode, tokenizer)
    uo = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=uo[1:])
    return units, uo


def _shingles_of_units(units: np.ndarray, uo: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes (flattened, per document in order) and int64 offsets from unit hashes."""
    m = np.diff(uo)
    per_doc = np.where(m >= ngram, m - ngram + 1, np.minimum(m, 1))
    so = np.zeros(len(m) + 1, dtype=np.int64)
    np.cumsum(per_doc, out=so[1:])
    short = np.flatnonzero((m >= 1) & (m < ngram))    # one shingle of all their units
    n_win = len(units) - ngram + 1
    full = np.zeros(0, dtype=np.uint64)
    if n_win > 0:                                     # full windows, rolled over the whole batch
        h = np.zeros(n_win, dtype=np.uint64)
        for k in range(ngram):
            h *= _Q
            h += units[k:k + n_win]
        ok = np.ones(n_win, dtype=bool)               # drop windows across a document boundary
        ends = uo[1:-1]
        for k in range(1, ngram):
            i = ends - k
            ok[i[(i >= 0) & (i < n_win)]] = False
        full = h[ok]
        full += _mul(ngram, _C_SHINGLE)
    if not len(short):
        return fmix64(full), so
    out = np.empty(int(so[-1]), dtype=np.uint64)
    is_short = np.zeros(len(out), dtype=bool)
    is_short[so[short]] = True
    out[~is_short] = full
    h = np.zeros(len(short), dtype=np.uint64)
    ms = m[short]
    for k in range(int(ms.max())):
        h = np.where(k < ms, h * _Q + units[np.minimum(uo[short] + k, len(units) - 1)], h)
    out[is_short] = h + ms.astype(np.uint64) * _C_SHINGLE
    return fmix64(out), so


def _shingle_text(texts: Texts, normalize: bool, fold_diacritics: bool) -> pa.LargeStringArray:
    return normalized(texts, fold_diacritics=fold_diacritics) if normalize else lowered(texts)


def _iter_shingle_hashes(texts: Texts, ngram: int, mode: str, tokenizer: str, normalize: bool = True,
                         fold_diacritics: bool = False):
    """Yields (doc_lo, doc_hi, shingle hashes, offsets rebased to 0) per chunk of documents."""
    _check(ngram, mode, tokenizer)
    values, offsets = _buffers(_shingle_text(texts, normalize, fold_diacritics))
    if mode == "char" and normalize:
        mode = "char-normalized"                      # units: letters, marks, digits only
    for lo, hi in _chunks(offsets, CHUNK_BYTES):
        units, uo = _chunk_units(values, offsets, lo, hi, mode, tokenizer, CHUNK_BYTES)
        sh, so = _shingles_of_units(units, uo, ngram)
        yield lo, hi, sh, so


def word_shingle_hashes(texts: Texts, ngram: int, mode: str = "word", tokenizer: str = "whitespace", *,
                        normalize: bool = True, fold_diacritics: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every document's shingles: (uint64 hashes flattened in document order,
    int64 offsets of len(texts)+1). One hash per shingle occurrence (a repeated shingle repeats);
    the distinct hashes of a document are its ``shingles()`` set (same options), one for one."""
    parts, offs, base = [], [np.zeros(1, dtype=np.int64)], 0
    for _, _, sh, so in _iter_shingle_hashes(texts, ngram, mode, tokenizer, normalize, fold_diacritics):
        parts.append(sh)
        offs.append(so[1:] + base)
        base += len(sh)
    hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    return hashes, np.concatenate(offs)


def ngram_hashes_by_size(texts: Texts, ngrams: list[int], tokenizer: str = "whitespace", *,
                         normalize: bool = True) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``word_shingle_hashes`` of the same texts for several n-gram sizes, the text normalised and
    cut into units once: {n: (hashes, offsets)}. A text of m < n units has one hash, that of its m
    units, which equals the m-gram hash the same units give at size m."""
    for n in ngrams:
        _check(n, "word", tokenizer)
    parts: dict[int, list] = {n: [] for n in ngrams}
    offs: dict[int, list] = {n: [np.zeros(1, dtype=np.int64)] for n in ngrams}
    base = dict.fromkeys(ngrams, 0)
    values, offsets = _buffers(_shingle_text(texts, normalize, False))
    for lo, hi in _chunks(offsets, CHUNK_BYTES):
        units, uo = _chunk_units(values, offsets, lo, hi, "word", tokenizer, CHUNK_BYTES)
        for n in ngrams:
            sh, so = _shingles_of_units(units, uo, n)
            parts[n].append(sh)
            offs[n].append(so[1:] + base[n])
            base[n] += len(sh)
    return {n: (np.concatenate(parts[n]) if parts[n] else np.zeros(0, dtype=np.uint64), np.concatenate(offs[n]))
            for n in ngrams}


# -- permutations and per-document minima -----------------------------------------------------------
def _min_per_doc(x: np.ndarray, offsets: np.ndarray, permute, num_perm: int, dtype, fill) -> np.ndarray:
    """(n, num_perm) minima over each document's permuted values; rows without values = fill.
    ``permute(x_block)`` returns a (num_perm, len(block)) array. Blocks of <= BLOCK_BYTES."""
    n = len(offsets) - 1
    out = np.full((n, num_perm), fill, dtype=dtype)
    docs = np.flatnonzero(np.diff(offsets) > 0)
    if not len(docs):
        return out
    starts = offsets[docs]
    mins = np.full((len(docs), num_perm), fill, dtype=dtype)
    block = max(1, BLOCK_BYTES // (num_perm * np.dtype(dtype).itemsize))
    for s in range(0, len(x), block):
        e = min(s + block, len(x))
        i0 = int(np.searchsorted(starts, s, side="right")) - 1
        i1 = int(np.searchsorted(starts, e, side="left"))
        seg = np.maximum(starts[i0:i1], s) - s
        m = np.minimum.reduceat(permute(x[s:e]), seg, axis=1)
        np.minimum(mins[i0:i1], m.T, out=mins[i0:i1])
    out[docs] = mins
    return out


def _sha1_prefixes(items: list[bytes], width: int) -> np.ndarray:
    """datasketch's sha1_hash32/sha1_hash64: the first 4/8 bytes of SHA-1, little-endian."""
    sha1 = hashlib.sha1
    digests = b"".join([sha1(s).digest() for s in items])
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 20)[:, :width // 8]
    values = np.ascontiguousarray(raw).view(f"<u{width // 8}").ravel()
    return values.astype(np.uint32 if width == 32 else np.uint64, copy=False)


def _fmix(h: np.ndarray, width: int) -> np.ndarray:
    if width == 64:
        return fmix64(h)
    t = np.uint32
    h = h ^ (h >> t(16))
    h *= t(0x85EBCA6B)
    h ^= h >> t(13)
    h *= t(0xC2B2AE35)
    return h ^ (h >> t(16))


class MinHasher:
    """MinHash signatures of batches of documents (module docstring: shingles and hash families).

    hash: "fast" (tokenmill's 64-bit family) or "datasketch" (bit-identical to
    ``datasketch.MinHash(num_perm=num_perm, seed=seed, scheme=scheme)``; scheme None = datasketch's
    default). ngram: shingle length in units (``signatures(..., ngram=)`` overrides it per call,
    e.g. a per-language character n-gram length). normalize / fold_diacritics: the shingle text
    (``normalize`` module; ``normalize=False``: only lower-cased)."""

    def __init__(self, num_perm: int = 112, seed: int = 1, hash: str = "fast", ngram: int = 5,
                 scheme: Optional[str] = None, *, normalize: bool = True, fold_diacritics: bool = False):
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        if hash not in ("fast", "datasketch"):
            raise ValueError(f"hash must be 'fast' or 'datasketch', got {hash!r}")
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        self.num_perm, self.seed, self.hash, self.ngram = num_perm, seed, hash, ngram
        self.normalize, self.fold_diacritics = normalize, fold_diacritics
        if hash == "fast":
            if scheme is not None:
                raise ValueError("scheme applies to hash='datasketch' only")
            ab = splitmix64(seed, 2 * num_perm)
            self._a, self._b = (ab[0::2] | _U(1))[:, None], ab[1::2][:, None]
            self.dtype, self.empty_value, self.scheme = np.dtype(np.uint64), MAX64, None
        else:
            self._init_datasketch(scheme)

    def _init_datasketch(self, scheme: Optional[str]) -> None:
        from datasketch import MinHash  # the permutation parameters come from datasketch itself

        mh = MinHash(num_perm=self.num_perm, seed=self.seed, scheme=scheme)
        self.scheme = mh.scheme
        a, b = (np.asarray(p) for p in mh.permutations)
        self._a, self._b = a[:, None], b[:, None]
        self.dtype, self.empty_value = mh.hashvalues.dtype, mh.hashvalues[0]   # a fresh MinHash is all-max
        self._width = 32 if self.scheme in ("affine32", "legacy") else 64

    # -- permutations --
    def _permute_fast(self, x: np.ndarray) -> np.ndarray:
        h = self._a * x          # (num_perm, block): one broadcast, then in place
        h += self._b
        return h

    def _permute_datasketch(self, hv: np.ndarray) -> np.ndarray:
        if self.scheme == "legacy":
            phv = (self._a * hv.astype(np.uint64) + self._b) % _U((1 << 61) - 1)
            return phv & _U((1 << 32) - 1)
        h = self._a * _fmix(hv, self._width)
        h += self._b
        return h

    # -- public --
    def signatures(self, texts: Texts, mode: str = "word", tokenizer: str = "whitespace",
                   ngram: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """(sigs of shape (n, num_perm), empty: bool (n,) -- documents without shingles)."""
        ngram = self.ngram if ngram is None else ngram
        if self.hash == "fast":
            return self._signatures_fast(texts, mode, tokenizer, ngram)
        return self._signatures_datasketch(texts, mode, tokenizer, ngram)

    def _signatures_fast(self, texts, mode, tokenizer, ngram):
        n = len(texts)
        sigs = np.empty((n, self.num_perm), dtype=np.uint64)
        empty = np.zeros(n, dtype=bool)
        for lo, hi, sh, so in _iter_shingle_hashes(texts, ngram, mode, tokenizer, self.normalize,
                                                   self.fold_diacritics):
            sigs[lo:hi] = _min_per_doc(sh, so, self._permute_fast, self.num_perm, np.uint64, MAX64)
            empty[lo:hi] = so[1:] == so[:-1]
        return sigs, empty

    def _signatures_datasketch(self, texts, mode, tokenizer, ngram):
        _check(ngram, mode, tokenizer)
        if isinstance(texts, (pa.Array, pa.ChunkedArray)):
            texts = texts.to_pylist()
        n = len(texts)
        sigs = np.empty((n, self.num_perm), dtype=self.dtype)
        empty = np.zeros(n, dtype=bool)
        step = 256                                  # documents per block of SHA-1 values
        for lo in range(0, n, step):
            sets = [shingles(t, ngram, mode, tokenizer, normalize=self.normalize,
                             fold_diacritics=self.fold_diacritics) for t in texts[lo:lo + step]]
            counts = np.fromiter(map(len, sets), dtype=np.int64, count=len(sets))
            offs = np.zeros(len(sets) + 1, dtype=np.int64)
            np.cumsum(counts, out=offs[1:])
            hv = _sha1_prefixes([s for ss in sets for s in ss], self._width)
            sigs[lo:lo + len(sets)] = _min_per_doc(hv, offs, self._permute_datasketch, self.num_perm,
                                                   self.dtype, self.empty_value)
            empty[lo:lo + len(sets)] = counts == 0
        return sigs, empty


# -- LSH ------------------------------------------------------------------------------------------
@cache
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) as ``datasketch.MinHashLSH(threshold, num_perm)`` chooses them (default
    weights 0.5/0.5: the least weighted sum of false-positive and false-negative probability).
    bands * rows may be < num_perm (the last values then go unused). Where datasketch's optimum
    is a single band, MinHashLSH refuses it and so does this (ValueError)."""
    from datasketch import MinHashLSH

    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    except ValueError as err:
        raise ValueError(f"no LSH bands for threshold {threshold} with num_perm {num_perm} "
                         f"(datasketch: {err}); use more permutations or give bands explicitly") from err
    return int(lsh.b), int(lsh.r)


def _row_id_hashes(row_ids, rows: np.ndarray) -> np.ndarray:
    """uint64 ids of the given rows: integers as they are, strings/bytes by BLAKE2b-64."""
    if isinstance(row_ids, (pa.Array, pa.ChunkedArray)):
        row_ids = row_ids.take(pa.array(rows)).to_pylist() if len(rows) else []
    elif isinstance(row_ids, np.ndarray) and row_ids.dtype.kind in "iu":
        return row_ids[rows].astype(np.uint64)
    else:
        row_ids = [row_ids[i] for i in rows]
    if row_ids and isinstance(row_ids[0], (int, np.integer)):
        return np.array([i & 0xFFFFFFFFFFFFFFFF for i in row_ids], dtype=np.uint64)
    b2 = hashlib.blake2b
    raw = b"".join(b2(r if isinstance(r, bytes) else str(r).encode("utf-8", "surrogatepass"),
                      digest_size=8).digest() for r in row_ids)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def band_keys(sigs: np.ndarray, empty: np.ndarray, bands: int, rows: int, salt: int = 0,
              row_ids=None) -> np.ndarray:
    """(n, bands) uint64 LSH keys: key[d, j] is a hash of signature values j*rows .. (j+1)*rows-1
    of document d chained from a start value that depends on j and ``salt`` (so equal rows in
    different bands do not collide on purpose): ``k = fmix64(salt*C_SALT + (j+1)*C_BAND)``, then for
    each value v ``k = fmix64(k ^ (v * C_ROW))``. Documents agreeing on a band share its key.

    Empty documents (no shingles) must never match: their keys are ``fmix64(fmix64(id ^ C_EMPTY)
    ^ band start value)`` of ``row_ids`` (uint64 integers, or strings such as ``row_key`` hashed
    with BLAKE2b-64; only the empty rows are read), distinct for distinct ids in every band, so
    each empty document sits alone in its buckets. ``row_ids`` is required when any row is empty;
    callers may also drop ``empty`` rows before shuffling keys at all."""
    n, k = sigs.shape
    if bands < 1 or rows < 1 or bands * rows > k:
        raise ValueError(f"bands * rows = {bands} * {rows} must be in 1..num_perm ({k})")
    start = fmix64(_mul(salt, _C_SALT) + np.arange(1, bands + 1, dtype=np.uint64) * _C_BAND)
    vals = sigs[:, :bands * rows].astype(np.uint64, copy=False).reshape(n, bands, rows)
    keys = np.broadcast_to(start, (n, bands)).copy()
    for r in range(rows):
        keys ^= vals[:, :, r] * _C_ROW
        keys = fmix64(keys)
    dead = np.flatnonzero(np.asarray(empty, dtype=bool))
    if len(dead):
        if row_ids is None:
            raise ValueError("band_keys: row_ids are required when some documents are empty")
        ids = fmix64(_row_id_hashes(row_ids, dead) ^ _C_EMPTY)
        keys[dead] = fmix64(ids[:, None] ^ start[None, :])
    return keys


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Row-wise fraction of equal signature values (the MinHash estimate of Jaccard similarity).
    Two empty documents' rows are equal (all-max): use the ``empty`` mask, they never match."""
    return np.mean(np.asarray(sig_a) == np.asarray(sig_b), axis=-1)
