"""What in an output folder is this pipeline's, and refusing a folder that holds anything else.

tokenmill writes only its output folders (``data/``, ``rejects/``, a generating stage's
``synthetic/``), ``report.json``/``report.html``, ``_manifest.json`` and its ``_``-folders
(``_work``, ``_lease``, ``_ledger``, ``_index``). A file there is *ours* when the manifest lists
it (or lists it as superseded: a commit killed before it removed it), or when a commit plan under
``_work/`` names it (a commit killed before its manifest). Before any work a run refuses, with
``ForeignOutput`` (exit 2), a folder that holds another kind of run (plain vs incremental),
another pipeline's manifest, or files it did not write — unless told ``force``. Files elsewhere
in the folder are never touched, so they are not looked at; nor are the output folders of an
incremental output its earlier runs committed (a run there replaces only its own killed attempt's
files, which a commit plan names).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from tokenmill.engine.durable.ledger import Ledger
from tokenmill.engine.durable.manifest import MANIFEST, is_sharded
from tokenmill.engine.io.storage import Storage

WORK = "_work"
PLAN = "_commit.json"
#: written in a run's work folder before it writes curated files in place (an object store): names
#: the prefix of its files, so those of a run killed before its commit are known as its own
IN_PLACE = "_in_place.json"
REPORTS = ("report.json", "report.html")
HOW = "give the run another output folder, or pass --force (run_pipeline(force=True)) to let it replace them"

#: the name of a file an incremental run wrote (``ledger.run_prefix``)
RUN_FILE = re.compile(r"part-r\d{6}-")


class ForeignOutput(ValueError):
    """The output folder holds what this run must not replace (exit 2 before any work)."""


@dataclass
class Owned:
    """The output files (relative paths) runs of this pipeline wrote, the folders they are in, and
    what is in those folders now (one listing)."""

    files: set[str] = field(default_factory=set)
    folders: set[str] = field(default_factory=set)
    present: set[str] = field(default_factory=set)

    def replaceable(self, force: bool) -> set[str]:
        """What a commit may remove: the files of ours that are there (all that are, with force)."""
        return set(self.present) if force else self.present & self.files


def owned_files(store: Storage, manifest: dict, folders: tuple[str, ...], listing: bool = True) -> Owned:
    """Files the manifest lists (kept and superseded; of a sharded manifest, every file named by an
    incremental run, ``part-r<n>-``, without reading the parts) and files a commit plan under
    ``_work`` names, files named with the prefix of a run that wrote in place (``IN_PLACE``), and
    every file now in the output folders. Without ``listing`` (a cron run on an output its earlier
    runs committed: it replaces no file but those of its own killed attempt, which its commit plan
    names) the output folders are not listed, however many files they hold: the planned files are
    taken as present."""
    owned = Owned(set(), set(folders))
    for f in [*manifest.get("files", []), *manifest.get("superseded", [])]:
        owned.files.add(f["path"])
    planned: set[str] = set()
    prefixes: list[str] = []
    for path in store.find(store.path(WORK)):
        if path.endswith(f"/{PLAN}"):
            plan = store.read_json(path) or {}
            planned.update(f["path"] for f in plan.get("files", []))
        elif path.endswith(f"/{IN_PLACE}"):
            prefixes.append((store.read_json(path) or {}).get("prefix", ""))
    owned.files |= planned
    if not listing and not prefixes:   # a run that wrote in place was killed: its files are found by listing
        owned.present = set(planned)
        return owned
    owned.folders.update(p.split("/", 1)[0] for p in owned.files if "/" in p)
    owned.folders.update(manifest.get("file_counts", {}))
    for sub in sorted(owned.folders):
        for path in store.find(store.path(sub)):
            rel = f"{sub}/{store.rel(path, store.path(sub))}"
            if ".tmp" not in rel:
                owned.present.add(rel)
    if is_sharded(manifest):   # a sharded (incremental) manifest: every run's files carry its number
        owned.files.update(p for p in owned.present if RUN_FILE.match(p.rsplit("/", 1)[-1]))
    for prefix in filter(None, prefixes):   # written in place by a run of this output
        owned.files.update(p for p in owned.present if p.rsplit("/", 1)[-1].startswith(f"part-{prefix}"))
    return owned


def foreign_files(store: Storage, owned: Owned) -> list[str]:
    """Files in the output folders that no run of this pipeline wrote, and reports not written by
    tokenmill."""
    out = sorted(owned.present - owned.files)
    for name in REPORTS:
        path = store.path(name)
        if store.exists(path) and not _written_by_tokenmill(store, path):
            out.append(name)
    return out


def _written_by_tokenmill(store: Storage, path: str) -> bool:
    """Whether a report is tokenmill's, from its first 64 KiB (the whole report.json only when
    its run's fingerprint, near the top of its sorted keys, is not there)."""
    with store.open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if not path.endswith(".json"):
        return b"tokenmill" in head
    if b'"fingerprint": "' in head:
        return True
    return bool((store.read_json(path) or {}).get("fingerprint"))   # the run's, in every report


def check_output(store: Storage, name: str, incremental: bool, folders: tuple[str, ...],
                 force: bool = False) -> Owned:
    """Refuse (``ForeignOutput``) a folder this run must not write to; what is ours otherwise."""
    manifest = store.read_json(store.path(MANIFEST)) or {}
    ledger = Ledger(store)
    has_ledger = ledger.has_runs() or ledger.pending() is not None
    owned = owned_files(store, manifest, folders, listing=force or not (incremental and has_ledger and manifest))
    if force:
        return owned
    where = store.url(store.root)
    if incremental and manifest and not has_ledger:
        raise ForeignOutput(f"{where} holds the output of a run that was not incremental (a manifest, no "
                            f"ledger); an incremental run would mix its files with it: {HOW}")
    if not incremental and has_ledger:
        raise ForeignOutput(f"{where} holds the output of incremental runs (a ledger in {where}/_ledger); a "
                            f"plain run would replace the files they committed: {HOW}")
    if manifest and manifest.get("name") not in (None, name):
        raise ForeignOutput(f"{where} holds the output of another pipeline ({manifest.get('name')!r}, not "
                            f"{name!r}): {HOW}")
    foreign = foreign_files(store, owned)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ForeignOutput(f"{where} holds {len(foreign)} file(s) tokenmill did not write where it writes "
                            f"its output ({shown}): {HOW}")
    return owned

