"""``tokenmill train-quality``: train a quality classifier on positive and negative documents.

``kind: fasttext`` trains the DCLM way: each document one line (newlines as spaces), labels
``__label__hq`` / ``__label__lq``, fastText's supervised defaults with word bigrams
(``wordNgrams 2``; lr 0.1, dim 100, epoch 5, as the C++ tool). A seeded share of each class is held
out; the model is scored on it (ROC AUC, precision and recall at several thresholds). The folder
gets ``model.bin``, ``quality.json`` (what the stages read) and ``eval.json``. Inputs are JSONL or
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
    if args.kind != "fasttext":
        raise ValueError(f"kind {args.kind!r}: only 'fasttext' is built so far")
    rng = random.Random(args.seed)
    pos_train, pos_test = split(read_texts(args.positive, args.text_field), args.holdout, rng)
    neg_train, neg_test = split(read_texts(args.negative, args.text_field), args.holdout, rng)
    t0 = time.perf_counter()
    model, params = _train_fasttext(pos_train, neg_train, args)
    seconds = time.perf_counter() - t0
    labels = np.r_[np.ones(len(pos_test), bool), np.zeros(len(neg_test), bool)]
    scores = positive_scores(model, pa.array(pos_test + neg_test, pa.large_string()), POSITIVE, args.threads)
    result = {**evaluation(labels, scores), "trained_on": {"positive": len(pos_train), "negative": len(neg_train)},
              "train_seconds": round(seconds, 2)}
    info = {"kind": "fasttext", "positive_label": POSITIVE, "negative_label": NEGATIVE, "language": args.language,
            "text_field": args.text_field, "fasttext": params, "holdout": args.holdout, "seed": args.seed,
            "inputs": {"positive": args.positive, "negative": args.negative}}
    _write_folder(args.out, model, info, result)
    return result


def _train_fasttext(positive: list[str], negative: list[str], args: TrainArgs):
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
    return model, {k: v for k, v in params.items() if k not in ("thread", "verbose")}


def _write_folder(out: str, model, info: dict, result: dict) -> None:
    """model.bin, quality.json, eval.json under ``out`` (written locally, then copied to a URL)."""
    import fsspec

    with tempfile.TemporaryDirectory(prefix="tokenmill-model-") as tmp:
        model.save_model(os.path.join(tmp, MODEL_FILE))
        for name, data in ((INFO_FILE, info), (EVAL_FILE, result)):
            with open(os.path.join(tmp, name), "w") as fh:
                json.dump(data, fh, indent=1)
        fs, root = fsspec.core.url_to_fs(out)
        fs.makedirs(root, exist_ok=True)
        for name in (MODEL_FILE, EVAL_FILE, INFO_FILE):   # quality.json last: it marks the folder complete
            fs.put_file(os.path.join(tmp, name), root.rstrip("/") + "/" + name)
