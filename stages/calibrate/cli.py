"""``tokenmill calibrate``: the command (registered as a ``tokenmill.commands`` entry point; the work
is ``run.py``)."""
from __future__ import annotations

import sys


def add_parser(sub) -> None:
    c = sub.add_parser("calibrate", help="derive per-language parameter files from clean reference text and a "
                       "web sample", description="Measure the heuristics and langid on clean reference text "
                       "(sentences are joined into documents) and corrupted copies of it, and on a web sample, "
                       "and write OUT/<iso>.yaml for every language with enough text (usable as languages.dir), "
                       "each changed value with a comment saying why, and OUT/calibration.json.")
    c.add_argument("--reference", nargs="+", required=True, help="JSONL or Parquet files of clean text with a "
                   "language field (sentences or documents)")
    c.add_argument("--sample", nargs="+", required=True, help="JSONL or Parquet files of web text (language "
                   "found by langid)")
    c.add_argument("--out", required=True, help="folder to write the language files into")
    c.add_argument("--languages", nargs="+", help="reference languages to calibrate (default: all)")
    c.add_argument("--max-clean-reject", type=float, default=0.03, help="share of clean reference documents the "
                   "heuristics may reject (default 0.03)")
    c.add_argument("--min-docs", type=int, default=10, help="reference documents a language needs (default 10)")
    c.add_argument("--base", help="language files to start from (default: the shipped ones)")
    c.add_argument("--prefer-base", action="store_true", help="keep a base file's values unless they fail on the "
                   "reference (heuristics rejecting more than --max-clean-reject of clean documents, langid more "
                   "than 5%% of clean paragraphs): FineWeb-2's rule never raises its LID threshold; each kept "
                   "value is named in its file and in calibration.json")
    c.add_argument("--text-field", default="text")
    c.add_argument("--lang-field", default="lang")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=calibrate_cmd)


def calibrate_cmd(args) -> int:
    from .run import CalibrateArgs, calibrate

    if not 0 <= args.max_clean_reject < 1:
        print(f"calibrate: --max-clean-reject: expected a share in [0, 1), got {args.max_clean_reject}", file=sys.stderr)
        return 2
    try:
        summary = calibrate(CalibrateArgs(
            reference=args.reference, sample=args.sample, out=args.out, languages=args.languages,
            max_clean_reject=args.max_clean_reject, min_docs=args.min_docs, seed=args.seed,
            text_field=args.text_field, lang_field=args.lang_field, base=args.base, prefer_base=args.prefer_base),
            log=lambda line: print(line, file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as e:
        print(f"calibrate: {e}", file=sys.stderr)
        return 2
    done = sum(row["status"] == "calibrated" for row in summary.values())
    print(f"calibrated {done} languages ({len(summary) - done} with too little text): {args.out}")
    return 0
