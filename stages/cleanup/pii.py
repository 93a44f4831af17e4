"""``pii``: a modifier that replaces personal data in ``text`` with placeholders, and counts per
document how many of each kind it replaced and how many characters they held (``chars_replaced``;
report ``stage_counts.pii``).

Kinds (``kinds``; each replaced by its ``placeholders`` entry, ``<EMAIL>`` ...):

- ``email``: ``local@domain.tld``; not when the "TLD" is a file extension (``icon@2x.png``,
  ``sprite@3x.webp``, ``main@v2.css``: png jpg jpeg gif svg webp bmp ico tif tiff avif css js).
- ``ip``: IPv4, a dotted quad of octets 0-255 written without leading zeros; IPv6, eight hex
  groups, or a ``::``-compressed form of at least two groups with at least one decimal digit
  (``fe80::1``, ``2001:db8::ff00:42:8329``; not ``::1``, nor ``a::b``/``dead::beef``, which read as
  code).
- ``phone``: international, ``+CC`` or ``00CC`` then groups (a ``(0)`` or ``(area)`` group too),
  or ``+`` and 7-15 digits run together; national: North American ``(555) 123-4567``,
  ``555-123-4567``, ``555.123.4567``, ``555 123 4567`` (one separator throughout, area code 2-9xx,
  an optional leading ``1``); French ``01 23 45 67 89`` (dots or hyphens too); a two-digit area
  code in brackets without a trunk 0, as in Brazil (``(11) 91234-5678``, ``(11) 3456-7890``; not
  ``(12) 2019-2020``, a volume and its years); Chinese mobiles ``138 0013 8000`` /
  ``138-0013-8000``; trunk-0 numbers as
  in the UK and Germany (``020 7946 0958``, ``030 1234567``, ``030-123456-78``, ``030/1234567``,
  ``(030) 1234567``, ``030 / 2325 786``). Groups of international and trunk-0 numbers are split by
  a space, or by ``.`` ``-`` ``/`` or an en dash, spaced or not; a spaced one before a 0 ends the
  number (it starts the next of a list: ``+33 1 23 45 67 89 / 01 23 45 67 89``). An international
  phone has 7-15 digits after its prefix, a national one 9-13 (an extension included); groups
  that run on into a following number are left out of the replacement, last first, down to that.
- ``payment_card``: 13-19 digits, run together or in groups of 4 (4-6-5 / 4-6-4 for Amex and
  Diners) joined by one kind of separator (space or hyphen), that pass the Luhn check and start
  with a known IIN with a length its brand issues: Visa 4 (13, 16, 19), Mastercard 51-55 and
  2221-2720 (16), Amex 34/37 (15), Discover 6011/644-649/65 (16-19), JCB 3528-3589 (16-19), Diners
  300-305/36/38 (14-19), UnionPay 62 (16-19).
- ``iban``: two capital letters, two check digits and a BBAN, run together or in groups of 4 split
  by single spaces, whose length is that of its country (``IBAN_LENGTHS``: SEPA and the other
  common IBAN countries) and that passes the mod-97 check. Groups running on past the country's
  length (a capitalised word after the IBAN) are left out of the replacement.

Look-alikes left alone (the tests hold every one):

- dates (``2023-01-15``, ``15.01.2023``, ``01/15/2023``, ``01-15-2023``, and one followed by a
  number: ``03/29/06 2005``), times (``12:30:45``), years, prices (``$1,234.56``), plain numbers
  and numbers in thousands groups (``1 234 567``), numbers in URL paths (no phone starts right
  after a ``/``), US ZIP+4 codes (``01605-3109``); a bare run of digits is never a phone (it is
  an order number as often), only ``+`` makes one;
- ISBNs (``ISBN 978-3-16-148410-0``, ``ISBN-10 0-306-40615-2``, ``9783161484100``: no card IIN),
  and any card- or phone-shaped number right after the word ``ISBN``;
- version numbers: a dotted quad right after a version marker (``v``, ``ver``, ``version``,
  ``release``, ``build``, e.g. ``v1.2.3.4``, ``version 10.0.0.1``) or inside a longer dotted run
  (``1.2.3.4.5``, SNMP OIDs) is not an IP; any other dotted quad with valid octets is one
  (``Windows 10.0.0.1`` too: a bare quad is what an IP looks like);
- numbers with fewer than 7 digits (never a phone), card-shaped numbers that fail Luhn or have no
  known IIN (left as they are, not retried as phones), IBAN-shaped codes that fail mod-97 or the
  length of their country, MAC addresses (six groups are not IPv6).

How: one RE2 prefilter (``PREFILTER``: an ``@``, 7 digits with separators, a dotted quad,
hex-colon groups, an IBAN's start) picks, vectorised over the batch, the rows that may hold PII,
then their lines (no pattern crosses a line break); only those lines go through one Python
pattern (``PATTERN``, a named group per kind, in precedence order: email, IBAN, card, IP, phone,
so a card or an IBAN is never read as a phone) in one pass (``redact``: the ``re.sub`` loop
written out, so that the scan can resume inside a match whose run-on groups were left out) that
validates each match (Luhn, mod-97, octets, exclusions) and counts. Every repetition in the
pattern is bounded and every alternative starts behind a one-character look-behind, so hostile
input (megabytes of digits, of ``@``) stays linear. Rows where nothing was replaced keep their
exact bytes (a replaced row's other lines too); a null text stays null.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Literal, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tokenmill.engine.counts import STAGE_COUNTS, counts_column
from tokenmill.engine.schema import set_column
from tokenmill.engine.stage import Modifier, register_stage

Kind = Literal["email", "ip", "phone", "payment_card", "iban"]
KINDS: tuple[str, ...] = ("email", "ip", "phone", "payment_card", "iban")
#: the counter of the characters of PII replaced (what the placeholders stand for), per document
CHARS_REPLACED = "chars_replaced"
PLACEHOLDERS: dict[str, str] = {"email": "<EMAIL>", "ip": "<IP>", "phone": "<PHONE>",
                                "payment_card": "<CARD>", "iban": "<IBAN>"}

#: RE2 (Arrow): a row that matches none of these holds no PII this stage would replace
PREFILTER = (r"@|\d(?:[ .\-/()\x{2013}]{0,5}\d){6}|\d\.\d{1,3}\.\d{1,3}\.\d"
             r"|[0-9A-Fa-f]:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]|[0-9A-Fa-f]::|::[0-9A-Fa-f]"
             r"|[A-Z]{2}\d{2} ?[A-Z0-9]{4}")

_HEX = r"[0-9A-Fa-f]{1,4}"
_EMAIL = (r"(?<![\w.%+\-])[\w.%+\-]{1,64}@(?:[^\W_](?:[\w\-]{0,61}[^\W_])?\.){1,8}[^\W\d_]{2,24}"
          r"(?![\w\-]|\.[^\W_])")
_IBAN = r"(?<!\w)[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)"
_CARD = (r"(?<![\w+\-.])(?:\d{13,19}|\d{4}(?P<sep_card>[ \-])\d{4}(?P=sep_card)\d{4}(?P=sep_card)\d{4}"
         r"(?:(?P=sep_card)\d{1,3})?|\d{4}(?P<sep_amex>[ \-])\d{6}(?P=sep_amex)\d{4,5})(?!\w|[.\-]\d)")
_IPV4 = r"(?<![\w.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)"
_IPV6 = (rf"(?<![\w:.])(?:(?:{_HEX}:){{7}}{_HEX}|(?:{_HEX}(?::{_HEX}){{0,6}})?::(?:{_HEX}(?::{_HEX}){{0,6}})?)"
         r"(?![\w:]|\.\d)")
#: between a phone's groups: a space, or . - / or an en dash, spaced or not ("030 / 2325", "+49 - (40)"),
#: but a spaced one before a 0 starts the next number of a list ("+33 1 23 45 67 89 / 01 23 45 67 89")
_SEP = r"(?:(?! ?[\-/\u2013] 0| [\-/\u2013]0) ?[\-/.\u2013] ?| )"
_PHONE_GROUP = rf"(?:{_SEP}?\(\d{{1,5}}\)|(?:{_SEP}|(?<=\)))\d{{1,8}})"
_PHONE = (r"(?<![\w+\-./])(?:"
          rf"(?:\+|00)[1-9]\d{{0,2}}{_PHONE_GROUP}{{1,7}}"                         # +44 20 7946 0958
          r"|\+[1-9]\d{6,14}"                                                      # +447946095812
          r"|(?:1[ .\-]?)?\([2-9]\d{2}\) ?\d{3}[ .\-]\d{4}"                        # (555) 123-4567
          r"|(?:1[ .\-])?[2-9]\d{2}(?P<sep_us>[ .\-])\d{3}(?P=sep_us)\d{4}"   # 555-123-4567
          r"|0[1-9](?P<sep_fr>[ .\-])\d{2}(?:(?P=sep_fr)\d{2}){3}"                 # 01 23 45 67 89
          r"|(?P<paren_area>\([1-9]\d\) ?\d{4,5}[ .\-]\d{4})"                          # (11) 91234-5678
          r"|1[3-9]\d(?P<sep_cn>[ \-])\d{4}(?P=sep_cn)\d{4}"                          # 138 0013 8000
          rf"|(?:\(0\d{{1,4}}\) ?|0\d{{1,4}}{_SEP})\d{{1,8}}(?:{_SEP}\d{{1,8}}){{0,3}}"   # 020 7946 0958
          r")(?!\w|[.\-]\d)")
#: one pass over a row: the first alternative that matches at a position wins (email, IBAN, card,
#: IP, phone); ``redact`` then validates what it matched
PATTERN = re.compile("|".join(f"(?P<{name}>{rx})" for name, rx in (
    ("email", _EMAIL), ("iban", _IBAN), ("card", _CARD), ("ipv4", _IPV4), ("ipv6", _IPV6), ("phone", _PHONE))))

FILE_EXTENSIONS = frozenset("png jpg jpeg gif svg webp bmp ico tif tiff avif css js".split())
_VERSION_BEFORE = re.compile(r"(?i)(?:\bv|\bver|\bversion|\brelease|\bbuild)\.?[ \t]*[:#]?[ \t]*$")
_ISBN_BEFORE = re.compile(r"(?i)\bISBN(?:-1[03])?:?[ \t]*$")
_OCTET = re.compile(r"0|[1-9]\d{0,2}")
_NOT_DIGIT = re.compile(r"\D")
_ZIP4 = re.compile(r"\d{5}-\d{4}")
_YEARS = re.compile(r"\(\d\d\) ?(?:1[89]|20)\d\d[ .\-](?:1[89]|20)\d\d")
_DATE = re.compile(r"(\d{1,2})([./\-])(\d{1,2})\2(?:\d{4}|\d{2})(?!\d)")
PHONE_SEPARATORS = " .-/\u2013"

#: IBAN length per country (ISO 13616 registry: SEPA and the other common countries)
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}

#: card brands: (IIN ranges as (low, high) over the first len(low) digits, lengths issued)
CARD_BRANDS = (
    ((("4", "4"),), (13, 16, 19)),                                            # Visa
    ((("51", "55"), ("2221", "2720")), (16,)),                                # Mastercard
    ((("34", "34"), ("37", "37")), (15,)),                                    # Amex
    ((("6011", "6011"), ("644", "649"), ("65", "65")), range(16, 20)),       # Discover
    ((("3528", "3589"),), range(16, 20)),                                     # JCB
    ((("300", "305"), ("36", "36"), ("38", "38")), range(14, 20)),          # Diners
    ((("62", "62"),), range(16, 20)),                                         # UnionPay
)


class PIIParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS),
                              description="the kinds of personal data replaced (email, ip, phone, payment_card, iban)")
    placeholders: dict[Kind, str] = Field(default_factory=lambda: dict(PLACEHOLDERS),
                                          description="the text each kind is replaced with; kinds not given keep "
                                                      "their default (<EMAIL>, <IP>, <PHONE>, <CARD>, <IBAN>)")

    @field_validator("placeholders")
    @classmethod
    def _with_defaults(cls, value: dict[str, str]) -> dict[str, str]:
        return {**PLACEHOLDERS, **value}


# -- validators -------------------------------------------------------------------------------------
def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        total += (d * 2 - 9 if d > 4 else d * 2) if i % 2 else d
    return total % 10 == 0


def card_brand_ok(digits: str) -> bool:
    for ranges, lengths in CARD_BRANDS:
        if len(digits) in lengths and any(lo <= digits[:len(lo)] <= hi for lo, hi in ranges):
            return True
    return False


def iban_ok(compact: str) -> bool:
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _after(m: re.Match, marker: re.Pattern) -> bool:
    """Whether ``marker`` (anchored at its end) matches the few characters before the match."""
    return marker.search(m.string, max(0, m.start() - 12), m.start()) is not None


def _email(m: re.Match) -> Optional[int]:
    return None if m.group().rsplit(".", 1)[1].lower() in FILE_EXTENSIONS else len(m.group())


def _iban(m: re.Match) -> Optional[int]:
    span = m.group()
    want, seen = IBAN_LENGTHS.get(span[:2]), 0
    for i, ch in enumerate(span):
        seen += ch != " "
        if seen == want:   # cut at the country's length, at a group's end
            cut = i + 1
            ok = (cut == len(span) or span[cut] == " ") and iban_ok(span[:cut].replace(" ", ""))
            return cut if ok else None
    return None


def _card(m: re.Match) -> Optional[int]:
    digits = _NOT_DIGIT.sub("", m.group())
    ok = card_brand_ok(digits) and luhn_ok(digits) and not _after(m, _ISBN_BEFORE)
    return len(m.group()) if ok else None


def _ipv4(m: re.Match) -> Optional[int]:
    octets_ok = all(_OCTET.fullmatch(o) and int(o) <= 255 for o in m.group().split("."))
    return len(m.group()) if octets_ok and not _after(m, _VERSION_BEFORE) else None


def _ipv6(m: re.Match) -> Optional[int]:
    span = m.group()
    groups = [g for g in span.split(":") if g]
    ok = (2 <= len(groups) <= 7 and any(ch.isdigit() for ch in span)) if "::" in span else len(groups) == 8
    return len(span) if ok else None


def _phone(m: re.Match) -> Optional[int]:
    span = m.group()
    if (m.group("sep_fr") is None and _is_date(span)) or _after(m, _ISBN_BEFORE):
        return None
    if m.group("paren_area") and _YEARS.fullmatch(span):   # "(12) 2019-2020": a volume and years
        return None
    international = span[0] == "+" or span.startswith("00")
    if not international and _ZIP4.fullmatch(span):
        return None
    lo, hi = (7, 15) if international else (9, 13)
    digits = sum(ch.isdigit() for ch in span) - (2 if span.startswith("00") else 0)
    while digits > hi:     # groups that run on into a following number: cut at a group boundary
        cut = max(span.rfind(ch) for ch in PHONE_SEPARATORS)
        if cut <= 0:
            return None
        digits -= sum(ch.isdigit() for ch in span[cut:])
        span = span[:cut].rstrip(PHONE_SEPARATORS)
    return len(span) if lo <= digits else None


def _is_date(span: str) -> bool:
    """A phone-shaped span that starts with a date (day and month either way round, a 2- or
    4-digit year): ``03/29/06 2005``, ``15.01.2023 14``."""
    d = _DATE.match(span)
    if d is None:
        return False
    a, b = int(d.group(1)), int(d.group(3))
    return 1 <= min(a, b) and ((a <= 31 and b <= 12) or (a <= 12 and b <= 31))


#: named group -> (kind, validator: the match -> how many of its characters are PII, None: none)
VALIDATORS: dict[str, tuple[str, Callable[[re.Match], Optional[int]]]] = {
    "email": ("email", _email), "iban": ("iban", _iban), "card": ("payment_card", _card),
    "ipv4": ("ip", _ipv4), "ipv6": ("ip", _ipv6), "phone": ("phone", _phone)}


def redact(text: str, kinds: Iterable[str] = KINDS, placeholders: Optional[dict[str, str]] = None
           ) -> tuple[str, dict[str, int]]:
    """``text`` with the PII of ``kinds`` replaced, and the number replaced per kind. One pass of
    ``PATTERN``: a match that does not validate is kept and skipped whole (a card failing Luhn is
    not re-read as a phone); the scan resumes right after what was replaced, so the groups a
    replacement left out (an IBAN's or a phone's run-on) are read again."""
    wanted, marks = frozenset(kinds), {**PLACEHOLDERS, **(placeholders or {})}
    found = dict.fromkeys(wanted, 0)
    pieces, pos = [], 0
    while (m := PATTERN.search(text, pos)) is not None:
        kind, validate = VALIDATORS[m.lastgroup]
        cut = validate(m) if kind in wanted else None
        if cut is None:
            pieces.append(text[pos:m.end()])
            pos = m.end()
        else:
            pieces += [text[pos:m.start()], marks[kind]]
            pos = m.start() + cut
            found[kind] += 1
    return ("".join(pieces) + text[pos:] if pos else text), found


@register_stage("pii")
class PIIStage(Modifier):
    name = "pii"
    Params = PIIParams

    def __call__(self, batch: pa.Table) -> pa.Table:
        text = batch["text"]
        text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
        kinds = list(dict.fromkeys(self.params.kinds))
        counts = {k: np.zeros(len(text), dtype=np.int64) for k in [*kinds, CHARS_REPLACED]}
        if kinds:
            text = self._redact(text, kinds, counts)
        batch = set_column(batch, "text", text)
        return set_column(batch, STAGE_COUNTS, counts_column(counts, batch.num_rows))

    def _redact(self, text: pa.Array, kinds: list[str], counts: dict[str, np.ndarray]) -> pa.Array:
        """The prefilter picks the rows, then their lines, that may hold PII (no pattern crosses a
        line break); only those lines go through ``redact``; only rows with a replacement get new
        text (their lines joined again: the others keep their bytes)."""
        rows = np.flatnonzero(_matches(text, PREFILTER))
        if not rows.size:
            return text
        lines = pc.split_pattern(text.take(pa.array(rows, pa.int64())), "\n")
        parent = np.asarray(pc.list_parent_indices(lines), dtype=np.int64)
        flat, changed = self._redact_lines(pc.list_flatten(lines), rows[parent], kinds, counts)
        if not changed.any():
            return text
        joined = pc.binary_join(type(lines).from_arrays(lines.offsets, flat), pa.scalar("\n", flat.type))
        touched = np.zeros(len(rows), dtype=bool)
        touched[parent[changed]] = True
        mask = np.zeros(len(text), dtype=bool)
        mask[rows[touched]] = True
        return pc.replace_with_mask(text, pa.array(mask), joined.filter(pa.array(touched)).cast(text.type))

    def _redact_lines(self, flat: pa.Array, row_of: np.ndarray, kinds: list[str],
                      counts: dict[str, np.ndarray]) -> tuple[pa.Array, np.ndarray]:
        """The lines (``row_of``: each one's row in the batch) with their PII replaced, counted per
        row, and which of them changed."""
        picked = np.flatnonzero(_matches(flat, PREFILTER))
        changed, new_lines = np.zeros(len(flat), dtype=bool), []
        for line, before in zip(picked, flat.take(pa.array(picked, pa.int64())).to_pylist()):
            after, found = redact(before, kinds, self.params.placeholders)
            if any(found.values()):
                changed[line] = True
                new_lines.append(after)
                for kind, n in found.items():
                    counts[kind][row_of[line]] += n
                marks = sum(n * len(self.params.placeholders[k]) for k, n in found.items())
                counts[CHARS_REPLACED][row_of[line]] += len(before) - len(after) + marks
        if new_lines:
            flat = pc.replace_with_mask(flat, pa.array(changed), pa.array(new_lines, flat.type))
        return flat, changed


def _matches(strings: pa.Array, pattern: str) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.match_substring_regex(strings, pattern), False), dtype=bool)
