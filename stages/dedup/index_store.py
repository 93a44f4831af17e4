"""The folders of a dedup index kept across runs, and their compaction.

An index root (``index.write``) holds one folder per run that wrote to it, ``run=<run id>/``, and
compacted generations, ``gen=<level>-<token>/``, each the rows of several earlier folders. A
folder counts only once its ``_SUCCESS`` marker is written (with a new ``committed`` token each
time). A merged folder's marker does not grow with the runs it holds: the folders it merged
(``sources``: name and token of each), the runs it covers by name (``runs``: ranges of run
numbers), their number and ``digest`` (the sum of a hash of each run's name and token), its
``level`` (0 for a run's own folder) and, for band indexes, ``span`` (its node ids are below it).

Compaction keeps the number of folders a run reads logarithmic in the number of runs: whenever
``FANOUT`` folders of one level exist, the oldest of them are merged into one folder of the next
level (and so on up). A merge is crash-safe: the new folder is written, then its marker (the
commit), and only then are the folders it covers removed; readers skip a folder whose runs a
larger committed folder covers, and ignore a folder without a marker, so a killed merge leaves
every run readable exactly once, and the next merge removes its leftovers. A merged folder's rows
keep their run's identity: ``_run`` (the run's position in its ``runs``) and, for band indexes,
node ids shifted past the folders before them, so every indexed document keeps a distinct id.

What a run reads is named by the runs covered (their number and digest), not by folders, so a
merge changes no fingerprint.
Merges run on the executor (``DatasetOps``), like the dedup itself; only the writer of an index
root merges it (under its output's lease).
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tokenmill.engine.global_ops import NODE_BITS, DamagedState
from tokenmill.engine.io.storage import Storage, complete_parquet

DONE = "_SUCCESS"
RUN_COLUMN = "_run"
BUCKET = "_bucket"
#: folders of one level merged into one of the next: at most FANOUT - 1 per level are read
FANOUT = 8
#: bytes of source files per file of a merged folder (a small index merges into one file)
MERGED_FILE_BYTES = 128 << 20
#: folders one run may read at once (their ordinal tags node ids above NODE_BITS)
MAX_FOLDERS = (1 << (63 - NODE_BITS)) - 1


@dataclass
class IndexFolder:
    """One committed folder of an index root: a run's own, or a merged generation."""

    store: Storage   # the index root
    name: str        # run=<id> or gen=<level>-<token>
    marker: dict
    listed: Optional[list[str]] = None   # its Parquet files, from the listing that found it
    bytes: int = 0                       # their size, from that listing
    damage: Optional[str] = None         # a file its marker names that is missing or of another size

    @property
    def token(self) -> str:
        return str(self.marker.get("committed"))

    @property
    def runs(self) -> list[str]:
        """The folder name of each run whose rows it holds, in order (a run's own: itself)."""
        if "runs" in self.marker:
            return expand_runs(self.marker["runs"])
        if "covers" in self.marker:   # a merged folder's marker of the first kind: every run and token
            return [c[0] for c in self.marker["covers"]]
        return [self.name]

    @property
    def count(self) -> int:
        """How many runs it holds."""
        if "count" in self.marker:
            return int(self.marker["count"])
        return len(self.marker["covers"]) if "covers" in self.marker else 1

    @property
    def digest(self) -> int:
        """The sum (mod 2^128) of a hash of each run's name and commit token: a merge keeps it."""
        if "digest" in self.marker:
            return int(self.marker["digest"], 16)
        pairs = self.marker["covers"] if "covers" in self.marker else [(self.name, self.token)]
        return sum(run_hash(n, t) for n, t in pairs) % DIGEST_MOD

    def pairs(self) -> Optional[set[tuple[str, str]]]:
        """(run, token) of each run held, where the marker names them (a run's own folder, a merged
        folder of the first kind); None for a merged folder that names its sources instead."""
        if "covers" in self.marker:
            return {tuple(c) for c in self.marker["covers"]}
        return None if "runs" in self.marker else {(self.name, self.token)}

    @property
    def level(self) -> int:
        return int(self.marker.get("level", 0))

    @property
    def url(self) -> str:
        return self.store.url(self.store.path(self.name))

    def files(self) -> list[str]:
        """URLs of its Parquet files: those its marker names, or for a folder found otherwise than by
        a listing whose marker names none, a new listing's."""
        if self.listed is None:
            named = self.marker.get("files")
            rels = sorted(named) if isinstance(named, dict) else self.store.list_parquet(self.store.path(self.name))
            self.listed = [self.store.path(self.name, rel) for rel in rels]
        return [self.store.url(p) for p in self.listed]


DIGEST_MOD = 1 << 128
_RUN_NUMBER = re.compile(r"run=r(\d{6})")


def run_hash(name: str, token: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{name}\0{token}".encode()).digest()[:16], "big")


def compress_runs(names: list[str]) -> list:
    """Run folder names, consecutive numbered ones (``run=r000001``...) as ``[first, last]``."""
    out: list = []
    for name in names:
        m = _RUN_NUMBER.fullmatch(name)
        n = int(m.group(1)) if m else None
        if n is not None and out and isinstance(out[-1], list) and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n] if n is not None else name)
    return out


def expand_runs(runs: list) -> list[str]:
    """The names ``compress_runs`` gave, in order."""
    out: list[str] = []
    for item in runs:
        out += [f"run=r{n:06d}" for n in range(item[0], item[1] + 1)] if isinstance(item, list) else [item]
    return out


def run_folder(root: str, run: str) -> str:
    return f"{root.rstrip('/')}/run={run}"


def commit_marker(store: Storage, **extra) -> None:
    """A folder's ``_SUCCESS`` marker: a new token on every commit (readers' fingerprints change),
    and the folder's Parquet files with their sizes (``files``: what readers read, and how a cut or
    lost file is told before any run reads it)."""
    sizes = store.find_sizes(store.root)   # {} for a folder not there
    files = {store.rel(p, store.root): n for p, n in sorted(sizes.items()) if complete_parquet(p)}
    store.write_json_atomic(store.path(DONE), {"committed": uuid.uuid4().hex, "at": time.time(), "files": files,
                                               **extra})


def folders_of(root: str) -> tuple[list[IndexFolder], list[str]]:
    """The committed folders of an index root that hold runs no larger folder holds (oldest first),
    and the names of the rest: uncommitted merges and folders a merge covered (leftovers)."""
    store = Storage(root)
    if not store.exists(store.root):
        return [], []
    by_folder: dict[str, list[str]] = {}
    sizes = store.find_sizes(store.root)   # one listing: the folders and each one's files
    for path in sorted(sizes):
        files = by_folder.setdefault(store.rel(path, store.root).split("/", 1)[0], [])
        if complete_parquet(path):
            files.append(path)
    committed, leftovers = [], []
    for name in sorted(by_folder):
        if not name.startswith(("run=", "gen=")):
            continue
        marker = _marker(store, name)
        if marker is not None:
            committed.append(_committed(store, name, marker, {p: sizes[p] for p in by_folder[name]}))
        elif name.startswith("gen="):
            leftovers.append(name)
    merged_away = {tuple(src) for f in committed for src in f.marker.get("sources", [])}
    live, held = [], set()
    for f in sorted(committed, key=lambda f: (-f.count, f.name)):
        pairs = f.pairs()
        if (f.name, f.token) in merged_away or (pairs is not None and pairs <= held):
            leftovers.append(f.name)   # a committed merge holds it (by name, or every run of it)
        else:
            live.append(f)
            held |= pairs or set()
    return sorted(live, key=lambda f: (float(f.marker.get("first_at", f.marker.get("at", 0))), f.name)), leftovers


def _committed(store: Storage, name: str, marker: dict, sizes: dict[str, int]) -> IndexFolder:
    """A committed folder from the listing's files (``sizes``: path -> bytes): those its marker
    names, where it names them (a file beside them that no commit wrote is not read), with the
    first that is missing or of another size as its ``damage``."""
    named = marker.get("files")
    if not isinstance(named, dict):   # a folder committed before markers named their files
        return IndexFolder(store, name, marker, sorted(sizes), sum(sizes.values()))
    paths = {rel: store.path(name, rel) for rel in named}
    damage = next((f"{rel} is missing" if paths[rel] not in sizes else
                   f"{rel} has {sizes[paths[rel]]:,} bytes where its commit wrote {int(n):,}"
                   for rel, n in sorted(named.items()) if sizes.get(paths[rel]) != int(n)), None)
    present = sorted(p for p in paths.values() if p in sizes)
    return IndexFolder(store, name, marker, present, sum(sizes[p] for p in present), damage)


def require_whole(folders: list[IndexFolder]) -> list[IndexFolder]:
    """``folders``, unless one is damaged: then DamagedState, naming the folder, the file and the
    two ways on (a run reading it would miss documents it must dedup against, silently)."""
    for f in folders:
        if f.damage:
            held = f"its {f.count} runs" if f.count > 1 else "its run"
            raise DamagedState(f"index folder {f.url} is damaged: {f.damage}. Restore the folder, or remove it to "
                               f"drop {held} from the index (later runs then no longer dedup against "
                               "the documents it held)")
    return folders


#: markers of merged folders already read: a merged folder's marker is written once and never changes
_GEN_MARKERS: dict[str, dict] = {}


def _marker(store: Storage, name: str) -> Optional[dict]:
    """A folder's marker (a run's own may be rewritten when the run is; a merged folder's is final)."""
    key = store.url(store.path(name, DONE))
    if key in _GEN_MARKERS:
        return _GEN_MARKERS[key]
    marker = store.read_json(store.path(name, DONE))
    if marker is not None and name.startswith("gen="):
        _GEN_MARKERS[key] = marker
    return marker


def index_folders(paths: list[str], exclude: Optional[str] = None) -> list[IndexFolder]:
    """The folders a run reads under ``paths`` (``exclude``: this run's own id, whose own folder is
    skipped and whose rows are left out of a merged folder that holds them)."""
    found = require_whole([f for root in paths for f in folders_of(root)[0] if f.name != f"run={exclude}"])
    if len(found) > MAX_FOLDERS:
        raise ValueError(f"index.read: {len(found)} index folders; at most {MAX_FOLDERS} can be read at once "
                         "(compaction keeps an index written by tokenmill far below this)")
    return found


def index_state(paths: list[str], exclude: Optional[str] = None) -> list[list]:
    """What the indexes under ``paths`` hold, for the run's fingerprint: per root, the number of
    runs covered and their digest (the run's own folder left out), however they are merged."""
    out = []
    for root in paths:
        folders = require_whole([f for f in folders_of(root)[0] if f.name != f"run={exclude}"])
        if folders:
            out.append([folders[0].store.url(folders[0].store.root), sum(f.count for f in folders),
                        f"{sum(f.digest for f in folders) % DIGEST_MOD:032x}"])
    return sorted(out)


def index_figures(folders: list[IndexFolder], exclude: Optional[str]) -> dict:
    """What a global step reports of the indexes it read: runs covered and folders read."""
    own = sum(1 for f in folders if own_position(f, exclude) is not None)
    return {"indexed_runs": sum(f.count for f in folders) - own, "index_folders": len(folders)}


def own_position(folder: IndexFolder, exclude: Optional[str]) -> Optional[int]:
    """The position in a merged folder's ``runs`` of this run's own rows (None: it has none)."""
    if not folder.name.startswith("gen=") or exclude is None:
        return None
    names = folder.runs
    own = f"run={exclude}"
    return names.index(own) if own in names else None


def without_run(table: pa.Table, position: Optional[int]) -> pa.Table:
    """A merged folder's rows less those of the run at ``position`` (the reading run's own)."""
    if position is None or RUN_COLUMN not in table.column_names:
        return table
    return table.filter(pc.not_equal(table[RUN_COLUMN], position))


# -- compaction ----------------------------------------------------------------------------------
def compact(ops, root: str, exclude: Optional[str] = None, nodes: bool = False,
            say: Callable[[str], None] = lambda _: None) -> dict:
    """Merge ``root``'s folders (all but ``run=<exclude>``) while ``FANOUT`` of one level exist, and
    remove leftovers of earlier merges. ``nodes``: rows carry ``node`` ids to keep distinct (a band
    index). Only the run holding the lease of the output that writes ``root`` merges it:
    ``ops.check()`` is called before every change. Returns figures: folders merged and removed."""
    check = getattr(ops, "check", None) or (lambda: None)
    live, leftovers = folders_of(root)
    store = Storage(root)
    for name in leftovers:
        check()
        store.rm(store.path(name))
    live = require_whole([f for f in live if f.name != f"run={exclude}"])
    merged = 0
    while True:
        group = _next_group(live)
        if group is None:
            break
        spans = [_span(ops, f) if nodes else 0 for f in group]
        if sum(spans) >= 1 << NODE_BITS:   # folders of old layouts whose ids are sparse: left as they are
            say(f"index {root}: {len(group)} folders not merged: their node ids span more than 2^{NODE_BITS}")
            break
        check()
        new = _merge(ops, store, group, spans if nodes else None, check)
        for f in group:
            check()
            store.rm(store.path(f.name))
        live = [f for f in live if f not in group] + [new]
        merged += len(group)
        say(f"index {root}: merged {len(group)} folders into {new.name}")
    return {"index_folders_merged": merged, "index_leftovers_removed": len(leftovers)}


def _next_group(live: list[IndexFolder]) -> Optional[list[IndexFolder]]:
    """The oldest ``FANOUT`` folders of the lowest level that has that many."""
    for level in sorted({f.level for f in live}):
        same = [f for f in live if f.level == level]
        if len(same) >= FANOUT:
            return same[:FANOUT]
    return None


def _merge(ops, store: Storage, group: list[IndexFolder], spans: Optional[list[int]],
           check: Callable[[], None]) -> IndexFolder:
    """One merged folder of ``group``'s rows, committed by its marker (the sources stay until then);
    ``spans``: each source's node id bound (a band index), None for rows without node ids."""
    level = max(f.level for f in group) + 1
    name = f"gen={level}-{uuid.uuid4().hex[:12]}"
    nodes = spans is not None
    node_offsets = np.concatenate([[0], np.cumsum(spans or [0] * len(group))]).astype(np.int64).tolist()
    run_offsets = np.concatenate([[0], np.cumsum([f.count for f in group])]).astype(np.int64).tolist()
    parts = [ops.map(ops.read_parquet(files), shifted, node=node_offsets[i] if nodes else None, run=run_offsets[i])
             for i, f in enumerate(group) if (files := f.files())]
    out = store.path(name)
    if parts:   # one shuffle into one file per MERGED_FILE_BYTES of sources, not one per source file
        files = max(1, -(-sum(f.bytes for f in group) // MERGED_FILE_BYTES))
        keyed = ops.map(ops.union(parts), _with_bucket, files=files)
        ops.write_parquet(ops.partition_map([keyed], BUCKET, _without_bucket), store.url(out))
    store.makedirs(out)
    marker = {"sources": [[f.name, f.token] for f in group], "runs": compress_runs([r for f in group for r in f.runs]),
              "count": sum(f.count for f in group), "digest": f"{sum(f.digest for f in group) % DIGEST_MOD:032x}",
              "level": level, "first_at": min(float(f.marker.get("first_at", f.marker.get("at", 0))) for f in group)}
    if nodes:
        marker["span"] = node_offsets[-1]
    check()
    commit_marker(Storage(store.url(out)), **marker)
    return IndexFolder(store, name, store.read_json(store.path(name, DONE)))


def shifted(table: pa.Table, node: Optional[int], run: int) -> pa.Table:
    """A source folder's rows as a merged folder holds them: ``_run`` moved past the runs before
    it (0 for a run's own folder), ``node`` past the node ids before it; hive columns dropped."""
    n = table.num_rows
    runs = table[RUN_COLUMN].to_numpy(zero_copy_only=False).astype(np.int32) if RUN_COLUMN in table.column_names \
        else np.zeros(n, np.int32)
    table = table.drop_columns([c for c in (RUN_COLUMN, "range") if c in table.column_names])
    if "band" in table.column_names:
        from .band_index import with_sketch  # noqa: PLC0415 (band_index builds on this module)

        table = with_sketch(table)
    if node is not None:
        i = table.column_names.index("node")
        shifted_nodes = table["node"].to_numpy(zero_copy_only=False).astype(np.int64) + np.int64(node)
        table = table.set_column(i, "node", pa.array(shifted_nodes, pa.int64()))
    return table.append_column(RUN_COLUMN, pa.array(runs + np.int32(run), pa.int32()))


def _with_bucket(table: pa.Table, files: int) -> pa.Table:
    """Rows with an int64 that spreads them over ``files`` partitions of a merge: a band index's
    band, a key index's key hash, modulo ``files``."""
    if "band" in table.column_names:
        spread = table["band"].cast(pa.int64())
    else:
        from .key_index import with_key_hash  # noqa: PLC0415 (key_index builds on this module)

        spread = with_key_hash(table, "dedup_key").column(table.num_columns)
    values = spread.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64) % np.uint64(files)
    return table.append_column(BUCKET, pa.array(values.astype(np.int64), pa.int64()))


def _without_bucket(rows: Optional[pa.Table]) -> pa.Table:
    return rows.drop_columns([BUCKET]) if rows is not None else pa.table({})


def _span(ops, folder: IndexFolder) -> int:
    """A folder's node id bound: from its marker, else one more than its largest node id."""
    if folder.marker.get("span") is not None:
        return int(folder.marker["span"])
    files = folder.files()
    if not files:
        return 0
    top = ops.collect(ops.map(ops.read_parquet(files), _max_node))
    return int(pc.max(top["top"]).as_py()) + 1 if top.num_rows else 0


def _max_node(table: pa.Table) -> pa.Table:
    top = pc.max(table["node"]).as_py() if table.num_rows else None
    return pa.table({"top": pa.array([] if top is None else [top], pa.int64())})


def check_writable(root: Optional[str], stage: str = "") -> None:
    """Before any work: an ``index.write`` folder that cannot be written is a config error naming it
    (it was a traceback at the end of the global step, after every document was streamed)."""
    if not root:
        return
    from tokenmill.engine.config import ConfigError

    store = Storage(root)
    probe = store.path(f".write-check-{uuid.uuid4().hex}")
    try:
        store.makedirs(store.root)
        store.write_text_atomic(probe, "")
        store.rm(probe)
    except Exception as e:   # noqa: BLE001 -- the local disk's and the stores' own errors
        key = f"{stage}.index.write" if stage else "index.write"
        raise ConfigError([(key, f"cannot write the index folder {root} ({type(e).__name__}: {e})")]) from e


def warn_missing(read: list[str], write: Optional[str]) -> None:
    """A configured ``index.read`` folder that does not exist (a typo turns cross-run dedup off
    silently otherwise) is named in a warning; the run's own ``index.write`` may not exist yet."""
    for root in read:
        if root != write and not Storage(root).exists(Storage(root).root):
            logging.getLogger("tokenmill").warning(
                f"index.read: {root} does not exist: this run dedups against no earlier run there")


def run_start_state(index, stage: str, run_id: str) -> list[list]:
    """A dedup stage's ``external_state`` for its ``index`` (IndexParams): what the indexes it reads
    hold (``index_state``), after the run-start checks (``check_writable``, ``warn_missing``)."""
    check_writable(index.write, stage)
    warn_missing(index.read, index.write)
    return index_state(index.read, exclude=run_id)
