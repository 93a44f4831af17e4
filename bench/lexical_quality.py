"""Quality heads on a lexical encoder vs on all-MiniLM-L6-v2 (issue 25's goal: within 0.01 ROC
AUC), on tasks harder than quality_dev's high/low split, where both encoders reach 1.0.

Each task's documents are embedded by both encoders; a logistic head (train-quality's own
``fit_logistic``, its L2 picked on 20% of each training fold as ``train-quality --kind embed``
does) is scored by ROC AUC over 5 folds (the two versions of one page always in one fold).

- ``quality``: quality_dev, high vs low (the ceiling).
- ``main_vs_page``: web_dev, a page's main text (high) vs its whole visible text (low).
- ``boilerplate``: web_dev, passages of main text (high) vs passages of the lines of the page
  that are not in its main text (menus, footers, ads; low), 200-600 characters each.

    python bench/lexical_quality.py --lexical bench/_work/lexical [MORE_FOLDERS ...] [--folds 5] [--seed 0]

Prints per task and encoder: AUC per fold, mean, and each lexical encoder minus MiniLM (mean, and
its range over folds); the whole table as JSON with ``--json``. An encoder trained without
web_dev (``train-embedder --input quality_dev.jsonl``) shows the web tasks on text it never saw.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
L2_SEARCH = (1e-3, 1e-2, 1e-1, 1.0)


def quality_task() -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in open(DATA / "quality_dev.jsonl", encoding="utf-8")]
    return [r["text"] for r in rows], np.array([r["label"] == "high" for r in rows]), np.arange(len(rows))


def _pages() -> list[dict]:
    rows = [json.loads(line) for line in open(DATA / "web_dev.jsonl", encoding="utf-8")]
    return [r for r in rows if r.get("raw_text") and r["raw_text"].strip() != r["text"].strip()]


def main_vs_page_task() -> tuple[list[str], np.ndarray, np.ndarray]:
    pages = _pages()
    texts = [p["text"] for p in pages] + [p["raw_text"] for p in pages]
    n = len(pages)
    return texts, np.r_[np.ones(n, bool), np.zeros(n, bool)], np.r_[np.arange(n), np.arange(n)]


def _passages(lines: list[str], rng: random.Random, low: int = 200, high: int = 600) -> list[str]:
    """Runs of consecutive lines, each cut where it passes a length drawn in [low, high]."""
    out, cur, goal = [], [], rng.randint(low, high)
    for line in lines:
        cur.append(line)
        if sum(len(x) + 1 for x in cur) >= goal:
            out.append("\n".join(cur)[:high])
            cur, goal = [], rng.randint(low, high)
    if sum(len(x) + 1 for x in cur) >= low:
        out.append("\n".join(cur))
    return out


def boilerplate_task(seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = random.Random(seed)
    texts, labels, groups = [], [], []
    for g, page in enumerate(_pages()):
        main = [x.strip() for x in page["text"].splitlines() if x.strip()]
        kept = set(main)
        rest = [x.strip() for x in page["raw_text"].splitlines() if x.strip() and x.strip() not in kept]
        for label, lines in ((True, main), (False, rest)):
            for passage in _passages(lines, rng):
                texts.append(passage)
                labels.append(label)
                groups.append(g)
    return texts, np.array(labels), np.array(groups)


def folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Test masks of ``k`` folds: groups dealt at random, so both classes of one page share a fold."""
    ids = np.unique(groups)
    order = np.random.default_rng(seed).permutation(ids)
    fold_of = {int(g): i % k for i, g in enumerate(order)}
    which = np.array([fold_of[int(g)] for g in groups])
    return [which == i for i in range(k)]


def head_auc(x: np.ndarray, y: np.ndarray, test: np.ndarray, seed: int) -> float:
    """train-quality's head: L2 picked on 20% of the training fold, refit on all of it."""
    from tokenmill.stages.quality.embed_model import fit_logistic, head_scores
    from tokenmill.stages.quality.evaluate import roc_auc

    xt, yt = x[~test], y[~test].astype(float)
    held = np.random.default_rng(seed + 1).random(len(yt)) < 0.2
    best = (-1.0, 1e-2)
    for l2 in L2_SEARCH:
        w, b = fit_logistic(xt[~held], yt[~held], l2)
        best = max(best, (roc_auc(yt[held].astype(bool), head_scores(xt[held], w, b)), l2))
    w, b = fit_logistic(xt, yt, best[1])
    return float(roc_auc(y[test].astype(bool), head_scores(x[test], w, b)))


def main() -> None:
    from tokenmill.stages.embed.encoders import EncoderSpec, make_encoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lexical", nargs="+", default=["bench/_work/lexical"], help="lexical encoder folders")
    p.add_argument("--tasks", default="quality,main_vs_page,boilerplate")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    a = p.parse_args()
    make = {"quality": quality_task, "main_vs_page": main_vs_page_task, "boilerplate": lambda: boilerplate_task(a.seed)}
    tasks = {t: make[t]() for t in a.tasks.split(",")}
    encoders = {"minilm": EncoderSpec(kind="minilm"),
                **{f"lexical:{Path(f).name}": EncoderSpec(kind="lexical", path=f) for f in a.lexical}}
    table = {}
    for name, spec in encoders.items():
        enc = make_encoder(spec)
        enc.load_model()
        for task, (texts, y, groups) in tasks.items():
            t0 = time.perf_counter()
            x = enc.embed_texts(texts)
            aucs = [head_auc(x, y, test, a.seed) for test in folds(y, np.asarray(groups), a.folds, a.seed)]
            table.setdefault(task, {})[name] = aucs
            print(f"{task:13s} {name:20s} docs {len(texts):5d} (high {int(y.sum())}) embed {time.perf_counter() - t0:6.1f}s "
                  f"AUC per fold {' '.join(f'{v:.4f}' for v in aucs)}  mean {np.mean(aucs):.4f}", flush=True)
    print("\ntask          encoder              AUC     minus MiniLM (mean; folds min..max)")
    for task, row in table.items():
        print(f"{task:13s} {'minilm':20s} {np.mean(row['minilm']):.4f}")
        for name in [n for n in row if n != "minilm"]:
            diff = np.array(row[name]) - np.array(row["minilm"])
            print(f"{task:13s} {name:20s} {np.mean(row[name]):.4f}  {diff.mean():+.4f} ({diff.min():+.4f}..{diff.max():+.4f})")
    if a.json:
        Path(a.json).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
