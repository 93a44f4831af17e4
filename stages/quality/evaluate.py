"""How good a quality classifier is on held-out documents: ROC AUC, and precision and recall of
"score >= t" for several thresholds t. Plain NumPy (no scikit-learn)."""
from __future__ import annotations

import numpy as np

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half): the
    Mann-Whitney U statistic over average ranks."""
    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs positive and negative documents in the held-out split")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):   # one iteration per distinct score
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def at_thresholds(labels: np.ndarray, scores: np.ndarray, thresholds=THRESHOLDS) -> list[dict]:
    """Per threshold: the share kept, precision and recall of keeping ``score >= t``."""
    labels = np.asarray(labels, bool)
    out = []
    for t in thresholds:
        kept = scores >= t
        tp = int((kept & labels).sum())
        out.append({"threshold": t, "kept_fraction": round(float(kept.mean()), 4),
                    "precision": round(tp / int(kept.sum()), 4) if kept.any() else None,
                    "recall": round(tp / int(labels.sum()), 4) if labels.any() else None})
    return out


def evaluation(labels: np.ndarray, scores: np.ndarray) -> dict:
    return {"held_out": int(len(labels)), "positives": int(np.sum(labels)), "roc_auc": round(roc_auc(labels, scores), 4),
            "thresholds": at_thresholds(labels, scores)}
