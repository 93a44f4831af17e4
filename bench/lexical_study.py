"""Where the lexical encoder's fidelity to its teacher comes from, and what limits it.

Trains lexical encoders with train-embedder's recipe (``fit_folder``; defaults of
``EmbedderArgs``) on web_dev + quality_dev, with the same held-out documents as
``tokenmill train-embedder`` (seed 0, 10%), and scores each on them (Spearman of all pairwise
cosines against all-MiniLM-L6-v2):

- **learning curve**: 1/8, 1/4, 1/2 and all of the training documents (nested; each with its own
  passages, token prior, IDF and word block), so one sees how fidelity grows with training text;
- **ceiling**: all training texts plus the held-out documents themselves, so one sees what the
  network can express when it has seen the text (capacity, not generalisation);
- **static bag**: no network, the TF-IDF weighted sum of the prior's token vectors;
- **prior sources** (``--sources``): the token prior (each token's mean output in context) fed
  more text than the network trains on: the held-out documents themselves (a diagnostic: how much
  of the gap is the prior's coverage of the held-out text's tokens), and, as texts the network
  also trains on, passages of the training pages' whole visible text (``raw_text``) and 6,000
  langid_dev sentences (text a user could add);
- **model2vec** (``--model2vec DIR``, e.g. the one ``bench/semantic.py`` distils from MiniLM into
  ``bench/_work/semantic/m2v-minilm-256``): a published static distillation of the same teacher.

    python bench/lexical_study.py [--model2vec bench/_work/semantic/m2v-minilm-256] [--sources] [--out bench/_work/lexical_study.json]

About 6 minutes (13 with ``--sources``) on 2 cores, most of it the teacher. Accuracy only: no timings are taken.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def nested_stages(train_docs: list[str], passages_per_doc: int, seed: int):
    """(fraction, texts of that stage alone) for nested shares of the (shuffled) training documents."""
    from tokenmill.stages.embed.train_embedder import passages

    docs = list(train_docs)
    np.random.default_rng(seed).shuffle(docs)
    done = 0
    for frac in FRACTIONS:
        upto = int(round(frac * len(docs)))
        new = docs[done:upto]
        yield frac, upto, new + passages(new, passages_per_doc, np.random.default_rng(seed + upto))
        done = upto


def scores(folder: str, held: dict, held_target: dict) -> dict:
    from tokenmill.stages.embed.encoders import EncoderSpec
    from tokenmill.stages.embed.lexical import LexicalEncoder
    from tokenmill.stages.embed.train_embedder import pair_fidelity

    student = LexicalEncoder(EncoderSpec(kind="lexical", path=folder))
    student.load_model()
    return {Path(p).name: pair_fidelity(student.embed_texts(t), held_target[p])["spearman"] for p, t in held.items()}


def static_bag(teacher, vectors: np.ndarray, texts: list[str], idf: np.ndarray) -> np.ndarray:
    """TF-IDF (sublinear) weighted sums of token vectors, L2-normalised."""
    out = np.zeros((len(texts), vectors.shape[1]), np.float32)
    for i, ids in enumerate(teacher.tokens(texts)):
        uniq, n = np.unique(np.asarray(ids), return_counts=True)
        out[i] = ((1 + np.log(n)) * idf[uniq]) @ vectors[uniq]
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def main() -> None:
    from tokenmill.stages.embed.train_embedder import (
        DEFAULT_DIM,
        EmbedderArgs,
        alone_vectors,
        fit_folder,
        pair_fidelity,
        prior_layers,
        split_inputs,
        teacher_embed,
        token_sums,
        token_vectors,
    )
    from tokenmill.stages.quality.embed_model import Encoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model2vec", default=None)
    p.add_argument("--sources", action="store_true", help="also the prior-sources study")
    p.add_argument("--out", default="bench/_work/lexical_study.json")
    a = p.parse_args()
    base = EmbedderArgs(dim=DEFAULT_DIM, inputs=[str(DATA / "web_dev.jsonl"), str(DATA / "quality_dev.jsonl")], out="", student="bag")
    train_docs, held = split_inputs(base)
    teacher = Encoder(None, max_tokens=base.teacher_tokens)
    teacher.load_model()
    quiet = lambda *_: None   # noqa: E731
    held_target = {path: teacher.embed(teacher.tokens(texts)) for path, texts in held.items()}
    alone = alone_vectors(teacher)
    sums = token_sums(teacher)
    texts, target, result = [], [], {"held_out_docs": {Path(k).name: len(v) for k, v in held.items()}, "curve": []}
    with tempfile.TemporaryDirectory(prefix="lexical-study-") as tmp:
        for frac, ndocs, new in nested_stages(train_docs, base.passages_per_doc, base.seed):
            texts += new
            target.append(teacher_embed(teacher, new, quiet, token_sums=sums))
            vectors = token_vectors(teacher, *(t.numpy() for t in sums), quiet, alone=alone)
            prior = prior_layers(vectors, base.hidden, base.dim)
            args = EmbedderArgs(dim=DEFAULT_DIM, inputs=base.inputs, out=os.path.join(tmp, f"f{frac}"), student="bag")
            fit_folder(args, teacher, texts, np.concatenate(target), prior, quiet)
            row = {"fraction": frac, "documents": ndocs, "texts": len(texts), **scores(args.out, held, held_target)}
            result["curve"].append(row)
            print(f"curve: {ndocs:,} documents, {len(texts):,} texts: {row}", flush=True)
        from tokenmill.stages.embed.lexical import fit_idf, ngram_counts
        ids = [np.asarray(x, np.int64) for x in teacher.tokens(texts)]
        idf = fit_idf(ngram_counts(ids, (1,), len(vectors)))
        result["static_bag"] = {Path(p).name: pair_fidelity(static_bag(teacher, vectors, t, idf), held_target[p])["spearman"]
                                for p, t in held.items()}
        print(f"static bag (no network): {result['static_bag']}", flush=True)
        seen = [t for ts in held.values() for t in ts]
        args = EmbedderArgs(dim=DEFAULT_DIM, inputs=base.inputs, out=os.path.join(tmp, "ceiling"), student="bag")
        fit_folder(args, teacher, texts + seen, np.concatenate([*target, *held_target.values()]), prior, quiet)
        result["ceiling"] = scores(args.out, held, held_target)
        print(f"ceiling (held-out documents in training): {result['ceiling']}", flush=True)
        if a.sources:
            result["sources"] = prior_sources(teacher, texts, np.concatenate(target), sums, alone, held, held_target, tmp)
    if a.model2vec:
        from model2vec import StaticModel

        m2v = StaticModel.from_pretrained(a.model2vec)
        result["model2vec"] = {Path(p).name: pair_fidelity(_unit(m2v.encode(t)), held_target[p])["spearman"]
                               for p, t in held.items()}
        print(f"model2vec ({a.model2vec}): {result['model2vec']}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))


def prior_sources(teacher, texts, target, sums, alone, held, held_target, tmp) -> dict:
    """Fidelity when the token prior (and, for the extra corpora, the network) sees more text."""
    from tokenmill.stages.embed.train_embedder import (
        DEFAULT_DIM,
        EmbedderArgs,
        fit_folder,
        passages,
        prior_layers,
        teacher_embed,
        token_sums,
        token_vectors,
    )

    quiet = lambda *_: None   # noqa: E731
    seen = {t for ts in held.values() for t in ts}
    pages = _jsonl(DATA / "web_dev.jsonl")
    raw = passages([r["raw_text"] for r in pages if r["text"] not in seen and r.get("raw_text")], 6,
                   np.random.default_rng(1))
    lid = [r["text"] for r in _jsonl(DATA / "langid_dev.jsonl")]
    np.random.default_rng(0).shuffle(lid)
    corpora = {"held": [t for ts in held.values() for t in ts], "raw": raw, "lid": lid[:6000]}
    got = {}
    for name, extra in corpora.items():
        s = token_sums(teacher)
        got[name] = (extra, teacher_embed(teacher, extra, quiet, token_sums=s), s)
    runs = {"prior also sees the held-out documents": (["held"], []),
            "+ passages of the pages' whole visible text": (["raw"], ["raw"]),
            "+ 6,000 langid_dev sentences": (["lid"], ["lid"]),
            "+ both": (["raw", "lid"], ["raw", "lid"])}
    out = {}
    for label, (in_prior, in_network) in runs.items():
        total = [t.numpy().copy() for t in sums]
        for name in in_prior:
            total = [x + y.numpy() for x, y in zip(total, got[name][2])]
        vectors = token_vectors(teacher, *total, quiet, alone=alone)
        args = EmbedderArgs(dim=DEFAULT_DIM, inputs=[], out=os.path.join(tmp, "sources"), student="bag")
        more = [t for name in in_network for t in got[name][0]]
        fit_folder(args, teacher, texts + more, np.concatenate([target, *(got[n][1] for n in in_network)]),
                   prior_layers(vectors, args.hidden, args.dim), quiet)
        out[label] = scores(args.out, held, held_target)
        print(f"sources: {label}: {out[label]}", flush=True)
    return out


def _jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file (lines cut at newlines only: a text may hold U+2028)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


if __name__ == "__main__":
    main()
