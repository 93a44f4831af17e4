"""``tokenmill inspect OUT``: example documents from a committed output, for a terminal -- the
rejects of one reason (and language), or the kept documents of one language -- so that a count in
the report ("gopher_quality:min_stop_words 9,812") can be looked at.

    tokenmill inspect OUT                                   # reasons and languages, with counts
    tokenmill inspect OUT --reason gopher_quality:min_stop_words [--language en] [-n 10]
    tokenmill inspect OUT --reason near_duplicate           # every near_duplicate_of:<id>
    tokenmill inspect OUT --kept --language de

Only the files ``_manifest.json`` lists are read (every run's, for an incremental output), one at
a time and only the columns shown, and reading stops once ``-n`` documents were found. A reason
matches a reject's ``reject_stage:reject_reason`` or its reason alone, exactly, as a prefix
ending before a ``:`` or ``_of:`` (``near_duplicate`` matches ``near_duplicate_of:<id>``), or as
its last ``:`` part (``min_stop_words`` matches ``gopher_quality:min_stop_words``).
Documents are taken in file order; ``--chars`` (300) of each text are shown.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokenmill.engine.durable.manifest import MANIFEST, manifest_files
from tokenmill.engine.io.storage import Storage

COLUMNS = ["id", "url", "language", "text", "reject_stage", "reject_reason", "reject_value", "reject_threshold"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="print example documents of an output (rejects of a reason, "
                              "kept ones of a language)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", help="the output folder or URL (output.path of the run)")
    p.add_argument("--reason", help="stage:reason, or a reason (prefix), e.g. min_stop_words, near_duplicate")
    p.add_argument("--language", help="only documents of this language")
    p.add_argument("--kept", action="store_true", help="kept documents (data/) instead of rejects")
    p.add_argument("-n", type=int, default=10, help="documents to print (default 10)")
    p.add_argument("--chars", type=int, default=300, help="characters of each text (default 300)")
    p.set_defaults(func=main)


def _files(store: Storage, folder: str) -> list[str]:
    manifest = store.read_json(store.path(MANIFEST))
    if manifest is None:
        raise FileNotFoundError(f"{store.root}: no {MANIFEST} (not a committed tokenmill output)")
    return [f["path"] for f in manifest_files(store, manifest) if f["path"].startswith(folder + "/")]


def _tables(store: Storage, paths: list[str], columns: list[str]) -> Iterator[pa.Table]:
    for path in paths:
        with store.open(store.path(path), "rb") as fh:
            pf = pq.ParquetFile(fh)
            have = [c for c in columns if c in pf.schema_arrow.names]
            for i in range(pf.num_row_groups):
                yield pf.read_row_group(i, columns=have)


def reason_mask(table: pa.Table, reason: str) -> pa.Array:
    """Rows whose ``stage:reason`` or reason is ``reason`` or starts with it at a boundary."""
    reasons = pc.fill_null(table["reject_reason"], "")
    full = pc.binary_join_element_wise(pc.fill_null(table["reject_stage"], ""), reasons, ":")
    hit = pa.array([False] * table.num_rows)
    for col in (full, reasons):
        exact = pc.equal(col, reason)
        prefixed = pc.or_(pc.starts_with(col, reason + ":"), pc.starts_with(col, reason + "_of:"))
        hit = pc.or_(hit, pc.or_(pc.or_(exact, prefixed), pc.ends_with(col, ":" + reason)))
    return hit


def _selected(table: pa.Table, reason: Optional[str], language: Optional[str]) -> pa.Table:
    if language is not None and "language" in table.column_names:
        table = table.filter(pc.equal(pc.fill_null(table["language"], "und"), language))
    if reason is not None and "reject_reason" in table.column_names:
        table = table.filter(reason_mask(table, reason))
    return table


def examples(output: str, reason: Optional[str] = None, language: Optional[str] = None, kept: bool = False,
             n: int = 10, chars: int = 300) -> list[dict]:
    """Up to ``n`` documents of the output, as dicts (id, url, language, text cut to ``chars``,
    stage and reason for rejects)."""
    store = Storage(output)
    out: list[dict] = []
    for table in _tables(store, _files(store, "data" if kept else "rejects"), COLUMNS):
        table = _selected(table, None if kept else reason, language)
        if table.num_rows:
            table = table.slice(0, n - len(out))
            table = table.set_column(table.column_names.index("text"), "text",
                                     pc.utf8_slice_codeunits(pc.fill_null(table["text"], ""), 0, chars))
            out += table.to_pylist()
        if len(out) >= n:
            break
    return out


def summary(output: str) -> tuple[Counter, Counter]:
    """(rejects per stage:reason, kept documents per language) of the output."""
    store = Storage(output)
    reasons, langs = Counter(), Counter()
    for table in _tables(store, _files(store, "rejects"), ["reject_stage", "reject_reason"]):
        label = pc.binary_join_element_wise(pc.fill_null(table["reject_stage"], ""),
                                            pc.replace_substring_regex(pc.fill_null(table["reject_reason"], ""),
                                                                       r"_of:.*$", ""), ":")
        reasons.update(dict(zip(*[c.to_pylist() for c in pc.value_counts(label).flatten()])))
    for table in _tables(store, _files(store, "data"), ["language"]):
        langs.update(dict(zip(*[c.to_pylist() for c in pc.value_counts(table["language"]).flatten()])))
    return reasons, langs


def _print(rows: list[dict], file=sys.stdout) -> None:
    for r in rows:
        what = f"{r.get('reject_stage')}:{r.get('reject_reason')}" if r.get("reject_stage") else "kept"
        if r.get("reject_value") is not None:   # the failing check's measure against its threshold
            bound = r.get("reject_threshold")
            what += f" ({r['reject_value']:.4g}" + (f" vs {bound:.4g})" if bound is not None else ")")
        print(f"--- {r['id']}  [{r.get('language') or 'und'}]  {what}" + (f"  {r['url']}" if r.get("url") else ""),
              file=file)
        print(" ".join((r.get("text") or "").split()), file=file)


def main(args) -> int:
    try:
        return _main(args)
    except BrokenPipeError:          # `tokenmill inspect OUT | head`
        sys.stderr.close()
        return 0


def _main(args) -> int:
    try:
        if args.reason is None and args.language is None and not args.kept:
            reasons, langs = summary(args.output)
            print("rejects by reason (use --reason):")
            for label, count in reasons.most_common():
                print(f"  {count:>10,}  {label}")
            print("kept documents by language (use --kept --language xx):")
            for lang, count in langs.most_common():
                print(f"  {count:>10,}  {lang}")
            return 0
        rows = examples(args.output, args.reason, args.language, args.kept, args.n, args.chars)
    except FileNotFoundError as e:
        print(f"tokenmill inspect: {e}", file=sys.stderr)
        return 2
    if not rows:
        print("no document matches", file=sys.stderr)
        return 1
    _print(rows)
    return 0
