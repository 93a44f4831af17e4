"""Domain block lists for ``url_filter``: reading a list file (plain, hosts-file or URL entries;
local, object store or HTTP; compressed or not) into a set of domains, the host of a URL, and a
list's name in reasons. See ``url.py`` for the formats and rules."""
from __future__ import annotations

import io
import ipaddress
import re
from typing import Optional
from urllib.parse import urlsplit

from fsspec.utils import infer_compression

from tokenmill.engine.io.storage import Storage

# -- hosts and list entries ----------------------------------------------------------------------
#: the host of a lowercased, trimmed URL (RE2, for ``pc.extract_regex``): an optional ``scheme://``
#: (or ``//``), optional user info (up to the last ``@``), the host (an IPv6 literal in brackets,
#: or anything up to a port, path, query or fragment), an optional port (digits: so that a
#: malformed ``http://[::1`` is not read as the host ``http`` with an empty port); then the
#: authority must end. A string that is not one (``not a url``, ``::::``) does not match: no host.
_HOST_RE2 = (r"^(?:(?:[a-z][a-z0-9+.\-]*:)?//)?(?:[^/?#\\\s]*@)?"
             r"(?P<host>\[[0-9a-f:.]*\]|[^/?#\\:@\s\[\]]*)(?::[0-9]+)?(?:[/?#\\]|$)")
_HOST_RE = re.compile(_HOST_RE2)
#: a host name: labels of letters (any script), digits, ``-`` and ``_``, separated by single dots
_NAME = re.compile(r"[\w-]+(?:\.[\w-]+)*")
_IPV4 = re.compile(r"[0-9]+(?:\.[0-9]+){3}")
#: the plain domain most list lines are (the fast path of list loading)
_PLAIN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)+")
#: names of a hosts file's own header lines, never blocked
_HOSTS_FILE_NAMES = frozenset({"localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost",
                               "ip6-loopback", "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters",
                               "ip6-allhosts", "0.0.0.0"})
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


def clean_host(host: Optional[str]) -> Optional[tuple[str, bool]]:
    """A host as matched (``[...]`` unbracketed, trailing dots dropped) and whether it is an IP
    address; None for no host or one that is not a host name."""
    if not host:
        return None
    if host[0] == "[":
        inner = host[1:-1]
        return (_ipv6(inner), True) if _is_ipv6(inner) else None
    host = host.rstrip(".")
    if len(host) > 253 or not _NAME.fullmatch(host):   # longer than DNS allows: not a host
        return None
    return host, bool(_IPV4.fullmatch(host))


def url_host(url: str) -> Optional[tuple[str, bool]]:
    """``clean_host`` of a URL's host (the Python twin of the vectorised extraction)."""
    m = _HOST_RE.match(url.strip().lower())
    return clean_host(m.group("host")) if m else None


def normalize_domain(entry: str) -> Optional[str]:
    """A list entry -> the domain it blocks (None: not a domain). ``Example.COM.``, ``*.example.com``,
    ``.example.com``, ``https://user@example.com:8080/page`` -> ``example.com``."""
    s = entry.strip().lower()
    if "://" in s:
        got = url_host(s)
        return got[0] if got else None
    if s.startswith("*."):
        s = s[2:]
    s = s.lstrip(".").rstrip(".")
    if _NAME.fullmatch(s):
        return s
    return _ipv6(s) if _is_ipv6(s) else None


def _is_ipv6(s: str) -> bool:
    if ":" not in s:
        return False
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _ipv6(s: str) -> str:
    """An IPv6 address in its one canonical form (``2001:0DB8:0::1`` -> ``2001:db8::1``)."""
    return str(ipaddress.IPv6Address(s))


def _is_address(token: str) -> bool:
    return bool(_IPV4.fullmatch(token)) or _is_ipv6(token.lower().split("%")[0])


def line_domains(line: str) -> list[str]:
    """The domains one line of a list file names (none for a blank, comment or unreadable line)."""
    s = line.strip()
    if not s or s[0] == "#":
        return []
    low = s.lower()
    if _PLAIN.fullmatch(low):   # the common case: a bare domain
        return [low]
    for mark in (" #", "\t#"):
        cut = s.find(mark)
        if cut >= 0:
            s = s[:cut]
    parts = s.split()
    if not parts:
        return []
    if len(parts) > 1 and _is_address(parts[0]):   # a hosts-file line: every name after the address
        names = [normalize_domain(p) for p in parts[1:]]
        return [n for n in names if n and n not in _HOSTS_FILE_NAMES]
    if len(parts) > 1:
        return []
    got = normalize_domain(parts[0])
    return [got] if got else []


def read_domains(url: str) -> tuple[set[str], int]:
    """The domains of a list file (local path or URL, compressed or not), streamed line by line,
    and the number of non-comment lines skipped as not a domain."""
    store = Storage(url)
    kwargs = {"block_size": 0} if store.protocol in ("http", "https") else {}   # streamed: no range requests
    compression = infer_compression(urlsplit(url).path if "://" in url else url)   # not from a query string
    domains: set[str] = set()
    skipped = 0
    with store.fs.open(store.root, "rb", compression=compression, **kwargs) as raw:
        for line in io.TextIOWrapper(raw, encoding="utf-8", errors="replace"):
            got = line_domains(line)
            if got:
                domains.update(got)
            elif line.strip() and not line.lstrip().startswith("#"):
                skipped += 1
    return domains, skipped


def list_name(path: str) -> str:
    """A list's name in reasons: the file's stem (compression and one extension dropped); a file
    named ``domains`` (UT1's layout, ``<category>/domains``) takes its folder's name."""
    p = urlsplit(path).path if "://" in path else path
    parts = [x for x in re.split(r"[/\\]", p) if x]
    name = parts[-1] if parts else "list"
    for ext in _COMPRESSED:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    if "." in name[1:]:
        name = name.rsplit(".", 1)[0]
    if name.lower() == "domains" and len(parts) > 1:
        name = parts[-2]
    return name or "list"
