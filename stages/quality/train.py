"""``tokenmill train-quality``: train a quality classifier on positive and negative documents.

``kind: fasttext`` trains the DCLM way: each document one line (newlines as spaces), labels
``__label__hq`` / ``__label__lq``, dim 100. A seeded share of each class is held out; the model
is scored on it (ROC AUC, precision and recall at several thresholds). The classes are balanced
(the smaller one repeated), and the settings not given are chosen from the data: each candidate
of ``SEARCH`` (epochs and learning rate, word n-grams 1 or 2) is trained on 80% of the training
split and scored on the rest, and the best is trained on the whole split. fastText's own defaults
(epoch 5, lr 0.1) give a classifier no better than chance on a few hundred long documents (ROC AUC
0.55 on quality_dev.jsonl). A model whose held-out ROC AUC is below ``MIN_AUC`` is weak: the
command stops (exit 1) unless told to allow it. ``kind:
embed`` embeds every document with a sentence encoder (``embed_model``) and fits a logistic head.
The folder gets ``model.bin`` or ``head.npz``, ``quality.json`` (what the stages read) and
``eval.json``. Inputs are JSONL or
Parquet, local or object-store paths.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa

from .evaluate import evaluation, roc_auc
from .fasttext_model import EVAL_FILE, INFO_FILE, MODEL_FILE, NEGATIVE, POSITIVE, fasttext_lines, positive_scores

FASTTEXT_DEFAULTS = {"lr": 0.1, "dim": 100, "epoch": 5, "wordNgrams": 2, "minCount": 1, "loss": "softmax"}
#: settings tried when not given: (epoch, lr) pairs, each with word n-grams 1 and 2
SEARCH = {"epoch_lr": ((5, 0.1), (25, 0.5)), "wordNgrams": (1, 2)}
#: the embedding head's L2 regularisation tried when searching
L2_SEARCH = (1e-3, 1e-2, 1e-1, 1.0)
#: held-out ROC AUC below which a model is weak (train-quality exits 1 unless --allow-weak)
MIN_AUC = 0.75


@dataclass
class TrainArgs:
    positive: list[str]
    negative: list[str]
    out: str
    kind: str = "fasttext"
    language: Optional[str] = None
    text_field: str = "text"
    holdout: float = 0.1
    seed: int = 0
    threads: int = 1
    fasttext: dict = field(default_factory=dict)   # settings given; those of SEARCH not given are searched
    search: bool = True                 # choose the settings not given from the data
    balance: bool = True                # repeat the smaller class to the size of the larger
    allow_weak: bool = False            # write a model whose held-out ROC AUC is below MIN_AUC
    encoder: Optional[str] = None       # embed: the encoder folder (default: the bundled all-MiniLM-L6-v2)
    encoder_kind: Optional[str] = None  # embed: minilm | lexical | hf (default: hf with a folder, else minilm)
    max_tokens: Optional[int] = None    # embed: tokens of each document the encoder sees


def read_texts(paths: list[str], text_field: str) -> list[str]:
    """The ``text_field`` of every record of JSONL or Parquet files (local or URLs); records
    without a string there are skipped and counted in the error message only when none is left."""
    import fsspec
    import pyarrow.parquet as pq

    texts: list[str] = []
    for path in paths:
        with fsspec.open(path, "rb", compression="infer") as fh:
            if path.endswith(".parquet"):
                table = pq.read_table(fh, columns=[text_field])
                texts += [t for t in table[text_field].to_pylist() if isinstance(t, str) and t.strip()]
                continue
            for line in fh:
                try:
                    value = json.loads(line).get(text_field)
                except (ValueError, AttributeError):
                    continue
                if isinstance(value, str) and value.strip():
                    texts.append(value)
    if not texts:
        raise ValueError(f"no documents with a non-empty {text_field!r} in {', '.join(paths)}")
    return texts


def split(texts: list[str], holdout: float, rng: random.Random) -> tuple[list[str], list[str]]:
    """(train, held out): a shuffled ``holdout`` share (at least one document) is held out."""
    texts = list(texts)
    rng.shuffle(texts)
    n = max(1, int(round(len(texts) * holdout)))
    return texts[n:], texts[:n]


def train(args: TrainArgs) -> dict:
    """Train, evaluate, write the folder; returns the evaluation."""
    if args.kind not in ("fasttext", "embed"):
        raise ValueError(f"kind {args.kind!r}: expected fasttext or embed")
    rng = random.Random(args.seed)
    pos_train, pos_test = split(read_texts(args.positive, args.text_field), args.holdout, rng)
    neg_train, neg_test = split(read_texts(args.negative, args.text_field), args.holdout, rng)
    t0 = time.perf_counter()
    trainer = _train_fasttext if args.kind == "fasttext" else _train_embed
    score, files, params = trainer(pos_train, neg_train, args)
    seconds = time.perf_counter() - t0
    labels = np.r_[np.ones(len(pos_test), bool), np.zeros(len(neg_test), bool)]
    result = {**evaluation(labels, score(pos_test + neg_test)),
              "trained_on": {"positive": len(pos_train), "negative": len(neg_train)}, "train_seconds": round(seconds, 2),
              **({"search": params.pop("search")} if "search" in params else {})}
    result["weak"] = result["roc_auc"] < MIN_AUC
    info = {"kind": args.kind, "language": args.language, "text_field": args.text_field, **params,
            "holdout": args.holdout, "seed": args.seed, "inputs": {"positive": args.positive, "negative": args.negative}}
    # a weak model gets eval.json only: no quality.json, so no stage can load it by mistake
    _write_folder(args.out, files, info, result, model=not result["weak"] or args.allow_weak)
    return result


def _train_fasttext(positive: list[str], negative: list[str], args: TrainArgs):
    """(score function, save function, what quality.json records, with the search's scores)."""
    given = {**FASTTEXT_DEFAULTS, **args.fasttext} if not args.search else dict(args.fasttext)
    tried = []
    if args.search and not {"epoch", "lr", "wordNgrams"} <= set(given):
        rng = random.Random(args.seed + 1)
        fit_pos, val_pos = split(positive, 0.2, rng)
        fit_neg, val_neg = split(negative, 0.2, rng)
        labels = np.r_[np.ones(len(val_pos), bool), np.zeros(len(val_neg), bool)]
        for candidate in _candidates(given):
            model = _fit(fit_pos, fit_neg, {**FASTTEXT_DEFAULTS, **candidate}, args)
            auc = roc_auc(labels, positive_scores(model, pa.array(val_pos + val_neg, pa.large_string()), POSITIVE,
                                                  args.threads))
            tried.append({**{k: candidate[k] for k in ("epoch", "lr", "wordNgrams")}, "validation_roc_auc": round(auc, 4)})
        best = max(tried, key=lambda t: (t["validation_roc_auc"], -t["epoch"]))
        given = {**given, **{k: best[k] for k in ("epoch", "lr", "wordNgrams")}}
    params = {**FASTTEXT_DEFAULTS, **given}
    model = _fit(positive, negative, params, args)
    score = lambda texts: positive_scores(model, pa.array(texts, pa.large_string()), POSITIVE, args.threads)
    save = lambda folder: model.save_model(os.path.join(folder, MODEL_FILE))
    recorded = {**params, "seed": args.seed, "balanced": args.balance}
    out = {"positive_label": POSITIVE, "negative_label": NEGATIVE, "fasttext": recorded}
    return score, save, {**out, "search": tried} if tried else out


def _candidates(given: dict) -> list[dict]:
    """The settings ``SEARCH`` tries, but for those given."""
    out = []
    for epoch, lr in SEARCH["epoch_lr"]:
        for ngrams in SEARCH["wordNgrams"]:
            c = {"epoch": epoch, "lr": lr, "wordNgrams": ngrams, **given}
            if c not in out:
                out.append(c)
    return out


def _fit(positive: list[str], negative: list[str], params: dict, args: TrainArgs):
    """One fastText model on these documents (the smaller class repeated to balance them)."""
    import fasttext_new

    if args.balance and positive and negative:
        positive, negative = _balanced(positive, len(negative)), _balanced(negative, len(positive))
    lines = [f"{POSITIVE} {t}" for t in fasttext_lines(pa.array(positive, pa.large_string()))]
    lines += [f"{NEGATIVE} {t}" for t in fasttext_lines(pa.array(negative, pa.large_string()))]
    random.Random(args.seed).shuffle(lines)
    with tempfile.TemporaryDirectory(prefix="tokenmill-train-") as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        return fasttext_new.train_supervised(input=path, **params, seed=args.seed, thread=args.threads, verbose=0)


def _balanced(texts: list[str], other: int) -> list[str]:
    """``texts`` repeated (whole copies, then a prefix) to ``other`` documents when it has fewer."""
    if len(texts) >= other:
        return texts
    return texts * (other // len(texts)) + texts[:other % len(texts)]


def _train_embed(positive: list[str], negative: list[str], args: TrainArgs):
    """Embeddings of every document by the encoder, then a logistic head over them."""
    from tokenmill.stages.embed.encoders import make_encoder

    from .embed_model import HEAD_FILE, fit_logistic, head_scores

    spec = encoder_spec(args)
    encoder = make_encoder(spec)
    encoder.load_model()
    x = encoder.embed_texts(positive + negative)
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    weights = _class_weights(y) if args.balance else None
    tried, l2 = [], 1e-2
    if args.search:   # the head's regularisation, on 80% / 20% of the training split
        held = np.random.default_rng(args.seed + 1).random(len(y)) < 0.2
        if held[y == 1].any() and held[y == 0].any():
            for candidate in L2_SEARCH:
                w, b = fit_logistic(x[~held], y[~held], candidate, weights=None if weights is None else weights[~held])
                auc = roc_auc(y[held].astype(bool), head_scores(x[held], w, b))
                tried.append({"l2": candidate, "validation_roc_auc": round(auc, 4)})
            l2 = max(tried, key=lambda t: (t["validation_roc_auc"], t["l2"]))["l2"]
    w, b = fit_logistic(x, y, l2, weights=weights)
    score = lambda texts: head_scores(encoder.embed_texts(texts), w, b)
    save = lambda folder: np.savez(os.path.join(folder, HEAD_FILE), w=w, b=np.float64(b))
    max_tokens = getattr(encoder, "max_tokens", None) or getattr(getattr(encoder, "encoder", None), "max_tokens", None)
    # "encoder" (the folder) as before, for readers of older folders; "encoder_spec": what stages load
    out = {"encoder": args.encoder, "encoder_spec": spec.model_dump(exclude_none=True), "max_tokens": max_tokens,
           "dim": int(len(w)), "l2": l2, "balanced": args.balance}
    return score, save, {**out, "search": tried} if tried else out


def encoder_spec(args: TrainArgs):
    """The ``EncoderSpec`` of ``--encoder-kind`` / ``--encoder`` / ``--max-tokens`` (a folder without a
    kind: hf; neither: the bundled minilm)."""
    from tokenmill.stages.embed.encoders import EncoderSpec

    kind = args.encoder_kind or ("hf" if args.encoder else "minilm")
    return EncoderSpec(kind=kind, path=args.encoder, max_tokens=args.max_tokens)


def _class_weights(y: np.ndarray) -> np.ndarray:
    """Weights that give each class the same total (the mean weight is 1)."""
    pos = max(int(y.sum()), 1)
    neg = max(len(y) - pos, 1)
    return np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * neg))


def _write_folder(out: str, save_model, info: dict, result: dict, model: bool = True) -> None:
    """The model file(s), quality.json, eval.json under ``out`` (written locally, then copied);
    without ``model`` only eval.json."""
    import fsspec

    with tempfile.TemporaryDirectory(prefix="tokenmill-model-") as tmp:
        if model:
            save_model(tmp)
        for name, data in ((INFO_FILE, info), (EVAL_FILE, result)) if model else ((EVAL_FILE, result),):
            with open(os.path.join(tmp, name), "w") as fh:
                json.dump(data, fh, indent=1)
        fs, root = fsspec.core.url_to_fs(out)
        fs.makedirs(root, exist_ok=True)
        names = sorted(os.listdir(tmp), key=lambda n: n == INFO_FILE)   # quality.json last: it marks the folder complete
        for name in names:
            fs.put_file(os.path.join(tmp, name), root.rstrip("/") + "/" + name)
