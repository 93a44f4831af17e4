"""``tokenmill train-quality``: train a quality classifier on positive and negative documents.

``kind: fasttext`` trains the DCLM way: each document one line (newlines as spaces), labels
``__label__hq`` / ``__label__lq``, fastText's supervised defaults with word bigrams
(``wordNgrams 2``; lr 0.1, dim 100, epoch 5, as the C++ tool). A seeded share of each class is held
out; the model is scored on it (ROC AUC, precision and recall at several thresholds). ``kind:
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

from .evaluate import evaluation
from .fasttext_model import EVAL_FILE, INFO_FILE, MODEL_FILE, NEGATIVE, POSITIVE, fasttext_lines, positive_scores

FASTTEXT_DEFAULTS = {"lr": 0.1, "dim": 100, "epoch": 5, "wordNgrams": 2, "minCount": 1, "loss": "softmax"}


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
    fasttext: dict = field(default_factory=dict)
    encoder: Optional[str] = None       # embed: the encoder folder (default: the bundled all-MiniLM-L6-v2)
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
              "trained_on": {"positive": len(pos_train), "negative": len(neg_train)}, "train_seconds": round(seconds, 2)}
    info = {"kind": args.kind, "language": args.language, "text_field": args.text_field, **params,
            "holdout": args.holdout, "seed": args.seed, "inputs": {"positive": args.positive, "negative": args.negative}}
    _write_folder(args.out, files, info, result)
    return result


def _train_fasttext(positive: list[str], negative: list[str], args: TrainArgs):
    """(score function, save function, what quality.json records)."""
    import fasttext_new

    lines = [f"{POSITIVE} {t}" for t in fasttext_lines(pa.array(positive, pa.large_string()))]
    lines += [f"{NEGATIVE} {t}" for t in fasttext_lines(pa.array(negative, pa.large_string()))]
    random.Random(args.seed).shuffle(lines)
    params = {**FASTTEXT_DEFAULTS, **args.fasttext, "seed": args.seed, "thread": args.threads, "verbose": 0}
    with tempfile.TemporaryDirectory(prefix="tokenmill-train-") as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        model = fasttext_new.train_supervised(input=path, **params)
    score = lambda texts: positive_scores(model, pa.array(texts, pa.large_string()), POSITIVE, args.threads)
    save = lambda folder: model.save_model(os.path.join(folder, MODEL_FILE))
    kept = {k: v for k, v in params.items() if k not in ("thread", "verbose")}
    return score, save, {"positive_label": POSITIVE, "negative_label": NEGATIVE, "fasttext": kept}


def _train_embed(positive: list[str], negative: list[str], args: TrainArgs):
    """Embeddings of every document by the encoder, then a logistic head over them."""
    from .embed_model import DEFAULT_MAX_TOKENS, HEAD_FILE, Encoder, fit_logistic, head_scores

    encoder = Encoder(args.encoder, max_tokens=args.max_tokens or DEFAULT_MAX_TOKENS)
    encoder.load_model()
    x = encoder.embed(encoder.tokens(positive + negative))
    w, b = fit_logistic(x, np.r_[np.ones(len(positive)), np.zeros(len(negative))])
    score = lambda texts: head_scores(encoder.embed(encoder.tokens(texts)), w, b)
    save = lambda folder: np.savez(os.path.join(folder, HEAD_FILE), w=w, b=np.float64(b))
    return score, save, {"encoder": args.encoder, "max_tokens": encoder.max_tokens, "dim": int(len(w))}


def _write_folder(out: str, save_model, info: dict, result: dict) -> None:
    """The model file(s), quality.json, eval.json under ``out`` (written locally, then copied)."""
    import fsspec

    with tempfile.TemporaryDirectory(prefix="tokenmill-model-") as tmp:
        save_model(tmp)
        for name, data in ((INFO_FILE, info), (EVAL_FILE, result)):
            with open(os.path.join(tmp, name), "w") as fh:
                json.dump(data, fh, indent=1)
        fs, root = fsspec.core.url_to_fs(out)
        fs.makedirs(root, exist_ok=True)
        names = sorted(os.listdir(tmp), key=lambda n: n == INFO_FILE)   # quality.json last: it marks the folder complete
        for name in names:
            fs.put_file(os.path.join(tmp, name), root.rstrip("/") + "/" + name)
