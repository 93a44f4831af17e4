"""``tokenmill train-embedder``: the command that distils a sentence encoder into a ``lexical`` encoder
(registered as a ``tokenmill.commands`` entry point; the training itself is ``train_embedder.py``)."""
from __future__ import annotations

import os
import sys
import tempfile

from tokenmill.engine.io.storage import in_store
from tokenmill.stages.embed.encoders import encoder_folder_problem

from .train_embedder import MIN_TRAIN_DOCS, STUDENTS


def add_parser(sub) -> None:
    t = sub.add_parser("train-embedder", help="train a lexical-dense text encoder (no torch at inference) from a "
                       "sentence encoder", description="Distil a sentence encoder (default: all-MiniLM-L6-v2, its "
                       "first 256 tokens) into a lexical encoder: TF-IDF over the teacher's tokens and a small ReLU "
                       "network that starts from the teacher's own token vectors and is trained so its cosine "
                       "similarities follow the teacher's. A share of each input is held out and scored (Spearman of pairwise cosine similarities against the teacher, "
                       "documents/s), printed and written to OUT/eval.json. Stages take OUT as encoder: {kind: "
                       "lexical, path: OUT}. Training needs torch (pip install 'tokenmill[embed]').")
    t.add_argument("--input", nargs="+", required=True, help="JSONL or Parquet files of texts (paths or URLs)")
    t.add_argument("--out", required=True, help="encoder folder to write (local path)")
    t.add_argument("--teacher", help="teacher encoder folder (Hugging Face; default: the bundled all-MiniLM-L6-v2)")
    t.add_argument("--student", choices=STUDENTS, default="contextual", help="contextual (default): each token's "
                   "output predicted in context from its neighbours and the document, then averaged, as the teacher "
                   "pools; bag: a TF-IDF bag of token n-grams through a ReLU network (faster, less faithful)")
    t.add_argument("--dim", type=int, help="embedding dimension (default 192, or the teacher's dimensions where "
                   "fewer: the contextual student projects them)")
    t.add_argument("--hidden", type=int, default=512, help="hidden layer width (default 512)")
    t.add_argument("--buckets", type=int, help="bag: feature columns (default: the teacher's vocabulary, one per "
                   "token, + 131072 hashed n-gram columns when --orders goes past 1)")
    t.add_argument("--orders", type=int, nargs="+", default=[1], help="bag: token n-gram orders (default 1: "
                   "bigrams measured worse on a few thousand documents)")
    t.add_argument("--max-tokens", type=int, default=256, help="tokens of each text the encoder sees (default 256)")
    t.add_argument("--text-field", default="text", help="the field holding the text (default text)")
    t.add_argument("--max-docs", type=int, help="documents read from each input at most (default: all)")
    t.add_argument("--passages", type=int, default=6, help="random passages taken from each long training "
                   "document (default 6)")
    t.add_argument("--epochs", type=int, help="training epochs over the documents (default: 10 for bag, 3 for "
                   "contextual, after its per-token epochs)")
    t.add_argument("--token-epochs", type=int, default=10, help="contextual: epochs of its per-token phase "
                   "(default 10)")
    t.add_argument("--batch-size", type=int, default=256, help="texts per training step (default 256)")
    t.add_argument("--lr", type=float, help="Adam learning rate over the documents (default 0.002 for bag, 0.001 "
                   "for contextual; cosine decay)")
    t.add_argument("--seed", type=int, default=0, help="seed of the split, the passages and the network (default 0)")
    t.add_argument("--holdout", type=float, default=0.1, help="share of each input held out (default 0.1)")
    t.add_argument("--word-dim", type=int, default=128, help="columns of the word block, a fixed sketch of each "
                   "text's words appended to the embedding so unrelated pages of a script the teacher's tokenizer "
                   "spells letter by letter stay apart (default 128; 0: none)")
    t.add_argument("--word-weight", type=float, default=0.2, help="the word block's share of the cosine "
                   "(default 0.2)")
    t.add_argument("--no-token-prior", action="store_true", help="bag: start the network at random instead of "
                   "from the teacher's token vectors")
    t.set_defaults(func=train_embedder_cmd)


def train_embedder_cmd(args) -> int:
    from .train_embedder import EmbedderArgs, train_embedder

    problems = argument_problems(args)
    for problem in problems:
        print(f"train-embedder: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:
        result = train_embedder(EmbedderArgs(
            inputs=args.input, out=args.out.removeprefix("file://"), teacher=args.teacher, dim=args.dim,
            hidden=args.hidden, buckets=args.buckets, orders=tuple(args.orders), max_tokens=args.max_tokens,
            text_field=args.text_field, max_docs=args.max_docs, passages_per_doc=args.passages, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, holdout=args.holdout,
            token_prior=not args.no_token_prior, word_dim=args.word_dim, word_weight=args.word_weight,
            student=args.student, token_epochs=args.token_epochs),
            log=lambda line: print(line, file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as e:
        print(f"train-embedder: {e}", file=sys.stderr)
        return 2
    if not result["held_out"]:
        print("no held-out figures: no input had 3 or more documents held out (a larger input or --holdout)")
    for path, row in result["held_out"].items():
        interval = "-".join(map(str, row.get("spearman_95") or [])) or "n/a"
        print(f"held out {path}: {row['docs']} documents, {row['pairs']:,} pairs: Spearman {row['spearman']} "
              f"(95% interval over the documents {interval}; Pearson {row['pearson']}) to the teacher; "
              f"{row['docs_per_second']:,} documents/s on one core")
    print(f"encoder: {args.out} (embedder.json, weights.npz, tokenizer.json, eval.json); trained in "
          f"{result['train_seconds']} s")
    return 0


#: (flag, attribute, least value) of the whole-number flags
_AT_LEAST = (("--dim", "dim", 1), ("--hidden", "hidden", 1), ("--epochs", "epochs", 1), ("--token-epochs", "token_epochs", 0),
             ("--batch-size", "batch_size", 2),
             ("--passages", "passages", 0), ("--max-tokens", "max_tokens", 8), ("--buckets", "buckets", 1))


def argument_problems(args) -> list[str]:
    """What is wrong with the command's arguments, each naming its flag (checked before the
    teacher's minutes); an empty list when nothing is."""
    out = [f"{flag}: expected at least {least}, got {getattr(args, attr)}" for flag, attr, least in _AT_LEAST
           if getattr(args, attr) is not None and getattr(args, attr) < least]
    if not 0 <= args.holdout < 1:
        out.append(f"--holdout: expected a share in [0, 1), got {args.holdout}")
    if args.word_dim < 0 or not 0 < args.word_weight < 1:
        out.append(f"--word-dim must be >= 0 and --word-weight in (0, 1), got {args.word_dim} and {args.word_weight}")
    if args.lr is not None and not args.lr > 0:
        out.append(f"--lr: expected a positive rate, got {args.lr}")
    if not all(1 <= n <= 5 for n in args.orders):
        out.append(f"--orders: expected n-gram orders from 1 to 5, got {args.orders}")
    if args.student == "contextual":
        out += [f"{flag}: applies to --student bag (the contextual student reads the teacher's tokens)"
                for flag, given in (("--orders", args.orders != [1]), ("--buckets", args.buckets is not None),
                                    ("--no-token-prior", args.no_token_prior)) if given]
    if args.max_docs is not None and args.max_docs < MIN_TRAIN_DOCS:
        out.append(f"--max-docs: expected at least {MIN_TRAIN_DOCS}, got {args.max_docs}")
    out += [f"--input: {problem}" for problem in filter(None, map(_input_problem, args.input))]
    if args.teacher:
        problem = (f"expected a local folder, got {args.teacher}" if "://" in args.teacher
                   else encoder_folder_problem("hf", args.teacher))
        out += [f"--teacher: {problem}"] if problem else []
    if in_store(args.out):
        out.append(f"--out must be a local folder, got {args.out}")
    elif not out:
        problem = unwritable(args.out.removeprefix("file://"))
        out += [f"--out: {problem}"] if problem else []
    return out


def _input_problem(path: str) -> str | None:
    """Why a local input cannot be read as a file of texts (a URL is left to its read)."""
    if in_store(path):
        return None
    local = path.removeprefix("file://")
    if os.path.isdir(local):
        return f"{path} is a folder: give its JSONL or Parquet files"
    return None if os.path.isfile(local) else f"{path}: no such file"


def unwritable(out: str) -> str | None:
    """Why the folder ``out`` cannot be written (checked before the teacher's minutes), or None;
    folders made for the check alone are removed again."""
    made, at = [], os.path.abspath(out)
    while not os.path.exists(at):
        made.append(at)
        at = os.path.dirname(at)
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-check-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        return f"cannot write the folder {out} ({e.strerror or e})"
    finally:
        for folder in made:   # deepest first
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
    return None
