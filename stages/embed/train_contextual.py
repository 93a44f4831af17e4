"""Training of the ``contextual`` network (``contextual.py``) with torch: train-embedder's default student.

Phase 1 fits every token's output in context: the mean squared error of the network's per-token
prediction against the teacher's output for that token (about 200 targets per text instead of
one document embedding, so what the shared weights learn about context carries over to tokens
the training text rarely shows). Phase 2 fits the documents: train-embedder's in-batch similarity
loss on the pooled, projected rows with the word block appended. The teacher's per-token outputs
are kept in float16 for at most ``max_targets`` tokens (texts beyond it train phase 2 only).
The network starts as the mean of the token prior (its correction ``C`` at zero) and the
projection ``P`` as the dominant directions of the teacher's training embeddings. Phase 2 reads
the ids the encoder will read (the teacher's, cut to ``max_tokens``); phase 1 the teacher's whole
window, whose outputs it fits.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

#: per-token teacher outputs kept for phase 1 (float16: 768 bytes each at 384 dimensions)
MAX_TOKEN_TARGETS = 2_000_000


def teacher_pass(teacher, ids: list[list[int]], sums, log: Callable, max_targets: int = MAX_TOKEN_TARGETS,
                 seed: int = 0, batch: int = 64):
    """(normalised mean-pooled embeddings, per-token outputs in float16 or None per text): the
    teacher over ``ids``, its outputs also added to ``sums`` (the token prior). A random set of
    texts up to ``max_targets`` tokens keeps its outputs."""
    import torch

    from tokenmill.stages.quality.embed_model import add_token_sums, padded

    lens = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    kept = np.zeros(len(ids), bool)
    kept[order[np.cumsum(lens[order]) <= max_targets]] = True
    emb, outs = np.zeros((len(ids), teacher.dim), np.float32), [None] * len(ids)
    by_len, t0 = np.argsort(lens, kind="stable"), time.perf_counter()
    for s in range(0, len(ids), batch):
        pick = by_len[s:s + batch]
        input_ids, mask = (torch.from_numpy(a).to(teacher.device) for a in padded(ids, pick))
        hidden = teacher.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
        add_token_sums(sums, input_ids, mask, hidden)
        m = mask.unsqueeze(-1).float()
        emb[pick] = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1), dim=1).cpu().numpy()
        for k, i in enumerate(pick):
            if kept[i]:
                outs[i] = hidden[k, :lens[i]].cpu().numpy().astype(np.float16)
        if (s // batch) % 16 == 15 or s + batch >= len(ids):
            log(f"teacher: {min(s + batch, len(ids)):,}/{len(ids):,} texts ({time.perf_counter() - t0:.0f} s)")
    return emb, outs


def projection(target: np.ndarray, dim: int) -> np.ndarray:
    """(teacher dim, dim): the top ``dim`` eigenvectors of the teacher embeddings' second-moment
    matrix (uncentred: their dominant directions; the teacher dim x teacher dim Gram matrix, so its
    cost does not grow with the texts, and ``dim`` orthonormal columns however few texts there are).
    ``dim`` may not exceed the teacher's dimension (``fit_contextual_folder`` refuses it)."""
    if dim > target.shape[1]:
        raise ValueError(f"dim {dim}: the contextual student projects the teacher's {target.shape[1]} dimensions")
    t = target.astype(np.float64)
    _, vectors = np.linalg.eigh(t.T @ t)
    return np.ascontiguousarray(vectors[:, ::-1][:, :dim]).astype(np.float32)


def network(torch, prior: np.ndarray, hidden: int, proj: np.ndarray):
    """The torch module of ``contextual.py``'s formula, started as the prior's mean (projected)."""
    teacher = prior.shape[1]
    table = torch.from_numpy(prior)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(teacher, hidden)
            self.left, self.right, self.mean = (torch.nn.Linear(teacher, hidden, bias=False) for _ in range(3))
            self.c = torch.nn.Linear(hidden, teacher)
            self.p = torch.nn.Parameter(torch.from_numpy(proj.copy()))
            for lin in (self.left, self.right, self.mean, self.c):
                torch.nn.init.zeros_(lin.weight)
            torch.nn.init.zeros_(self.c.bias)

        def tokens(self, ids, mask):
            e = table[ids] * mask[..., None]
            pre = self.a(e) + self.mean(e.sum(1) / mask.sum(1, keepdim=True))[:, None]
            pre = pre + torch.nn.functional.pad(self.left(e), (0, 0, 1, 0))[:, :-1]
            pre = pre + torch.nn.functional.pad(self.right(e), (0, 0, 0, 1))[:, 1:]
            return e + self.c(torch.relu(pre))

        def docs(self, ids, mask):
            pooled = (self.tokens(ids, mask) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            return pooled @ self.p

    return Net()


def padded_batch(torch, ids: list, rows, outs=None):
    """(ids, mask, targets or None) of ``rows``, right-padded."""
    width = max(len(ids[i]) for i in rows)
    t_ids, mask = torch.zeros(len(rows), width, dtype=torch.long), torch.zeros(len(rows), width)
    target = None if outs is None else torch.zeros(len(rows), width, outs[rows[0]].shape[1])
    for k, i in enumerate(rows):
        t_ids[k, :len(ids[i])], mask[k, :len(ids[i])] = torch.as_tensor(ids[i]), 1
        if target is not None:
            target[k, :len(ids[i])] = torch.from_numpy(outs[i].astype(np.float32))
    return t_ids, mask, target


def fit_tokens(torch, net, ids, outs, epochs: int, lr: float, seed: int, log: Callable, batch: int = 64) -> None:
    """Phase 1 (module docstring), on the texts that kept their outputs; constant ``lr``."""
    have = np.array([i for i, o in enumerate(outs) if o is not None], np.int64)
    params = [p for name, p in net.named_parameters() if name != "p"]
    opt, rng, t0 = torch.optim.Adam(params, lr=lr), np.random.default_rng(seed), time.perf_counter()
    for epoch in range(epochs):
        total, order = 0.0, rng.permutation(have)
        for s in range(0, len(order), batch):
            t_ids, mask, target = padded_batch(torch, ids, order[s:s + batch], outs)
            loss = (((net.tokens(t_ids, mask) - target) ** 2).sum(-1) * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(t_ids)
        log(f"tokens: epoch {epoch + 1}/{epochs}, loss {total / max(len(have), 1):.4f} "
            f"({time.perf_counter() - t0:.0f} s)")


def fit_docs(torch, net, ids, target: np.ndarray, words, args, log: Callable) -> None:
    """Phase 2 (module docstring): ``args.epochs`` epochs, Adam at ``args.lr`` with cosine decay;
    ``words``: the fixed word block rows (or None) and their weight."""
    from .train_embedder import sim_loss

    opt, rng, t0 = torch.optim.Adam(net.parameters(), lr=args.lr), np.random.default_rng(args.seed), time.perf_counter()
    teacher = torch.from_numpy(target.astype(np.float32))
    block = None if words is None else torch.from_numpy(np.sqrt(words[1]) * words[0].astype(np.float32))
    steps, done = args.epochs * int(np.ceil(len(ids) / args.batch_size)), 0
    for epoch in range(args.epochs):
        order, total = rng.permutation(len(ids)), 0.0
        for s in range(0, len(order), args.batch_size):
            rows = np.sort(order[s:s + args.batch_size])
            if len(rows) < 2:
                continue
            for g in opt.param_groups:
                g["lr"] = args.lr * 0.5 * (1 + np.cos(np.pi * done / steps))
            t_ids, mask, _ = padded_batch(torch, ids, rows)
            out = net.docs(t_ids, mask)
            if block is not None:
                out = torch.cat([np.sqrt(1 - words[1]) * torch.nn.functional.normalize(out, dim=1), block[rows]], 1)
            loss = sim_loss(out, teacher[rows], torch, args.mse_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, done = total + float(loss.detach()) * len(rows), done + 1
        log(f"documents: epoch {epoch + 1}/{args.epochs}, loss {total / len(ids):.5f} ({time.perf_counter() - t0:.0f} s)")


def arrays_of(net, prior: np.ndarray) -> dict:
    """The trained network as ``contextual.ARRAYS`` (NumPy, float32)."""
    w = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    return {"prior": prior.astype(np.float32), "a_w": w["a.weight"].T.copy(), "a_b": w["a.bias"],
            "left_w": w["left.weight"].T.copy(), "right_w": w["right.weight"].T.copy(),
            "mean_w": w["mean.weight"].T.copy(), "c_w": w["c.weight"].T.copy(), "c_b": w["c.bias"], "p_w": w["p"]}


def cut(ids: np.ndarray, max_tokens: int, specials: tuple[list, list]) -> np.ndarray:
    """The teacher's ids of a text as an encoder reading ``max_tokens`` tokens sees them: its first
    tokens between the same special ones."""
    before, after = specials
    if len(ids) <= max_tokens:
        return ids
    keep = max(1, max_tokens - len(before) - len(after))
    return np.concatenate([ids[:len(before) + keep], ids[len(ids) - len(after):]])


def train(prior: np.ndarray, ids: list, outs: list, target: np.ndarray, words, args, log: Callable,
          specials: tuple[list, list] = ([], [])) -> dict:
    """Both phases; the arrays of the folder (``contextual.ARRAYS``). ``outs`` is emptied after
    phase 1."""
    from .train_embedder import require_torch

    torch = require_torch()
    torch.manual_seed(args.seed)
    with torch.enable_grad():   # the teacher's load_model turns gradients off for the process
        net = network(torch, prior.astype(np.float32), args.hidden, projection(target, args.dim))
        fit_tokens(torch, net, ids, outs, args.token_epochs, args.token_lr, args.seed, log)
        outs.clear()   # the per-token outputs (up to ~1.5 GB) are not needed past phase 1
        fit_docs(torch, net, [cut(x, args.max_tokens, specials) for x in ids], target, words, args, log)
    return arrays_of(net, prior)
