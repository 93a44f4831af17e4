"""A study for issue 25's fidelity goal: a token-level ("contextual") student against train-embedder's.

train-embedder's student pools first (a TF-IDF bag of token vectors, then its ReLU network), so a
token means the same in every document. The teacher (all-MiniLM-L6-v2) mean-pools its tokens'
outputs *in context*. The student studied here predicts each token's output in context, and the
document is the mean of its predictions, as the teacher's is:

    out_t = prior[x_t] + C relu(A prior[x_t] + L prior[x_t-1] + R prior[x_t+1] + M mean_d(prior) + b)

``prior`` is train-embedder's token prior (each token's mean output in the training texts) and
stays fixed; A, L, R, M, C are shared by all tokens (no parameter per token), so what it learns
about context carries over to tokens the training text rarely shows. Phase 1 fits every token's
output (mean squared error against the teacher's per-token outputs: about 200 targets per text
instead of one); phase 2 fits the documents' in-batch similarities (train-embedder's loss, with
its word block appended). At inference ``A prior``, ``L prior`` and ``R prior`` are tables of the
vocabulary, so a token costs three row lookups of ``hidden`` floats, a ReLU and a sum (NumPy
below); C applies once per document, after the mean.

This is the study that chose the student: its network has no projection (384 dimensions) and its
own NumPy forward; what train-embedder ships is ``stages/embed/contextual.py`` and
``train_contextual.py`` (the same formula, projected to ``--dim``; their figures come from
``tokenmill train-embedder``'s eval.json, bench/README.md).

Same data and split as ``tokenmill train-embedder --input web_dev quality_dev`` (seed 0, 10% held
out); also 400 langid_dev sentences (75 languages) nobody trains on. Prints Spearman of all
pairwise cosines against the teacher, and docs/s on one core of both students on the held-out
web pages (tokenizer included, 256 tokens).

    python bench/lexical_context.py [--hidden 512] [--token-epochs 10] [--doc-epochs 3] [--out bench/_work/lexical_context.json]

About 15 minutes on 2 cores (the teacher over 5,940 texts, then the two phases); peak RSS about
3 GB (the per-token outputs in float16). Nothing else should run meanwhile (the speed figures).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tokenmill.stages.embed import train_contextual
from tokenmill.stages.embed.train_contextual import padded_batch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def teacher_pass(teacher, texts: list[str], sums, batch: int = 64):
    """(normalised mean-pooled embeddings, ids with specials, per-token outputs in float16 of every
    text): train-embedder's pass with no cap on the tokens kept; ``sums`` gathers the token prior."""
    ids = teacher.tokens(texts)
    emb, outs = train_contextual.teacher_pass(teacher, ids, sums, log=lambda _: None,
                                              max_targets=sum(len(x) for x in ids), batch=batch)
    return emb, [np.asarray(x, np.int64) for x in ids], outs


def contextual_net(torch, prior: np.ndarray, hidden: int):
    """train-embedder's network without a projection (held at the identity) and with normalised
    document rows."""
    net = train_contextual.network(torch, prior, hidden, np.eye(prior.shape[1], dtype=np.float32))
    net.p.requires_grad_(False)
    docs = net.docs
    net.docs = lambda ids, mask: torch.nn.functional.normalize(docs(ids, mask), dim=1)
    return net


def fit_tokens(torch, net, ids, outs, epochs: int, lr: float, batch: int = 64, log=print) -> None:
    """Phase 1: mean squared error of every token's predicted output (constant ``lr``)."""
    opt, rng, t0 = torch.optim.Adam(net.parameters(), lr=lr), np.random.default_rng(0), time.perf_counter()
    for epoch in range(epochs):
        total = 0.0
        order = rng.permutation(len(ids))
        for s in range(0, len(ids), batch):
            b = order[s:s + batch]
            t_ids, mask, target = padded_batch(torch, ids, b, outs)
            loss = (((net.tokens(t_ids, mask) - target) ** 2).sum(-1) * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        log(f"tokens: epoch {epoch + 1}/{epochs}, loss {total / len(ids):.3f} ({time.perf_counter() - t0:.0f} s)")


def fit_docs(torch, net, ids, target: np.ndarray, words, word_weight: float, epochs: int, lr: float,
             batch: int = 256, log=print) -> None:
    """Phase 2: train-embedder's in-batch similarity loss on the documents (cosine decay)."""
    from tokenmill.stages.embed.train_embedder import sim_loss

    opt, rng, t0 = torch.optim.Adam(net.parameters(), lr=lr), np.random.default_rng(1), time.perf_counter()
    teacher, words = torch.from_numpy(target), torch.from_numpy(np.sqrt(word_weight) * words)
    steps, done = epochs * int(np.ceil(len(ids) / batch)), 0
    for epoch in range(epochs):
        order = rng.permutation(len(ids))
        for s in range(0, len(ids), batch):
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * done / steps))
            b = np.sort(order[s:s + batch])
            t_ids, mask, _ = padded_batch(torch, ids, b)
            docs = torch.cat([np.sqrt(1 - word_weight) * net.docs(t_ids, mask), words[b]], 1)
            loss = sim_loss(docs, teacher[b], torch, 3.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
        log(f"documents: epoch {epoch + 1}/{epochs} ({time.perf_counter() - t0:.0f} s)")


class NumpyContextual:
    """The trained student without torch: vocabulary tables, one row lookup each per token."""

    def __init__(self, net, prior: np.ndarray, tokenizer, max_tokens: int, words=None):
        w = {k: v.detach().numpy() for k, v in net.state_dict().items()}
        self.prior = prior
        self.a = prior @ w["a.weight"].T + w["a.bias"]
        self.left, self.right = (prior @ w[f"{k}.weight"].T for k in ("left", "right"))
        self.mean = w["mean.weight"].T
        self.c, self.c_b = w["c.weight"].T, w["c.bias"]
        self.tokenizer, self.max_tokens, self.words = tokenizer, max_tokens, words

    def ids(self, texts: list[str]) -> list[np.ndarray]:
        from tokenmill.stages.embed.lexical import CHARS_PER_TOKEN

        encs = self.tokenizer.encode_batch([t[:self.max_tokens * CHARS_PER_TOKEN] for t in texts])
        return [np.asarray(e.ids if len(e.ids) <= self.max_tokens else e.ids[:self.max_tokens - 1] + e.ids[-1:],
                           np.int64) for e in encs]

    def embed_ids(self, ids: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(ids), self.prior.shape[1]), np.float32)
        for i, x in enumerate(ids):
            mean = self.prior[x].mean(0)
            pre = self.a[x] + mean @ self.mean
            pre[1:] += self.left[x[:-1]]
            pre[:-1] += self.right[x[1:]]
            out[i] = mean + np.maximum(pre, 0).mean(0) @ self.c + self.c_b
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = self.embed_ids(self.ids(texts))
        if self.words is None:
            return out
        from tokenmill.stages.embed.word_block import combine

        return combine(out, self.words(texts), 0.2)


def main() -> None:
    import lexical_fidelity
    import torch

    from tokenmill.stages.embed.encoders import EncoderSpec
    from tokenmill.stages.embed.lexical import LexicalEncoder, load_tokenizer
    from tokenmill.stages.embed.train_embedder import (
        DEFAULT_DIM,
        EmbedderArgs,
        alone_vectors,
        fit_folder,
        pair_fidelity,
        passages,
        prior_layers,
        split_inputs,
        token_sums,
        token_vectors,
        word_block_of,
        word_sketches,
    )
    from tokenmill.stages.quality.embed_model import Encoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--token-epochs", type=int, default=10)
    p.add_argument("--doc-epochs", type=int, default=3)
    p.add_argument("--max-docs", type=int, default=None, help="per input (a quick check)")
    p.add_argument("--out", default="bench/_work/lexical_context.json")
    a = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    base = EmbedderArgs(dim=DEFAULT_DIM, inputs=[str(DATA / "web_dev.jsonl"), str(DATA / "quality_dev.jsonl")], out="",
                         max_docs=a.max_docs)
    train_docs, held = split_inputs(base)
    held = {Path(k).name: v for k, v in held.items()}
    held["langid_dev sentences"] = lexical_fidelity.sentences(400, 0)["langid_dev, all languages"]
    texts = train_docs + passages(train_docs, base.passages_per_doc, np.random.default_rng(base.seed))
    teacher = Encoder(None, max_tokens=base.teacher_tokens)
    teacher.load_model()
    quiet, t0 = (lambda *_: None), time.perf_counter()   # noqa: E731
    held_target = {k: teacher.embed(teacher.tokens(v)) for k, v in held.items()}
    sums = token_sums(teacher)
    target, ids, outs = teacher_pass(teacher, texts, sums)
    print(f"teacher: {len(texts):,} texts, {sum(map(len, ids)):,} tokens ({time.perf_counter() - t0:.0f} s)", flush=True)
    prior = token_vectors(teacher, *(t.numpy() for t in sums), quiet, alone=alone_vectors(teacher))
    result = {"texts": len(texts), "held_out": {k: len(v) for k, v in held.items()}}
    with tempfile.TemporaryDirectory(prefix="lexical-context-") as tmp:
        args = EmbedderArgs(dim=DEFAULT_DIM, inputs=base.inputs, out=os.path.join(tmp, "bag"), student="bag")
        fit_folder(args, teacher, texts, target, prior_layers(prior, args.hidden, args.dim), quiet)
        bag = LexicalEncoder(EncoderSpec(kind="lexical", path=args.out))
        bag.load_model()
        result["bag (train-embedder)"] = {k: pair_fidelity(bag.embed_texts(v), held_target[k])["spearman"]
                                          for k, v in held.items()}
        print(f"bag (train-embedder): {result['bag (train-embedder)']}", flush=True)
        tok_path = os.path.join(tmp, "tokenizer.json")
        teacher.tokenizer.backend_tokenizer.save(tok_path)
        tokenizer = load_tokenizer(tok_path)
    net = contextual_net(torch, prior, a.hidden)
    with torch.enable_grad():
        fit_tokens(torch, net, ids, outs, a.token_epochs, 1e-3)
        word_idf = word_block_of(texts, base)
        words = lambda t: word_sketches(t, word_idf, base)   # noqa: E731
        ctx = NumpyContextual(net, prior, tokenizer, base.teacher_tokens)
        result["contextual, tokens only"] = {k: pair_fidelity(ctx.embed_texts(v), held_target[k])["spearman"]
                                             for k, v in held.items()}
        print(f"contextual, phase 1: {result['contextual, tokens only']}", flush=True)
        del outs
        fit_docs(torch, net, ids, target, words(texts).astype(np.float32), base.word_weight, a.doc_epochs, 1e-3)
    ctx = NumpyContextual(net, prior, tokenizer, base.teacher_tokens, words=words)
    result["contextual + word block"] = {k: pair_fidelity(ctx.embed_texts(v), held_target[k])["spearman"]
                                         for k, v in held.items()}
    print(f"contextual, phase 2 (+ word block): {result['contextual + word block']}", flush=True)
    result["docs_per_second_one_core"] = speeds(torch, {"bag": bag, "contextual": ctx}, held["web_dev.jsonl"])
    print(f"docs/s on one core, held-out web pages, 256 tokens: {result['docs_per_second_one_core']}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))


def speeds(torch, encoders: dict, texts: list[str], repeat: int = 20) -> dict:
    """Median docs/s of each encoder over 5 runs of ``repeat`` copies of ``texts``, the process
    pinned to one core."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    many, out = texts * repeat, {}
    with threadpool_limits(1):
        for name, enc in encoders.items():
            runs = []
            for _ in range(5):
                t0 = time.perf_counter()
                enc.embed_texts(many)
                runs.append(len(many) / (time.perf_counter() - t0))
            out[name] = round(float(np.median(runs)), 1)
    return out


if __name__ == "__main__":
    main()
