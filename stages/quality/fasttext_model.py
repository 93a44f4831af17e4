"""A fastText quality classifier: the folder ``train-quality`` writes, the text it sees, its score.

A model folder holds ``model.bin`` (fastText), ``quality.json`` (kind, labels, language, training
arguments) and ``eval.json``. The stages' ``model_path`` takes that folder, or a fastText ``.bin``
by path (then ``positive_label`` names the positive label). Texts are given to fastText the DCLM
way: newlines and tabs become spaces. The score is the probability of the positive label.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa

from ..fasttext_io import local_copy, one_line

MODEL_FILE, INFO_FILE, EVAL_FILE = "model.bin", "quality.json", "eval.json"
POSITIVE, NEGATIVE = "__label__hq", "__label__lq"


@dataclass(frozen=True)
class ModelRef:
    """Where a fastText quality model is and which label is the positive one."""

    path: str          # the .bin (local path or URL)
    positive: str


def resolve(model_path: str, positive_label: Optional[str] = None) -> ModelRef:
    """A folder written by ``train-quality`` (its quality.json names the positive label) or a .bin."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(model_path)
    info_path = root.rstrip("/") + "/" + INFO_FILE
    if fs.isdir(root):
        if not fs.exists(info_path):
            raise FileNotFoundError(f"{model_path} is a folder without {INFO_FILE} (not written by train-quality)")
        info = json.loads(fs.cat_file(info_path))
        if info.get("kind") != "fasttext":
            raise ValueError(f"{model_path} holds a {info.get('kind')!r} model, not a fastText one")
        return ModelRef(_join(model_path, MODEL_FILE), positive_label or info["positive_label"])
    if not fs.exists(root):
        raise FileNotFoundError(f"file not found: {model_path}")
    return ModelRef(model_path, positive_label or POSITIVE)


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def load(ref: ModelRef):
    """The fastText model; a corrupt file or a model without the positive label raises ValueError."""
    import fasttext_new

    try:
        model = fasttext_new.load_model(local_copy(ref.path))
    except (ValueError, OSError) as e:  # fasttext_new: ValueError for a bad magic number or I/O
        raise ValueError(f"cannot load fastText model {ref.path}: {e}") from e
    labels = list(model.get_labels())
    if ref.positive not in labels:
        raise ValueError(f"{ref.path} has no label {ref.positive!r} (labels: {labels[:5]})")
    return model


def fasttext_lines(texts: pa.Array) -> list[str]:
    """Texts as fastText reads them, as Python strings."""
    return one_line(texts).to_pylist()


def positive_scores(model, texts: pa.Array, positive: str, threads: int = 1) -> np.ndarray:
    """Probability of ``positive`` for each text (all labels asked for, so a binary or multi-label
    model gives the real probability, never 1 - the top one)."""
    labels, probs = model.predict_batch(fasttext_lines(texts), k=-1, threads=threads)
    if not labels:
        return np.zeros(0, np.float64)
    is_positive = np.array(labels, dtype=object) == positive   # (documents, labels): k=-1 gives every label
    return np.clip((np.stack(probs).astype(np.float64) * is_positive).sum(axis=1), 0.0, 1.0)
