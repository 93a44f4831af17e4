"""``url_filter``: rejects a document by its ``url``: a blocked domain, a blocked word or substring.

```yaml
- {type: url_filter, block_domains: [lists/adult.txt, s3://lists/spam.txt], block_url_words: [casino],
   allow_domains: [lists/allow.txt]}
```

Keys (every one optional, but at least one block rule must be given):

- ``block_domains``: list files, local (a relative path is read from the config file's folder) or
  URLs (``s3://``, ``gs://``, ``http(s)://``: any fsspec filesystem installed); ``.gz``, ``.bz2``,
  ``.xz`` and ``.zst`` files are decompressed. ``block_domain_names``: the same as a short list written in the config.
- ``allow_domains`` / ``allow_domain_names``: the same formats; a host under an allowed domain is
  never rejected, by any rule (the allowlist wins).
- ``block_url_words``: words matched as *whole tokens* of the lowercased URL, tokens being split on
  anything but ASCII letters and digits (a percent escape such as ``%20`` also splits): ``casino``
  rejects ``https://x.com/best-casino-games``, ``http://casino.example.org/`` and ``/play_casino?``,
  not ``https://x.com/casinos`` nor ``/onlinecasino``. A word may hold separators itself
  (``sex-cam`` matches that token pair).
- ``block_url_substrings``: plain substrings anywhere in the lowercased URL (``casino`` rejects
  ``/casinos`` and ``onlinecasino.com`` too).

**List files**: one entry per line; blank lines and ``#`` comments (a line starting with ``#``, or
``#`` after a space) are skipped. An entry is a domain (``example.com``), a hosts-file line
(``0.0.0.0 example.com`` or ``127.0.0.1 a.com b.com``: every name after the address; the usual
``localhost``/``broadcasthost`` lines are skipped) or a full URL with a scheme
(``https://example.com/page``: its host, so the whole domain is blocked). Entries are lowercased;
a trailing dot and a leading ``*.`` or ``.`` are dropped. Anything else (a ``domain/path`` without
a scheme, adblock syntax, several words) is not a domain and is skipped: point ``block_domains``
at UT1's ``domains`` files, not its ``urls`` files. A file with lines but not one domain among
them (an HTML page, a format not listed here) fails ``setup``.

**Matching**: a listed domain blocks itself and its subdomains, on label boundaries: ``bad.com``
blocks ``bad.com``, ``www.bad.com`` and ``a.b.bad.com``, never ``notbad.com`` nor
``bad.com.evil.org``. The host is read from the URL with its scheme optional (``bad.com/path``),
its user info, port and a trailing dot dropped, in any case; an IP address (``1.2.3.4``,
``[2001:db8::1]``) is matched only whole. A null or empty URL, or one whose host cannot be read
(``not a url``, ``http://``, ``::::``, ``http://x.com:/`` with its empty port, a host with ``%`` or
spaces or over 253 characters) is never rejected by a domain rule; the word and substring rules
still apply to whatever string is there.

**Reasons**: ``url_filter:<list>``, the list being the file's stem (``adult`` for
``lists/adult.txt``, ``spam`` for ``s3://lists/spam.txt``; a file named ``domains``, as UT1 ships
them, takes its folder's name: ``blacklists/gambling/domains`` -> ``gambling``); a stem already
taken gets the list's position (``adult_2`` for ``block_domains[2]``). ``url_filter:domains`` for
``block_domain_names``, ``url_filter:url_words`` and ``url_filter:url_substrings`` for the word
rules. The first rule that matches wins, in this order: the ``block_domains`` files in config
order, ``block_domain_names``, the words, the substrings (a host in two lists takes the first list's
name, even where the second lists a more specific domain).

**Lists**: none ships with tokenmill; download them and point ``block_domains`` at the files:

- the UT1 blacklists of Universite Toulouse Capitole (https://dsi.ut-capitole.fr/blacklists/),
  the lists FineWeb filters with: categories such as ``adult`` (~4M domains), ``gambling``,
  ``phishing``, ``malware``, each a folder with a ``domains`` file;
- The Block List Project (https://blocklistproject.github.io/Lists/): ``porn``, ``scam``,
  ``malware``..., as hosts files or plain domain lists;
- StevenBlack/hosts (https://github.com/StevenBlack/hosts): unified hosts files (ads and malware,
  with optional fakenews, gambling, porn and social extensions).

Check each list's terms of use before you use it.

Each list is read once per worker (``setup``), streamed line by line into a Python set of domain
strings (UT1's 4M-domain adult list: a few hundred MB per worker). A local list that is missing
or unreadable is a config error naming its key (``stages[0].block_domains[1]``); a remote one that
cannot be read fails ``setup`` with its URL. A list's size and stamp are part of the run's
fingerprint: a changed list redoes the run.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Annotated, Optional

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from tokenmill.engine.io.transient import retry
from tokenmill.engine.plan import file_stamp
from tokenmill.engine.schema import mark_rejects
from tokenmill.engine.stage import Stage, register_stage
from tokenmill.stages.cleanup.domain_lists import (
    _HOST_RE2,
    clean_host,
    list_name,
    normalize_domain,
    read_domains,
)

log = logging.getLogger(__name__)

def _re2_literal(s: str) -> str:
    """``s`` as an RE2 literal: every ASCII character but letters and digits escaped as ``\\x{..}``."""
    return "".join(c if (c.isalnum() or ord(c) > 127) else f"\\x{{{ord(c):02x}}}" for c in s)


# -- parameters ----------------------------------------------------------------------------------
def _domain_name(value: str) -> str:
    got = normalize_domain(value)
    if got is None:
        raise ValueError(f"not a domain name: {value!r}")
    return got


_Word = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1)]
_Domain = Annotated[str, AfterValidator(_domain_name)]


class UrlParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    block_domains: list[str] = Field([], description="list files of domains to block (paths or URLs)")
    block_domain_names: list[_Domain] = Field([], description="domains to block, written in the config")
    allow_domains: list[str] = Field([], description="list files of domains never blocked (paths or URLs)")
    allow_domain_names: list[_Domain] = Field([], description="domains never blocked, written in the config")
    block_url_words: list[_Word] = Field([], description="words that block a URL holding them as whole tokens")
    block_url_substrings: list[_Word] = Field([], description="substrings that block a URL holding them")

    @field_validator("block_domains", "allow_domains", "block_domain_names", "allow_domain_names",
                     "block_url_words", "block_url_substrings", mode="before")
    @classmethod
    def _one_is_a_list(cls, value):
        """A single entry may be written without the brackets."""
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _some_rule(self) -> UrlParams:
        if not (self.block_domains or self.block_domain_names or self.block_url_words or self.block_url_substrings):
            raise ValueError("no block rule: give block_domains, block_domain_names, block_url_words "
                             "or block_url_substrings")
        return self


def rule_names(params: UrlParams) -> list[str]:
    """The reason names of the block rules, in the order they are tried: each ``block_domains``
    file, then ``domains`` (inline), ``url_words``, ``url_substrings`` (present ones only)."""
    fixed = [n for n, on in (("domains", params.block_domain_names), ("url_words", params.block_url_words),
                             ("url_substrings", params.block_url_substrings)) if on]
    taken = set(fixed)
    names = []
    for i, path in enumerate(params.block_domains):
        name = list_name(path)
        if name in taken:
            name, k = f"{name}_{i}", i
            while name in taken:
                k += 1
                name = f"{list_name(path)}_{k}"
        taken.add(name)
        names.append(name)
    return names + fixed


#: the per-host code of an allowed host, and of a host no list names
_ALLOWED, _NONE = -2, -1
#: hosts remembered between batches (per worker) before the memory is cleared
_CACHE_MAX = 200_000


@register_stage("url_filter")
class UrlFilter(Stage):
    name = "url_filter"
    Params = UrlParams

    # -- when the config is read ---------------------------------------------------------------
    @classmethod
    def path_params(cls, raw: dict) -> tuple[str, ...]:
        """The list files (``block_domains``, ``allow_domains``): relative ones are read from the
        config file's folder."""
        return ("block_domains", "allow_domains")

    @classmethod
    def check_params(cls, params: UrlParams):
        """Each local list file exists and can be read; each remote one has a filesystem here."""
        import fsspec

        for key in ("block_domains", "allow_domains"):
            for i, path in enumerate(getattr(params, key)):
                if "://" in path:
                    proto = path.split("://", 1)[0]
                    try:
                        fsspec.get_filesystem_class(proto)
                    except (ValueError, ImportError) as e:
                        yield f"{key}[{i}]", f"cannot read {path}: {e}"
                elif not os.path.exists(path):
                    yield f"{key}[{i}]", f"file not found: {path}"
                elif not os.path.isfile(path):
                    yield f"{key}[{i}]", f"not a file: {path}"
                elif not os.access(path, os.R_OK):
                    yield f"{key}[{i}]", f"cannot read: {path}"
        for key, pattern in zip(("block_url_words", "block_url_substrings"), _patterns(params)):
            try:   # thousands of words may pass RE2's memory budget
                if pattern is not None:
                    pc.match_substring_regex(pa.array([""]), pattern)
            except pa.ArrowException as e:
                yield key, f"too many or too long to match at once: {e}"

    def external_state(self, run_id: str) -> list:
        """The list files' sizes and stamps: a changed list redoes the run."""
        return [[p, *file_stamp(p)] for p in [*self.params.block_domains, *self.params.allow_domains]]

    # -- at run time -----------------------------------------------------------------------------
    def setup(self) -> None:
        p = self.params
        names = rule_names(p)
        self.block: list[tuple[str, set[str]]] = []   # (reason, domains), in the order they are tried
        self.skipped: dict[str, int] = {}
        for i, path in enumerate(p.block_domains):
            domains, self.skipped[path] = _load("block_domains", i, path)
            self.block.append((f"url_filter:{names[i]}", domains))
        if p.block_domain_names:
            self.block.append(("url_filter:domains", set(p.block_domain_names)))
        self.allow: set[str] = set(p.allow_domain_names)
        for i, path in enumerate(p.allow_domains):
            domains, self.skipped[path] = _load("allow_domains", i, path)
            self.allow |= domains
        self.words, self.substrings = _patterns(p)
        self.cache: dict[str, int] = {}

    def _code(self, raw: Optional[str]) -> int:
        """``_ALLOWED``, ``_NONE`` or the index in ``self.block`` of the first list naming the host."""
        got = clean_host(raw)
        if got is None:
            return _NONE
        host, is_ip = got
        names = [host] if is_ip else list(_suffixes(host))
        if self.allow and any(n in self.allow for n in names):
            return _ALLOWED
        for k, (_, domains) in enumerate(self.block):
            if any(n in domains for n in names):
                return k
        return _NONE

    def _host_codes(self, hosts: list) -> list[int]:
        cache = self.cache
        if len(cache) > _CACHE_MAX:
            cache.clear()
        out = []
        for h in hosts:
            if len(h) > 255:   # not a host (clean_host): not remembered either
                out.append(_NONE)
                continue
            code = cache.get(h)
            if code is None:
                code = cache[h] = self._code(h)
            out.append(code)
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        urls = batch["url"]
        urls = urls.combine_chunks() if isinstance(urls, pa.ChunkedArray) else urls
        if not pa.types.is_string(urls.type) and not pa.types.is_large_string(urls.type):
            urls = urls.cast(pa.string())
        low = pc.utf8_lower(pc.utf8_trim_whitespace(urls))
        none = pa.scalar(None, pa.string())
        reasons = pa.nulls(len(urls), pa.string())
        allowed = None
        if self.block or self.allow:
            hosts = pc.struct_field(pc.extract_regex(low, _HOST_RE2), "host").dictionary_encode()
            codes = self._host_codes(hosts.dictionary.to_pylist())
            by_host = pa.array([self.block[c][0] if c >= 0 else None for c in codes], pa.string())
            reasons = pc.take(by_host, hosts.indices)
            if self.allow:
                allowed = pc.fill_null(pc.take(pa.array([c == _ALLOWED for c in codes], pa.bool_()), hosts.indices),
                                       False)
        for pattern, reason in ((self.words, "url_filter:url_words"), (self.substrings, "url_filter:url_substrings")):
            if pattern is not None:
                hit = pc.fill_null(pc.match_substring_regex(low, pattern), False)
                reasons = pc.if_else(pc.and_(hit, pc.is_null(reasons)), pa.scalar(reason, pa.string()), reasons)
        if allowed is not None:
            reasons = pc.if_else(allowed, none, reasons)
        return mark_rejects(batch, self.name, reasons)


def _patterns(params: UrlParams) -> tuple[Optional[str], Optional[str]]:
    """The RE2 patterns of the words (each a whole token: between a non-alphanumeric character, a
    percent escape or an end, and a non-alphanumeric character or the end) and of the substrings."""
    words = (r"(?:^|[^a-z0-9]|%[0-9a-f]{2})(?:" + "|".join(_re2_literal(w) for w in params.block_url_words)
             + r")(?:[^a-z0-9]|$)") if params.block_url_words else None
    return words, "|".join(_re2_literal(s) for s in params.block_url_substrings) or None


def _suffixes(host: str) -> Iterator[str]:
    """``a.b.c`` -> ``a.b.c``, ``b.c``, ``c``: the host and every domain above it."""
    yield host
    i = host.find(".")
    while i >= 0:
        yield host[i + 1:]
        i = host.find(".", i + 1)


def _load(key: str, i: int, path: str) -> tuple[set[str], int]:
    """One list file's domains; an unreadable one fails with its key and path."""
    try:
        domains, skipped = retry(read_domains, path)
    except Exception as e:
        raise RuntimeError(f"url_filter: cannot read {key}[{i}] {path}: {type(e).__name__}: {e}") from e
    if skipped and not domains:   # lines, none a domain: not a list (an HTML page, an unknown compression)
        raise RuntimeError(f"url_filter: {key}[{i}] {path}: none of its {skipped} lines is a domain")
    log.info("url_filter: %s: %d domains (%d lines not a domain, skipped)", path, len(domains), skipped)
    return domains, skipped
