"""Listing input: files, folders and globs (local, or any fsspec URL) -> the input files of a run.

Each real file is taken once (a file reached by two paths, a symlink and its target); folders are
walked without following a symlink into a loop (``walk_files``); ``**`` patterns are matched on
that walk, since ``glob`` follows every symlinked folder; FIFOs, sockets and devices are never
opened. What cannot be taken is returned as a problem (the report's ``file_errors``, kind
``input``) and the run goes on.
"""
from __future__ import annotations

import fnmatch
import glob as _glob
import os
import stat
from dataclasses import dataclass, field
from typing import Optional

from tokenmill.engine.io.storage import Storage


@dataclass(frozen=True)
class InputFile:
    path: str     # full path or URL
    source: str   # stable name: path relative to the pattern's base folder
    format: str   # jsonl | parquet | warc | wet
    #: (size, stamp) as the object store's listing gave them (None: asked when needed)
    listed: Optional[tuple] = field(default=None, compare=False)


def stamp_of(info: dict) -> list:
    """(size, modification stamp) from an object store's file info: size and ETag (or time)."""
    stamp = next((info[k] for k in ("ETag", "etag", "LastModified", "mtime", "updated", "created") if info.get(k)), None)
    return [info.get("size"), None if stamp is None else str(stamp)]


def detect_format(path: str) -> Optional[str]:
    name = path.lower()
    if name.endswith((".wet", ".wet.gz")):   # Common Crawl's WET: x.warc.wet.gz
        return "wet"
    for ext in (".gz", ".zst", ".zstd", ".bz2", ".xz"):
        if name.endswith(ext) and not name.endswith(".warc.gz"):
            name = name[: -len(ext)]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".warc", ".warc.gz", ".arc.gz")):
        return "warc"
    return None


def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            return "/".join(parts[:i])
    return os.path.dirname(pattern)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _is_loop(link: str, real: str, top: str) -> bool:
    """Whether a symlinked folder (real path ``real``) holds a folder on its own path from ``top``
    (following it never ends, or re-enters the walk from above)."""
    folder = os.path.dirname(link)
    while True:
        here = os.path.realpath(folder or ".")
        if here == real or here.startswith(real.rstrip(os.sep) + os.sep):
            return True
        if folder in (top, "", os.sep) or os.path.dirname(folder) == folder:
            return False
        folder = os.path.dirname(folder)


def walk_files(top: str, problems: list[tuple[str, str]]) -> list[str]:
    """Every file under folder ``top``, sorted. Each real folder is walked once: the real
    subfolders first, then each symlinked folder whose target was not walked yet (a second link to
    a folder is not followed). A link to a folder that holds it (a loop) is never followed and is
    reported in ``problems``. Symlinks to files are files (``list_input_files`` takes each real
    file once)."""
    walked: set[str] = set()
    files: list[str] = []
    links: list[str] = []
    stack = [top]
    while stack or links:
        if not stack:
            links.sort(reverse=True)
            link = links.pop()
            real = os.path.realpath(link)
            if _is_loop(link, real, top):
                problems.append((link, f"symlink loop: it links back to {real}, which holds it; not followed"))
                continue
            stack.append(link)
        folder = stack.pop()
        real = os.path.realpath(folder or ".")
        if real in walked:
            continue  # a second path to a folder already walked
        walked.add(real)
        try:
            entries = list(os.scandir(folder or "."))
        except OSError as exc:
            problems.append((folder, f"cannot list the folder: {exc}"))
            continue
        for e in entries:
            path = os.path.join(folder, e.name)
            if not _is_dir(e):
                files.append(path)
            else:
                (links if e.is_symlink() else stack).append(path)
    return sorted(files)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _name_matches(name: str, part: str) -> bool:
    """One path component against one glob component; as in ``glob``, a wildcard never matches a
    hidden name (leading ``.``) unless the component starts with ``.`` itself."""
    return not (name.startswith(".") and not part.startswith(".")) and fnmatch.fnmatchcase(name, part)


def _parts_match(parts: list[str], names: list[str]) -> bool:
    """Path components against glob components, where ``**`` stands for any number of folders."""
    if not parts:
        return not names
    if parts[0] == "**":
        return _parts_match(parts[1:], names) or (
            bool(names) and not names[0].startswith(".") and _parts_match(parts, names[1:]))
    return bool(names) and _name_matches(names[0], parts[0]) and _parts_match(parts[1:], names[1:])


def _glob_recursive(pattern: str, problems: list[tuple[str, str]]) -> list[str]:
    """Files that a ``**`` pattern matches, walked with ``walk_files`` (``glob`` follows every
    symlinked folder, into loops too). A file matches when its path, or a folder above it, does
    (a matched folder stands for every file in it)."""
    base = _glob_base(pattern) or ("/" if pattern.startswith("/") else "")
    parts = [p for p in pattern[len(base):].split("/") if p]
    if base and not os.path.isdir(base):
        return []
    out = []
    for path in walk_files(base, problems):
        names = os.path.relpath(path, base or ".").split(os.sep)
        if any(_parts_match(parts, names[:k]) for k in range(len(names) + 1)):
            out.append(path)
    return out


def _expand_local(pattern: str, problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(path, real path) of each file a local file, folder or glob stands for, each folder walked
    by ``walk_files``, each real file once."""
    if "**" in pattern.split("/"):
        return _one_path_per_file(_glob_recursive(pattern, problems))
    matches = sorted(_glob.glob(pattern)) if _is_glob(pattern) else [pattern]
    expanded = []
    for m in matches:
        expanded += walk_files(m, problems) if os.path.isdir(m) else [m]
    return _one_path_per_file(expanded)


def _real_paths(paths: list[str]) -> list[str]:
    """``os.path.realpath`` of each path, each folder resolved once (a folder of many files costs one
    lstat per file, not one per component of each path)."""
    folders: dict[str, str] = {}
    out = []
    for p in paths:
        head, name = os.path.split(os.path.abspath(p))
        if head not in folders:
            folders[head] = os.path.realpath(head)
        joined = os.path.join(folders[head], name)
        out.append(os.path.realpath(joined) if os.path.islink(joined) else joined)
    return out


def _one_path_per_file(paths: list[str]) -> list[tuple[str, str]]:
    """(path, real path) of ``paths`` without a second path to the same real file: a symlink gives
    way to its target when both are listed; otherwise the first path is taken. Hidden files and
    markers are left out first (a link to a hidden file is input as the link)."""
    paths = [p for p in paths if not _hidden(p)]
    reals = _real_paths(paths)
    chosen: dict[str, str] = {}
    for p, real in zip(paths, reals):
        if real not in chosen or (os.path.islink(chosen[real]) and not os.path.islink(p)):
            chosen[real] = p
    out = []
    for p, real in zip(paths, reals):
        if chosen.get(real) == p:
            out.append((p, real))
            del chosen[real]   # the same path twice is taken once
    return out


def _hidden(path: str) -> bool:
    """Hidden files and markers (``.crc``, ``_SUCCESS``) are never input."""
    return os.path.basename(path.rstrip("/")).startswith((".", "_"))


_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_file(path: str) -> Optional[str]:
    """Why a local path is no input file, from ``os.stat`` alone: a FIFO, socket or device (opening
    one could block the task forever); None for a regular file and for a path that cannot be
    stat'ed (a missing file or a dangling symlink is reported by its reader, as ``unreadable_file``)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _SPECIAL if test(mode)), "not a regular file")
    return f"{kind}, not a regular file: skipped, never opened"


def list_input_files(patterns: list[str], fmt: str = "auto") -> tuple[list[InputFile], list[tuple[str, str]]]:
    """Expand files/folders/globs in order; returns (files, [(pattern or path, problem)]).

    Local folders and ``**`` globs never follow a symlink into a loop, and each real folder is
    walked once (``walk_files``); a file reached by two paths is taken once (by its real path).
    FIFOs, sockets and devices are never opened: each is a problem (the report's ``file_errors``,
    kind ``input``). Hidden files and markers (``.x``, ``_SUCCESS``) are never input."""
    files: list[InputFile] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    sources: set[str] = set()
    infos: dict[str, Optional[dict]] = {}
    for pattern in patterns:
        if "://" in pattern:
            st = Storage(pattern)  # asks the store afresh: a cached listing would miss new input
            infos: dict[str, Optional[dict]] = {}
            for m in sorted(st.fs.glob(st.root)):
                infos.update({st.url(p): i for p, i in st.find_info(m).items()} if st.fs.isdir(m) else {st.url(m): None})
            expanded = [(url, url) for url in infos]   # (path, what makes it the same input)
        else:
            expanded = _expand_local(pattern, problems)
        if not expanded:
            problems.append((pattern, "matches no file"))
        base = _glob_base(pattern) if _is_glob(pattern) else (pattern if os.path.isdir(pattern) else os.path.dirname(pattern))
        for path, key in expanded:
            if key in seen or _hidden(path):
                continue
            special = None if "://" in path else special_file(path)
            if special is not None:
                problems.append((path, special))
                seen.add(key)
                continue
            f = fmt if fmt != "auto" else detect_format(path)
            if f is None:
                problems.append((path, "unknown file format (expected .jsonl[.gz|.zst], .parquet, .warc[.gz], .warc.wet[.gz])"))
                continue
            seen.add(key)
            rel = os.path.relpath(path, base) if base and "://" not in path else os.path.basename(path)
            if rel in sources:  # two patterns give the same relative name: the full path keeps row_key unique
                rel = path.split("://", 1)[-1].lstrip("/")
            sources.add(rel)
            info = infos.get(path) if "://" in path else None
            files.append(InputFile(path=path, source=rel, format=f, listed=tuple(stamp_of(info)) if info else None))
    return files, problems
