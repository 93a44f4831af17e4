"""A seeded near-duplicate corpus built from real web documents, with the true Jaccard of every
copy, and a scorer for a dedup answer. Used by bench/dedup.py and tests/test_neardup_corpus.py.

    rows = build_corpus(20_000, seed=0)      # [{"id", "text", "group", "jaccard", "mutation", "origin"}]
    write_jsonl(rows, "in/", shards=8)       # pipeline input: {"id", "text"} per line
    evaluate(rows, removed)                  # removed: {removed id: id of the kept doc it went to}

Source: shared/data/web_dev.jsonl (394 real web pages, ~5 KB of main text each).

Originals (``group == id``, ``jaccard == 1.0``, ``mutation == "original"``): about a third of the
documents (``round(n_docs / 3)``). First the real pages (a seeded random subset when fewer are
needed), then, when more are needed, *spliced* originals: 400-3,000 words (the real pages' length
distribution, clipped) of chunks taken from different pages, at most one chunk per page and doc;
a chunk is one line (paragraph) of a page, lines over 60 words cut into pieces of <= 60 words. So
a spliced original shares at most ~60 of its >= 400 words with any real page (Jaccard <= ~0.15)
and a chunk or two with another spliced original (the largest Jaccard among 800 originals of the
20k corpus: 0.12; ``tests/test_neardup_corpus.py`` checks a sample).

The natural near-duplicates of web_dev (shared/data/web_neardup_pairs_dev.jsonl: 3 pairs with
Jaccard 1.0, 1 with 0.574) are not separate originals: the second page of a pair (``id_b``) is a
copy of the first (``id_a``) with ``mutation == "natural"`` and its measured Jaccard, present when
``id_a`` is among the originals. ``id_b`` pages are never an original nor a splicing source.

Copies (the other ~2/3): each of a random original (so an original has Poisson(~2) copies: at 20k
docs 884 of 6,667 originals have none, the most have 9); a target bucket is drawn evenly among
[0.5,0.7), [0.7,0.8), [0.8,0.9), [0.9,1.0] and a target Jaccard uniformly inside it, then mutations
are applied and re-tuned (up to 6 tries) until the measured Jaccard falls in the bucket (nearly
always: at 20k docs 3,338 / 3,326 / 3,334 / 3,335 copies, none below 0.5; otherwise the closest try
is kept and recorded as it is). ``mutation`` is a short label, ``kind[+kind]...[:rate]``:

- ``exact``: the same text (Jaccard 1.0).
- ``boilerplate``: 1-3 lines of typical navigation / cookie-banner text before the page and/or
  1-2 footer lines (share buttons, newsletter, policy links) + a copyright line (year, site) after it.
- ``move``: 1-3 paragraphs (lines) moved elsewhere in the document.
- ``del`` / ``sub`` / ``ins`` / ``edit``: word deletions, substitutions (a word drawn from the
  corpus' word frequencies), insertions, or a mix of the three (``edit``), in bursts of
  consecutive words (geometric lengths, mean 1-40) touching ``rate`` of the words: 2-20% below
  0.9 (medians 13% / 8% / 4% in the three lower buckets), under 5% ("light") in [0.9,1.0].
- ``surface`` (only with ``build_corpus(..., surface=share)``; bench/dedup.py uses 0.3): on that
  share of the mutated copies, on top of their other mutations, edits of the kind that differ
  between two crawls of one page without changing what it says: ~20% of the numbers get other
  digits (dates, counts, prices), 0.2-1.5% of the words take a Unicode compatibility form
  (fullwidth letters, the ligatures ﬁ/ﬂ/ﬀ/ﬃ/ﬄ) or capitals. They lower the recorded (raw)
  Jaccard -- by 0.07 on average -- but not the Jaccard of normalised shingles.
- combinations, e.g. ``boilerplate+move+sub:0.061``, ``surface+edit:0.080``; ``natural`` (above);
  ``original``.

Mix at 20k docs: in [0.9,1.0] ~43% light edits, 25% boilerplate, 17% move, 10% exact, 5%
boilerplate+move (boilerplate or moves that would take a short page below 0.9 become a light
edit); below 0.9 ~64% edits alone, ~16% edits + boilerplate, ~16% edits + moves, ~4% all three.
Generation: ~5 s for 20k docs on a loaded 2-core machine, plus ~2.5 s once per process to read
and tokenise the source; linear in n_docs.

``jaccard``: the exact Jaccard of the word 5-gram shingle *sets* of the copy and its original, as
defined by ``tokenmill.stages.dedup.signatures.shingles(text, 5, normalize=False)`` -- the raw
text's units, not the normalised ones MinHash uses by default -- (Arrow ``utf8_lower``, then
the units of ``tokenmill.stages.heuristics.words._WORDS["whitespace"]``, 5 consecutive units
joined by a space; a document of 1-4 units is one shingle). It is computed without building the
strings: a document is kept as (word, following separator) tokens, each word's lower-cased unit
hashed once (BLAKE2b-64), a shingle is a 64-bit hash of its 5 unit hashes, and the sets are
compared with sorted NumPy arrays. Because every word of a copy is a whole unit of the lower-cased
original (or of the corpus' vocabulary) and separators never contain word characters, the copy's
text tokenises to exactly these units, so the sets are ``shingles(normalize=False)``'s sets, one for one
(collisions of 64-bit hashes aside); the tests recompute a sample with ``shingles()``.

``evaluate(rows, removed)`` -- the definitions:

- ``removed`` maps every removed document's id to the id of the document it was attributed to
  (tokenmill: ``reject_reason == "near_duplicate_of:<kept id>"``; a peer that gives clusters: every
  member but the smallest id maps to the smallest id). A kept document is any id not in ``removed``.
  ``rep(x)``: x if kept, else ``removed[x]`` followed until a kept id (the cluster's survivor).
- A copy c of original o is **found** iff c and o end up in the same cluster: ``rep(c) == rep(o)``
  (c removed in favour of o; o removed in favour of c; or both removed in favour of one other doc).
  Not found: both kept, or one attributed to a survivor the other does not share.
- ``recall[bucket]`` = found copies / copies whose true Jaccard lies in the bucket: [0.5,0.7),
  [0.7,0.8), [0.8,0.9), [0.9,1.0] (the last one includes 1.0). ``recall_at_0.8`` = the same over
  every copy with Jaccard >= 0.8. Copies below 0.5 (rare) are counted but in no recall figure.
- ``recall_loose`` (and ``recall_at_0.8_loose``): found iff c and o are *not both kept*. It is
  >= ``recall``; it also credits a copy removed in favour of some other document.
- ``precision`` = removed documents whose survivor ``rep(x)`` derives from the same original (same
  ``group``) / removed documents (1.0 when nothing was removed). A copy removed in favour of
  another copy of the same original is correct; removing an original or a copy in favour of a
  document of another group is a false removal.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TOKENMILL_SHARED_DATA", REPO.parent / "shared" / "data"))
WEB_DEV = SHARED_DATA / "web_dev.jsonl"
NGRAM = 5
BUCKETS = ((0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0))
CHUNK_MAX_WORDS = 60                 # a splicing chunk: one line, or a piece of <= 60 words of one
SPLICE_WORDS = (400, 3000)           # length of a spliced original, words (clip of the real lengths)
MAX_TRIES = 6
RATE_MAX = 0.20                      # at most 20% of the words edited

_U = np.uint64
_Q = _U(0xD6E8FEB86659FD93)          # shingle polynomial base (odd)
_C_LEN = _U(0x94D049BB133111EB)
_F1, _F2, _S33 = _U(0xFF51AFD7ED558CCD), _U(0xC4CEB9FE1A85EC53), _U(33)
_M64 = (1 << 64) - 1

HEADER_LINES = (
    "Skip to main content",
    "Home | News | Sport | Business | Culture | Contact",
    "Menu Search Sign in Subscribe",
    "Home » Blog » Articles",
    "We use cookies to improve your experience on our website. By continuing to browse this site you agree to our use of cookies. Accept Learn more",
    "This website uses cookies to ensure you get the best experience. Cookie settings Accept all Reject all",
    "Log in Register Forgot your password?",
    "Toggle navigation About us Services Products Blog Careers Contact",
    "You are here: Home / Uncategorized",
    "Advertisement",
    "Posted by admin in News | 3 Comments",
    "Breaking news Latest stories Most read Opinion Video",
)
FOOTER_LINES = (
    "Share this: Facebook Twitter LinkedIn Email Print",
    "Subscribe to our newsletter and get the latest updates straight to your inbox.",
    "Privacy Policy | Terms of Use | Cookie Settings | Accessibility",
    "Related posts",
    "Back to top",
    "Leave a Reply Cancel reply Your email address will not be published. Required fields are marked",
    "Follow us on Facebook, Twitter and Instagram",
    "Sitemap Contact Imprint Advertise with us Jobs",
    "Comments are closed.",
    "Tags: news, update, featured",
)
_SITES = ("Example Media Group", "The Daily Ledger", "Northwind Publishing", "Blue Harbor Press", "Acme Online",
          "Riverside Gazette", "Metro Digital", "Open Web Network")
COPYRIGHT_LINES = tuple(f"© {y} {s}. All rights reserved." for y in range(2005, 2025) for s in _SITES)


# -- hashing ------------------------------------------------------------------------------------------
def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _S33)
    h = h * _F1
    h ^= h >> _S33
    h *= _F2
    h ^= h >> _S33
    return h


def _unit_hash(low: str) -> int:
    return int.from_bytes(hashlib.blake2b(low.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _shingle_set(u: np.ndarray) -> np.ndarray:
    """Sorted distinct 64-bit hashes of the word-5-gram shingles of a unit-hash sequence."""
    n = len(u)
    if n == 0:
        return np.zeros(0, np.uint64)
    if n < NGRAM:                                   # one shingle: all units
        h = 0
        for x in u.tolist():
            h = (h * int(_Q) + x) & _M64
        return _fmix64(np.array([(h + n * int(_C_LEN)) & _M64], np.uint64))
    m = n - NGRAM + 1
    h = u[:m].copy()
    for k in range(1, NGRAM):
        h *= _Q
        h += u[k:k + m]
    h += _U((NGRAM * int(_C_LEN)) & _M64)
    h = _fmix64(h)
    h.sort()
    keep = np.empty(m, bool)
    keep[0] = True
    np.not_equal(h[1:], h[:-1], out=keep[1:])
    return h[keep]


def _set_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted distinct uint64 arrays."""
    if not len(a) and not len(b):
        return 1.0
    if not len(a) or not len(b):
        return 0.0
    if len(a) > len(b):
        a, b = b, a
    idx = np.searchsorted(b, a)
    idx[idx == len(b)] = 0
    inter = int(np.count_nonzero(b[idx] == a))
    return inter / (len(a) + len(b) - inter)


# -- tokens ---------------------------------------------------------------------------------------------
class _Vocab:
    """(word, separator-after-it) tokens. A document body is an int32 array of token ids; its text is
    the tokens' strings joined; its units are the tokens' lower-cased words."""

    def __init__(self):
        self.strs: list[str] = []
        self.words: list[str] = []
        self.seps: list[str] = []
        self.index: dict[tuple[str, str], int] = {}
        self.word_low: dict[str, str] = {}          # original-case word -> its lower-cased unit
        self._obj = np.zeros(1024, object)          # the token's string (word + separator)
        self._uh = np.zeros(1024, np.uint64)        # unit hash per token
        self._nl = np.zeros(1024, bool)             # separator contains a newline
        self._space = np.zeros(1024, bool)          # separator is exactly " "
        self._hash_of: dict[str, int] = {}

    def token(self, word: str, sep: str) -> int:
        key = (word, sep)
        t = self.index.get(key)
        if t is None:
            t = len(self.strs)
            self.index[key] = t
            self.strs.append(word + sep)
            self.words.append(word)
            self.seps.append(sep)
            if t >= len(self._uh):
                for name in ("_obj", "_uh", "_nl", "_space"):
                    old = getattr(self, name)
                    new = np.zeros(2 * len(old), old.dtype)
                    new[:len(old)] = old
                    setattr(self, name, new)
            low = self.word_low[word]
            h = self._hash_of.get(low)
            if h is None:
                h = self._hash_of[low] = _unit_hash(low)
            self._uh[t] = h
            self._obj[t] = word + sep
            self._nl[t] = "\n" in sep
            self._space[t] = sep == " "
        return t

    @property
    def uh(self) -> np.ndarray:
        return self._uh

    @property
    def nl(self) -> np.ndarray:
        return self._nl

    @property
    def space(self) -> np.ndarray:
        return self._space

    def render(self, toks: np.ndarray) -> str:
        return "".join(self._obj[toks].tolist()) if len(toks) else ""


@cache
def _word_re():
    from tokenmill.stages.heuristics.words import _WORDS

    return _WORDS["whitespace"]


def _lower_all(texts: list[str]) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.utf8_lower(pa.array(texts, pa.large_string())).to_pylist()


def _tokenize(vocab: _Vocab, text: str, low: str) -> tuple[str, np.ndarray]:
    """(lead: the text before the first unit, token ids). The last token's separator always
    holds a newline (appended if needed) so nothing can be glued to the last word."""
    if len(low) != len(text):                       # utf8_lower maps code points one to one
        raise ValueError("lower-casing changed the length of a text")
    spans = [m.span() for m in _word_re().finditer(low)]
    if not spans:
        return text, np.zeros(0, np.int32)
    wl = vocab.word_low
    toks = np.empty(len(spans), np.int32)
    for i, (s, e) in enumerate(spans):
        word = text[s:e]
        wl.setdefault(word, low[s:e])
        sep = text[e:spans[i + 1][0]] if i + 1 < len(spans) else text[e:]
        if i + 1 == len(spans) and "\n" not in sep:
            sep += "\n"
        toks[i] = vocab.token(word, sep)
    return text[:spans[0][0]], toks


def _line_ends(vocab: _Vocab, body: np.ndarray) -> np.ndarray:
    """Exclusive end index of every line of a body (the last one always ends at len(body))."""
    ends = np.flatnonzero(vocab.nl[body]) + 1
    if not len(ends) or ends[-1] != len(body):
        ends = np.append(ends, len(body))
    return ends


# -- the source ---------------------------------------------------------------------------------------
class _Source:
    """The real pages, tokenised once per process (cached by path)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        recs = [json.loads(line) for line in open(self.path, encoding="utf-8")]
        recs = [r for r in recs if isinstance(r.get("text"), str) and r["text"].strip()]
        pairs_path = self.path.parent / "web_neardup_pairs_dev.jsonl"
        self.natural: list[tuple[str, str]] = []
        if pairs_path.exists():
            self.natural = [(p["id_a"], p["id_b"]) for p in map(json.loads, open(pairs_path, encoding="utf-8"))]
        v = self.vocab = _Vocab()
        lows = _lower_all([r["text"] for r in recs])
        self.ids, self.texts, self.leads, self.bodies, self.sets = [], [], [], [], []
        for r, low in zip(recs, lows):
            lead, body = _tokenize(v, r["text"], low)
            if not len(body):
                continue
            self.ids.append(r["id"])
            self.texts.append(r["text"])
            self.leads.append(lead)
            self.bodies.append(body)
            self.sets.append(_shingle_set(v.uh[body]))
        self.pos = {d: i for i, d in enumerate(self.ids)}
        copies = {b for _, b in self.natural}
        # bases: pages that may be an original or a splicing source (not the second page of a pair)
        self.bases = [i for i, d in enumerate(self.ids) if d not in copies]
        # the pool of replacement / inserted words: every word occurrence, followed by one space
        space_tok = {}
        pool = []
        for i in self.bases:
            for t in self.bodies[i].tolist():
                w = v.words[t]
                s = space_tok.get(w)
                if s is None:
                    s = space_tok[w] = v.token(w, " ")
                pool.append(s)
        self.word_pool = np.asarray(pool, np.int32)
        self.is_number = np.zeros(0, bool)
        self.refresh_numbers()
        # chunks for splicing: lines (<= CHUNK_MAX_WORDS words; longer ones cut into pieces)
        chunks, chunk_src = [], []
        for i in self.bases:
            body = self.bodies[i]
            start = 0
            for end in _line_ends(v, body).tolist():
                n = end - start
                pieces = -(-n // CHUNK_MAX_WORDS)
                cuts = np.linspace(start, end, pieces + 1).round().astype(int)
                for a, b in zip(cuts[:-1], cuts[1:]):
                    if b > a:
                        piece = body[a:b].copy()
                        piece[-1] = self._newline_end(piece[-1])
                        chunks.append(piece)
                        chunk_src.append(i)
                start = end
        self.chunks = chunks
        self.chunk_src = np.asarray(chunk_src, np.int32)
        self.chunk_len = np.asarray([len(c) for c in chunks], np.int64)
        self.lengths = np.asarray([len(self.bodies[i]) for i in self.bases], np.int64)
        # boilerplate lines, tokenised like the pages
        lines = list(HEADER_LINES + FOOTER_LINES + COPYRIGHT_LINES)
        toks = [_tokenize(v, s + "\n", low)[1] for s, low in zip(lines, _lower_all([s + "\n" for s in lines]))]
        nh, nf = len(HEADER_LINES), len(FOOTER_LINES)
        self.header = toks[:nh]
        self.footer = toks[nh:nh + nf]
        self.copyright = toks[nh + nf:]

    def refresh_numbers(self) -> None:
        """``is_number[token]``: the token's word is ASCII digits (grown as the vocabulary grows)."""
        v = self.vocab
        have = len(self.is_number)
        if have < len(v.words):
            extra = np.array([w.isascii() and w.isdigit() for w in v.words[have:]], bool)
            self.is_number = np.concatenate([self.is_number, extra])

    def _newline_end(self, t: int) -> int:
        v = self.vocab
        sep = v.seps[t]
        if "\n" in sep:
            sep = sep[:sep.rindex("\n") + 1]
        else:
            sep = sep.rstrip() + "\n"
        return v.token(v.words[t], sep)


@lru_cache(maxsize=4)
def _source(path: str) -> _Source:
    return _Source(Path(path))


# -- documents and mutations -----------------------------------------------------------------------------
class _Doc:
    __slots__ = ("head", "lead", "body", "set", "text")

    def __init__(self, head: np.ndarray, lead: str, body: np.ndarray, text: Optional[str] = None):
        self.head, self.lead, self.body, self.text = head, lead, body, text
        self.set = None

    def units(self, vocab: _Vocab) -> np.ndarray:
        toks = np.concatenate([self.head, self.body]) if len(self.head) else self.body
        return vocab.uh[toks]

    def shingles(self, vocab: _Vocab) -> np.ndarray:
        if self.set is None:
            self.set = _shingle_set(self.units(vocab))
        return self.set

    def render(self, vocab: _Vocab) -> str:
        if self.text is None:
            self.text = vocab.render(self.head) + self.lead + vocab.render(self.body)
        return self.text


_EMPTY = np.zeros(0, np.int32)
_EDIT_OPS = ("del", "sub", "ins", "edit")
_TOP_KINDS = (("exact", 0.10), ("boilerplate", 0.25), ("move", 0.20), ("boilerplate+move", 0.10), ("light", 0.35))


class _Mutator:
    def __init__(self, src: _Source, rng: np.random.Generator):
        self.src, self.v, self.rng = src, src.vocab, rng

    def _subst(self, body: np.ndarray, pos: np.ndarray) -> None:
        """Replace the words at ``pos`` by pool words, keeping each position's separator."""
        if not len(pos):
            return
        new = self.src.word_pool[self.rng.integers(len(self.src.word_pool), size=len(pos))]
        keep_sep = ~self.v.space[body[pos]]
        if keep_sep.any():
            v = self.v
            for j in np.flatnonzero(keep_sep).tolist():
                new[j] = v.token(v.words[new[j]], v.seps[body[pos[j]]])
        body[pos] = new

    def edit(self, body: np.ndarray, rate: float, burst: float, op: str) -> np.ndarray:
        """Touch ~rate of the words in bursts of geometric length (mean ``burst``)."""
        rng, n = self.rng, len(body)
        k = max(1, int(round(rate * n)))
        lens = rng.geometric(1.0 / burst, size=int(k / burst) + 4) if burst > 1 else np.ones(k, np.int64)
        lens = lens[:int(np.searchsorted(np.cumsum(lens), k)) + 1]
        lens[-1] -= max(0, int(lens.sum()) - k)
        lens = lens[lens > 0]
        starts = rng.integers(0, n, size=len(lens))
        ops = np.full(len(lens), _EDIT_OPS.index(op)) if op != "edit" else rng.integers(0, 3, size=len(lens))
        body = body.copy()
        keep = np.ones(n, np.int64)
        for o in (0, 1):                                   # deletions, substitutions: ranges of positions
            sel = ops == o
            if not sel.any():
                continue
            st = starts[sel]
            cover = np.bincount(st, minlength=n + 1) - np.bincount(np.minimum(st + lens[sel], n), minlength=n + 1)
            hit = np.cumsum(cover[:n]) > 0
            if o == 0:
                keep[hit] = 0
            else:
                self._subst(body, np.flatnonzero(hit))
        sel = ops == 2                                     # insertions after position start
        ins = (np.bincount(starts[sel], weights=lens[sel], minlength=n).astype(np.int64) if sel.any()
               else np.zeros(n, np.int64))
        if not keep.any():                                 # never delete everything
            keep[0] = 1
        reps = keep + ins
        out = np.repeat(body, reps)
        total = int(ins.sum())
        if total:
            first = np.cumsum(reps) - reps + keep          # first inserted slot after each position
            idx = np.repeat(first, ins) + (np.arange(total) - np.repeat(np.cumsum(ins) - ins, ins))
            out[idx] = self.src.word_pool[rng.integers(len(self.src.word_pool), size=total)]
        return out

    def move(self, body: np.ndarray) -> np.ndarray:
        ends = _line_ends(self.v, body)
        if len(ends) < 3:
            return body
        starts = np.concatenate([[0], ends[:-1]])
        lines = [body[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
        for _ in range(int(self.rng.integers(1, 4))):
            i = int(self.rng.integers(len(lines)))
            line = lines.pop(i)
            j = int(self.rng.integers(len(lines) + 1))
            if j == i:
                j = (j + 1) % (len(lines) + 1)
            lines.insert(j, line)
        return np.concatenate(lines)

    def boilerplate(self, head: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng, src = self.rng, self.src
        where = int(rng.integers(3))                       # 0 header, 1 footer, 2 both
        if where in (0, 2):
            pick = rng.choice(len(src.header), size=int(rng.integers(1, 4)), replace=False)
            head = np.concatenate([src.header[i] for i in sorted(pick.tolist())] + [head])
        if where in (1, 2):
            pick = rng.choice(len(src.footer), size=int(rng.integers(1, 3)), replace=False)
            parts = [src.footer[i] for i in pick.tolist()]
            parts.append(src.copyright[int(rng.integers(len(src.copyright)))])
            body = np.concatenate([body] + parts)
        return head, body

    def surface(self, body: np.ndarray) -> np.ndarray:
        """Surface edits that change words' raw units but not their normalised ones: about 20% of
        the numbers get other digits, and 0.2-1.5% of the words take a compatibility form (fullwidth
        letters, or the ligatures ﬁ/ﬂ) or a capital (which changes no unit at all)."""
        v, rng, n = self.v, self.rng, len(body)
        body = body.copy()
        self.src.refresh_numbers()
        numbers = np.flatnonzero(self.src.is_number[body])
        pos = np.union1d(numbers[rng.random(len(numbers)) < 0.2],
                         rng.choice(n, size=max(1, int(round(float(rng.uniform(0.002, 0.015)) * n))), replace=True))
        for p in pos.tolist():
            t = int(body[p])
            new = _variant(v.words[t], rng)
            if new != v.words[t]:
                v.word_low.setdefault(new, new.lower())
                body[p] = v.token(new, v.seps[t])
        return body

    def apply(self, orig: _Doc, kinds: tuple[str, ...], rate: float, burst: float) -> _Doc:
        head, body = orig.head, orig.body
        for kind in kinds:
            if kind == "surface":
                body = self.surface(body)
            elif kind == "move":
                body = self.move(body)
            elif kind == "boilerplate":
                head, body = self.boilerplate(head, body)
            elif kind in _EDIT_OPS:
                body = self.edit(body, rate, burst, kind)
        return _Doc(head, orig.lead, body)


_LIGATURES = (("ffi", "\ufb03"), ("ffl", "\ufb04"), ("fi", "\ufb01"), ("fl", "\ufb02"), ("ff", "\ufb00"))


def _variant(word: str, rng: np.random.Generator) -> str:
    """Another surface form of ``word`` with the same normalised unit (module docstring)."""
    if word.isascii() and word.isdigit():
        while True:
            new = str(int(rng.integers(1, 10))) + "".join(map(str, rng.integers(0, 10, size=int(rng.integers(0, 4)))))
            if new != word:
                return new
    if not word.isascii() or not word.isalnum():
        return word.capitalize()
    pick = float(rng.random())
    if pick < 0.4:
        for plain, lig in _LIGATURES:
            if plain in word:
                return word.replace(plain, lig, 1)
    if pick < 0.7:
        return "".join(chr(ord(c) + 0xFEE0) for c in word)      # fullwidth forms
    return word.upper() if pick < 0.85 else word.capitalize()


def _bucket_of(j: float) -> int:
    """Index into BUCKETS, or -1 below 0.5."""
    for i, (lo, hi) in enumerate(BUCKETS):
        if lo <= j < hi or (i == len(BUCKETS) - 1 and j >= lo):
            return i
    return -1


def _plan_rate(target: float, rng: np.random.Generator) -> tuple[float, float]:
    """(rate, mean burst) that should give ``target`` Jaccard with substitutions: a burst of L
    substituted words replaces L+4 of the N shingles, so with b = rate*(L+4)/L of them replaced,
    J ~ (1-b)/(1+b)."""
    b = (1 - target) / (1 + target)
    if b <= 0.025:
        return max(b / 5, 1e-4), 1.0                    # light scattered edits (< 2% of words)
    lo, hi = max(0.02, b / 5), min(RATE_MAX, 0.85 * b)
    rate = float(rng.uniform(lo, hi)) if hi > lo else min(RATE_MAX, b / 2)
    burst = float(np.clip(4 * rate / max(b - rate, 1e-6), 1.0, 40.0))
    return rate, burst


# -- the corpus ------------------------------------------------------------------------------------------
def build_corpus(n_docs: int, seed: int = 0, source=WEB_DEV, surface: float = 0.0) -> list[dict]:
    """``n_docs`` rows {"id", "text", "group", "jaccard", "mutation", "origin"} in a seeded random
    order (module docstring). ``surface``: the share of mutated copies that also get surface edits
    (``surface`` kind). Deterministic in (n_docs, seed, source, surface); ``surface=0`` gives the
    corpus of earlier versions, byte for byte."""
    if n_docs < 1:
        raise ValueError("n_docs must be >= 1")
    src = _source(str(source))
    v = src.vocab
    rng = np.random.default_rng([seed, n_docs, 0x6E64])
    mut = _Mutator(src, rng)
    n_orig = max(1, int(round(n_docs / 3)))

    # originals: real pages, then spliced ones
    bases = rng.permutation(src.bases)
    originals: list[tuple[str, _Doc]] = []          # (origin label, doc)
    for i in bases[:n_orig].tolist():
        d = _Doc(_EMPTY, src.leads[i], src.bodies[i], src.texts[i])
        d.set = src.sets[i]
        originals.append((src.ids[i], d))
    n_splice = n_orig - len(originals)
    if n_splice > 0:
        lens = np.clip(src.lengths[rng.integers(len(src.lengths), size=n_splice)], *SPLICE_WORDS)
        n_chunks = len(src.chunks)
        for target in lens.tolist():
            picked, got, used = [], 0, set()
            while got < target:
                cand = rng.integers(n_chunks, size=64)
                for c in cand.tolist():
                    s = int(src.chunk_src[c])
                    if s in used:
                        continue
                    used.add(s)
                    picked.append(src.chunks[c])
                    got += int(src.chunk_len[c])
                    if got >= target:
                        break
                if len(used) >= len(src.bases):
                    break
            originals.append(("splice", _Doc(_EMPTY, "", np.concatenate(picked))))

    # natural copies (second page of a web_dev near-duplicate pair whose first page is an original)
    orig_pos = {label: k for k, (label, _) in enumerate(originals) if label != "splice"}
    copies: list[tuple[int, _Doc, float, str]] = []   # (original index, doc, jaccard, mutation)
    n_copies = n_docs - n_orig
    for a, b in src.natural:
        if a in orig_pos and b in src.pos and len(copies) < n_copies:
            k, j = orig_pos[a], src.pos[b]
            d = _Doc(_EMPTY, src.leads[j], src.bodies[j], src.texts[j])
            d.set = src.sets[j]
            copies.append((k, d, _set_jaccard(originals[k][1].shingles(v), d.set), "natural"))

    # mutated copies
    n_mut = n_copies - len(copies)
    targets = rng.permutation(np.resize(np.arange(len(BUCKETS)), n_mut))
    of = rng.integers(len(originals), size=n_mut)
    top_names = [k for k, _ in _TOP_KINDS]
    top_cum = np.cumsum([p for _, p in _TOP_KINDS])
    u_target, u_kind = rng.random(n_mut), rng.random(n_mut)
    u_extra = rng.random((n_mut, 2))
    ops = rng.integers(len(_EDIT_OPS), size=n_mut)
    surf = np.random.default_rng([seed, n_docs, 0x5F]).random(n_mut) < surface   # own stream: surface=0 as before
    for c, (bucket, k) in enumerate(zip(targets.tolist(), of.tolist())):
        orig = originals[k][1]
        oset = orig.shingles(v)
        lo, hi = BUCKETS[bucket]
        target = lo + float(u_target[c]) * ((hi if bucket < len(BUCKETS) - 1 else 1.0) - lo)
        op = _EDIT_OPS[int(ops[c])]
        if bucket == len(BUCKETS) - 1:
            kind = top_names[min(int(np.searchsorted(top_cum, u_kind[c] * top_cum[-1], side="right")),
                                 len(top_names) - 1)]
            extras = () if kind == "light" else tuple(kind.split("+"))
            edit = kind == "light"
        else:
            extras = tuple(x for x, u in zip(("boilerplate", "move"), u_extra[c].tolist()) if u < 0.2)
            edit = True
        if extras == ("exact",):
            copies.append((k, _Doc(orig.head, orig.lead, orig.body, orig.text), 1.0, "exact"))
            copies[-1][1].set = oset
            continue
        rate, burst = _plan_rate(target, rng) if edit else (0.0, 1.0)
        best = None
        for attempt in range(MAX_TRIES):
            kinds = ("surface",) * bool(surf[c]) + extras + ((op,) if edit else ())
            d = mut.apply(orig, kinds, rate, burst)
            j = _set_jaccard(oset, d.shingles(v))
            if best is None or abs(j - target) < abs(best[1] - target):
                best = (d, j, kinds, rate)
            if _bucket_of(j) == bucket:
                best = (d, j, kinds, rate)
                break
            if not edit:                                  # boilerplate/moves alone too much (a short
                edit, extras = True, ()                   # page): a light edit instead
                rate, burst = _plan_rate(target, rng)
                continue
            if attempt >= 2 and j < lo:
                extras = ()                               # extras alone may be too much for a short doc
            # retune: the share of replaced shingles b ~ rate * (burst + 4) / burst should move by f;
            # the rate stays <= RATE_MAX, shorter bursts make up the rest
            f = ((1 - target) / (1 + target)) / max((1 - j) / (1 + j), 1e-4)
            want = rate * f
            rate = float(np.clip(want, 1e-4, RATE_MAX))
            if want > RATE_MAX and burst > 1:
                grow = (want / rate) * (burst + 4) / burst
                burst = float(np.clip(4 / (grow - 1), 1.0, 40.0))
        d, j, kinds, rate = best
        label = "+".join(kinds) + (f":{rate:.3f}" if any(x in _EDIT_OPS for x in kinds) else "")
        copies.append((k, d, j, label))

    # rows in a seeded random order; ids name positions
    n = len(originals) + len(copies)
    order = rng.permutation(n)
    width = max(7, len(str(n - 1)))
    ids = [f"nd{p:0{width}d}" for p in order.tolist()]
    rows: list[dict] = [None] * n  # type: ignore[list-item]
    for k, (label, d) in enumerate(originals):
        rows[order[k]] = {"id": ids[k], "text": d.render(v), "group": ids[k], "jaccard": 1.0,
                          "mutation": "original", "origin": label}
    for c, (k, d, j, label) in enumerate(copies):
        m = len(originals) + c
        rows[order[m]] = {"id": ids[m], "text": d.render(v), "group": ids[k], "jaccard": float(j),
                          "mutation": label, "origin": originals[k][0]}
    return rows


# -- output ----------------------------------------------------------------------------------------------
def write_jsonl(rows: Sequence[dict], path, shards: int = 1, extra: Iterable[str] = ()) -> list[Path]:
    """Write {"id", "text"} (+ the ``extra`` fields, e.g. ("group", "jaccard"): tokenmill puts
    fields it does not own in ``meta``) per line. ``path``: a ``.jsonl`` file when ``shards == 1``,
    else a folder that gets ``part-00000.jsonl`` ... (contiguous slices of ``rows``)."""
    path = Path(path)
    fields = ("id", "text", *extra)
    if shards == 1 and path.suffix == ".jsonl":
        targets = [path]
    else:
        path.mkdir(parents=True, exist_ok=True)
        targets = [path / f"part-{s:05d}.jsonl" for s in range(shards)]
    path.parent.mkdir(parents=True, exist_ok=True)
    per = -(-len(rows) // len(targets)) if rows else 0
    for s, target in enumerate(targets):
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in rows[s * per:(s + 1) * per]:
                fh.write(json.dumps({f: r[f] for f in fields}, ensure_ascii=False) + "\n")
        tmp.replace(target)
    return targets


# -- scoring ---------------------------------------------------------------------------------------------
def bucket_name(i: int) -> str:
    lo, hi = BUCKETS[i]
    return f"[{lo},{hi}]" if i == len(BUCKETS) - 1 else f"[{lo},{hi})"


def evaluate(rows: Sequence[dict], removed: dict) -> dict:
    """Recall per true-Jaccard bucket and precision of a dedup answer (definitions: module docstring).
    ``rows`` need "id", "group" and "jaccard" (text is not read)."""
    group = {r["id"]: r["group"] for r in rows}
    unknown = [x for pair in removed.items() for x in pair if x not in group]
    if unknown:
        raise ValueError(f"removed names ids that are not in the corpus, e.g. {unknown[:3]}")

    def rep(x: str) -> str:
        seen = 0
        while x in removed:
            x = removed[x]
            seen += 1
            if seen > len(removed):
                raise ValueError(f"removed has a cycle through {x!r}")
        return x

    survivor = {x: rep(x) for x in removed}
    n_b = [0] * len(BUCKETS)
    found_b = [0] * len(BUCKETS)
    loose_b = [0] * len(BUCKETS)
    below = {"copies": 0, "found": 0}
    copies = originals = 0
    for r in rows:
        c, o = r["id"], r["group"]
        if c == o:
            originals += 1
            continue
        copies += 1
        same = survivor.get(c, c) == survivor.get(o, o)
        loose = c in removed or o in removed
        b = _bucket_of(float(r["jaccard"]))
        if b < 0:
            below["copies"] += 1
            below["found"] += same
            continue
        n_b[b] += 1
        found_b[b] += same
        loose_b[b] += loose
    good = sum(1 for x, s in survivor.items() if group[s] == group[x])
    ratio = lambda a, b: a / b if b else None
    at = [i for i, (lo, _) in enumerate(BUCKETS) if lo >= 0.8]
    n_at, f_at, l_at = (sum(x[i] for i in at) for x in (n_b, found_b, loose_b))
    removed_originals = sum(1 for x in removed if group[x] == x)
    return {
        "docs": len(rows), "originals": originals, "copies": copies, "removed": len(removed),
        "kept": len(rows) - len(removed),
        "recall": {bucket_name(i): ratio(found_b[i], n_b[i]) for i in range(len(BUCKETS))},
        "recall_loose": {bucket_name(i): ratio(loose_b[i], n_b[i]) for i in range(len(BUCKETS))},
        "copies_per_bucket": {bucket_name(i): n_b[i] for i in range(len(BUCKETS))},
        "found_per_bucket": {bucket_name(i): found_b[i] for i in range(len(BUCKETS))},
        "copies_below_0.5": below["copies"], "found_below_0.5": below["found"],
        "recall_at_0.8": ratio(f_at, n_at), "recall_at_0.8_loose": ratio(l_at, n_at), "copies_at_0.8": n_at,
        "recall_all": ratio(sum(found_b), sum(n_b)),
        "precision": good / len(removed) if removed else 1.0,
        "true_removals": good, "false_removals": len(removed) - good,
        "removed_originals": removed_originals,
    }


def clusters_to_removed(clusters: Iterable[Iterable[str]]) -> dict[str, str]:
    """A peer's clusters (sets of ids) -> ``removed``: every member but the smallest id maps to it."""
    out: dict[str, str] = {}
    for members in clusters:
        members = sorted(members)
        for m in members[1:]:
            out[m] = members[0]
    return out


def summary(rows: Sequence[dict]) -> dict:
    """Counts of the corpus: originals (real / spliced), copies per bucket and per mutation kind."""
    per_bucket = [0] * len(BUCKETS)
    below = 0
    kinds: dict[str, int] = {}
    real = spliced = 0
    for r in rows:
        if r["id"] == r["group"]:
            if r["origin"] == "splice":
                spliced += 1
            else:
                real += 1
            continue
        b = _bucket_of(r["jaccard"])
        if b < 0:
            below += 1
        else:
            per_bucket[b] += 1
        kind = r["mutation"].split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"docs": len(rows), "originals_real": real, "originals_spliced": spliced,
            "copies": len(rows) - real - spliced,
            "copies_per_bucket": {bucket_name(i): per_bucket[i] for i in range(len(BUCKETS))},
            "copies_below_0.5": below,
            "mutations": dict(sorted(kinds.items(), key=lambda kv: -kv[1]))}
